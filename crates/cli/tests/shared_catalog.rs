//! Two `logarchive server` processes sharing one data folder and one PostgreSQL catalog, used as
//! an operator would: accounts made with `logarchive user --config server.toml`, `--check`, an
//! agent with both servers in its list; the first server SIGKILLed mid-way. Every file arrives
//! once, whichever server took it, and the other server serves it.

mod support;

use logarchive_server::pg_harness::Postgres;
use std::time::{Duration, Instant};
use support::*;

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_server_processes_share_accounts_and_catalog_through_postgresql() {
    let pg = Postgres::start().unwrap();
    let url = pg.database("logarchive").unwrap();
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "data = \"{}\"\n[catalog]\nurl = \"{url}\"\npassword_file = \"{}\"\n",
            d.path().join("data").display(),
            pg.password_file().display()
        ),
    )
    .unwrap();

    // Accounts straight into PostgreSQL, before any server ran.
    assert_eq!(
        user_add_to(&config, "agent01", "agent-password", "agent"),
        (true, String::new())
    );
    assert!(user_add_to(&config, "viewer", "viewer-password", "viewer").0);
    let (ok, err) = user_add_to(&config, "agent01", "agent-password", "agent");
    assert!(!ok && err.contains("already exists"), "{err}");
    assert_eq!(
        pg.sql_in("logarchive", "SELECT name FROM accounts ORDER BY name")
            .unwrap(),
        "agent01\nviewer"
    );
    // Each addition is in the audit trail every server shows, by the shell's user, via the
    // command line; the refused duplicate is not.
    assert_eq!(
        pg.sql_in(
            "logarchive",
            "SELECT via, action, target, actor <> '' FROM audit ORDER BY id"
        )
        .unwrap(),
        "cli|account.add|agent01|t\ncli|account.add|viewer|t"
    );
    let out = bin()
        .args(["server", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let start = || {
        let mut c = bin();
        c.args(["server", "--config"]).arg(&config).args([
            "--ftp-listen",
            "127.0.0.1:0",
            "--web-listen",
            "127.0.0.1:0",
        ]);
        start_server(c)
    };
    let mut first = start();
    let second = start();
    assert!(
        first.admin_password.is_none() && second.admin_password.is_none(),
        "accounts exist: no first admin is made"
    );

    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("Logs")).unwrap();
    std::fs::write(src.join("Logs/before.log"), "taken by the first\n").unwrap();
    let agent_config = write_agent_config(
        d.path(),
        "agent01",
        "agent-password",
        &[first.ftp.to_string(), second.ftp.to_string()],
        &src,
        "",
    );
    agent_once(&agent_config);
    let auth = base64(b"viewer:viewer-password");
    let listed =
        |web: &str, name: &str| http_get(web, "/api/v1/browse/agent01/Logs", &auth).contains(name);
    wait_for(
        "the second server lists what the first took",
        Duration::from_secs(2),
        || listed(&second.web, "before.log"),
    );

    // The first server dies; the agent goes on through the second, which lists it at once.
    first.child.kill_now();
    std::fs::write(src.join("Logs/after.log"), "taken by the second\n").unwrap();
    agent_once(&agent_config);
    wait_for(
        "the second server lists the new file",
        Duration::from_secs(2),
        || listed(&second.web, "after.log"),
    );
    // Once each, with the SHA-256 of the source.
    let rows = pg
        .sql_in(
            "logarchive",
            "SELECT path || ' ' || coalesce(sha256, '-') FROM files ORDER BY path",
        )
        .unwrap();
    let sha = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };
    assert_eq!(
        rows,
        format!(
            "/agent01/Logs/after.log {}\n/agent01/Logs/before.log {}",
            sha(b"taken by the second\n"),
            sha(b"taken by the first\n")
        )
    );
}

/// A deployment on SQLite moved to PostgreSQL as the README says: stop, `archive migrate --to`
/// a config that differs only by `[catalog] url`, start on it. Files keep their SHA-256, the
/// accounts their passwords; a second run changes nothing.
#[test]
fn archive_migrate_moves_a_sqlite_catalog_and_its_accounts_to_postgresql() {
    migrate_to_postgresql(None);
}

/// As above over an S3 bucket: the bucket's segment maps move from `DATA/store.db` into
/// PostgreSQL too, and the files read back whole from the server started on it.
#[test]
fn archive_migrate_moves_a_buckets_segment_maps_to_postgresql() {
    let weed = logarchive_store::s3::seaweed::SeaweedFs::start().expect("SeaweedFS");
    migrate_to_postgresql(Some(&weed));
}

fn migrate_to_postgresql(weed: Option<&logarchive_store::s3::seaweed::SeaweedFs>) {
    let pg = Postgres::start().unwrap();
    let url = pg.database("moved").unwrap();
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let storage = match weed {
        None => String::new(),
        Some(w) => s3_storage(w, d.path(), "moved"),
    };
    let sqlite = d.path().join("server.toml");
    std::fs::write(&sqlite, format!("data = \"{}\"\n{storage}", data.display())).unwrap();
    let postgres = d.path().join("server-pg.toml");
    std::fs::write(
        &postgres,
        format!(
            "data = \"{}\"\n{storage}[catalog]\nurl = \"{url}\"\npassword_file = \"{}\"\n",
            data.display(),
            pg.password_file().display()
        ),
    )
    .unwrap();
    assert!(user_add_to(&sqlite, "agent01", "agent-password", "agent").0);
    assert!(user_add_to(&sqlite, "viewer", "viewer-password", "viewer").0);
    let start = |config: &std::path::Path| {
        let mut c = bin();
        c.args(["server", "--config"]).arg(config).args([
            "--ftp-listen",
            "127.0.0.1:0",
            "--web-listen",
            "127.0.0.1:0",
        ]);
        start_server(c)
    };
    let mut server = start(&sqlite);
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("Logs")).unwrap();
    let mut want = Vec::new();
    for i in 0..3 {
        let body = format!("line of file {i}\n");
        std::fs::write(src.join(format!("Logs/f{i}.log")), &body).unwrap();
        use sha2::Digest;
        want.push(format!(
            "/agent01/Logs/f{i}.log {}",
            hex::encode(sha2::Sha256::digest(body.as_bytes()))
        ));
    }
    let agent_config = write_agent_config(
        d.path(),
        "agent01",
        "agent-password",
        &[server.ftp.to_string()],
        &src,
        "",
    );
    agent_once(&agent_config);
    let auth = base64(b"viewer:viewer-password");
    wait_for(
        "the catalog holds the files",
        Duration::from_secs(5),
        || {
            http_get(&server.web, "/api/v1/browse/agent01/Logs", &auth)
                .matches(".log")
                .count()
                >= 3
        },
    );
    assert!(server.child.terminate().success());

    let migrate = || {
        let (ok, out, err) = archive_command(
            &sqlite,
            &data,
            &["migrate", "--to", &postgres.to_string_lossy()],
        );
        assert!(ok, "{out}{err}");
        out
    };
    let first = migrate();
    assert!(
        first.contains("3 files (with 0 local names), 2 accounts stored"),
        "{first}"
    );
    // Over a bucket: the folders and files (at least /agent01, /agent01/Logs, three files).
    let maps = first
        .split("segment maps into PostgreSQL: ")
        .nth(1)
        .and_then(|t| t.split(' ').next()?.parse::<u64>().ok());
    assert!(weed.is_none() || maps.is_some_and(|n| n >= 5), "{first}");
    let again = migrate();
    assert!(again.contains("0 accounts stored"), "{again}");
    if let Some(n) = maps {
        assert!(
            again.contains(&format!(
                "segment maps are in PostgreSQL already ({n} folders"
            )),
            "{again}"
        );
    }
    let rows = pg
        .sql_in(
            "moved",
            "SELECT path || ' ' || coalesce(sha256, '-') FROM files ORDER BY path",
        )
        .unwrap();
    assert_eq!(
        rows,
        want.join("\n"),
        "the SHA-256 recorded at upload came along"
    );

    // Started on PostgreSQL: the same files, the same passwords.
    let server = start(&postgres);
    assert!(server.admin_password.is_none());
    let listing = http_get(&server.web, "/api/v1/browse/agent01/Logs", &auth);
    assert_eq!(
        listing.matches("\"path\":\"/agent01/Logs/f").count(),
        3,
        "{listing}"
    );
    for i in 0..3 {
        assert_eq!(
            http_get(
                &server.web,
                &format!("/download/agent01/Logs/f{i}.log"),
                &auth
            ),
            format!("line of file {i}\n"),
            "read back from the store"
        );
    }
}
