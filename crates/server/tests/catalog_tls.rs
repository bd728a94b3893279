//! A PostgreSQL catalog reached over TLS (`sslmode=verify-full&sslrootcert=CA`): a real
//! PostgreSQL that takes TCP connections only over TLS, with a certificate from a private CA.
//! Every connection the server makes (catalog, accounts, sessions, lockouts, path locks, audit,
//! the bucket's metadata) is TLS; a certificate from another CA, and a plain URL, are refused
//! with a message that says why.

mod support;

use logarchive_ftp::client::{Client, ClientConfig};
use logarchive_server::pg_harness::Postgres;
use logarchive_server::users::{NewUser, Role};
use std::path::{Path, PathBuf};

/// A CA (its PEM) and, signed by it, a certificate for localhost and 127.0.0.1 and its key.
fn private_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

fn settings(data: &Path, pg: &Postgres, url: &str) -> logarchive_server::config::ServerSettings {
    let mut s = support::settings(data);
    s.catalog.url = Some(url.to_string());
    s.catalog.password_file = Some(pg.password_file());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_over_tls_is_verified_and_every_connection_uses_it() {
    let d = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(d.path(), "ours");
    let (other_ca, _, _) = private_ca(d.path(), "other");
    let pg = Postgres::start_tls(&cert, &key).unwrap();
    let plain = pg.database("tls").unwrap();

    // Without TLS: PostgreSQL refuses, and the server says so at start.
    let e = logarchive_server::start(&settings(&d.path().join("a"), &pg, &plain))
        .await
        .err()
        .expect("a plain connection is refused");
    eprintln!("plain: {e}");
    assert!(e.to_string().contains("no encryption"), "{e}");
    // A certificate this CA did not sign: refused before any password is sent.
    let wrong = format!(
        "{plain}?sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    );
    let e = logarchive_server::start(&settings(&d.path().join("b"), &pg, &wrong))
        .await
        .err()
        .expect("another CA's certificate is refused");
    eprintln!("another CA: {e}");
    assert!(e.to_string().contains("certificate"), "{e}");
    // libpq's `require` verifies here too: without the CA, the system's roots do not know it.
    let unverified = format!("{plain}?sslmode=require");
    let e = logarchive_server::start(&settings(&d.path().join("c"), &pg, &unverified))
        .await
        .err()
        .expect("an unknown issuer is refused under require too");
    assert!(e.to_string().contains("certificate"), "{e}");

    // The right CA, and the archive in a bucket (its metadata in PostgreSQL too).
    let url = format!("{plain}?sslmode=verify-full&sslrootcert={}", ca.display());
    let data = d.path().join("ok");
    std::fs::create_dir_all(&data).unwrap();
    let mut s = settings(&data, &pg, &url);
    support::use_s3(&mut s);
    let server = logarchive_server::start(&s).await.unwrap();
    let users = server.users.clone();
    tokio::task::spawn_blocking(move || {
        users.add(NewUser::with_role("agent01", "agent pw", Role::Agent))
    })
    .await
    .unwrap()
    .unwrap();
    let local = d.path().join("a.log");
    std::fs::write(&local, b"over TLS\n").unwrap();
    let mut c = Client::connect(ClientConfig::new(
        "127.0.0.1",
        server.ftp.local_addr().port(),
        "agent01",
        "agent pw",
    ))
    .await
    .unwrap();
    c.ensure_dir("/Logs").await.unwrap();
    c.upload_verified(&local, "/Logs/a.log", None)
        .await
        .unwrap();
    drop(c);
    let web = support::Web::new(&format!("http://{}", server.web_addr));
    assert_eq!(
        web.login("admin", server.initial_admin_password.as_deref().unwrap())
            .await
            .status(),
        303
    );
    let t = std::time::Instant::now();
    while !web
        .text("/api/v1/browse/agent01/Logs")
        .await
        .1
        .contains("a.log")
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "not listed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Every connection of the server is encrypted (and there are many: the catalog's writer
    // and readers, the listeners, the path locks, the bucket's metadata threads).
    let counts = pg
        .sql_in(
            "tls",
            "SELECT count(*) FILTER (WHERE NOT s.ssl) || ' ' || count(*) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'logarchive'",
        )
        .unwrap();
    let (unencrypted, all) = counts.split_once(' ').unwrap();
    eprintln!("unencrypted and all connections: {counts}");
    assert_eq!(unencrypted, "0", "{counts}");
    assert!(all.parse::<u32>().unwrap() >= 8, "{counts}");
    server.shutdown().await;
}
