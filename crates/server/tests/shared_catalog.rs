//! Two archive servers over one archive folder and one PostgreSQL catalog (`[catalog] url`):
//! what is uploaded through one is listed and found through the other at once; while
//! PostgreSQL is down the web says the catalog is unavailable (and /healthz is not ready)
//! instead of hanging, uploads still land, and the catalog catches up by itself when it is
//! back.

mod support;

use logarchive_ftp::client::{Client, ClientConfig};
use logarchive_server::config::ServerSettings;
use logarchive_server::pg_harness::Postgres;
use logarchive_server::users::{NewUser, Role};
use std::time::{Duration, Instant};
use support::Web;

fn shared(data: &std::path::Path, pg: &Postgres, url: &str) -> ServerSettings {
    let mut s = support::settings(data);
    s.catalog.url = Some(url.to_string());
    s.catalog.password_file = Some(pg.password_file());
    s
}

async fn upload(port: u16, local: &std::path::Path, remote: &str) {
    let mut c = Client::connect(ClientConfig::new("127.0.0.1", port, "agent01", "agent pw"))
        .await
        .unwrap();
    c.ensure_dir("/Logs").await.unwrap();
    c.upload_verified(local, remote, None).await.unwrap();
}

/// Polls `f` every 10 ms until it is true, for at most `limit`; returns how long it took.
async fn within(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if f().await {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_catalog_and_ride_out_its_restart() {
    let pg = Postgres::start().unwrap();
    let url = pg.database("archive").unwrap();
    let d = tempfile::tempdir().unwrap();
    let a = logarchive_server::start(&shared(d.path(), &pg, &url))
        .await
        .unwrap();
    let admin = a.initial_admin_password.clone().unwrap();
    let b = logarchive_server::start(&shared(d.path(), &pg, &url))
        .await
        .unwrap();
    assert!(b.initial_admin_password.is_none(), "one data folder");
    a.users
        .add(NewUser::with_role("agent01", "agent pw", Role::Agent))
        .unwrap();
    let web_b = Web::new(&format!("http://{}", b.web_addr));
    assert_eq!(web_b.login("admin", &admin).await.status().as_u16(), 303);

    // Uploaded through A: listed and found through B.
    let f = d.path().join("a.log");
    std::fs::write(&f, b"one line\n").unwrap();
    let sent = Instant::now();
    upload(a.ftp.local_addr().port(), &f, "/Logs/first.log").await;
    let took = within(Duration::from_secs(1), "B lists what A took", async || {
        web_b
            .text("/api/v1/browse/agent01/Logs")
            .await
            .1
            .contains("first.log")
    })
    .await;
    eprintln!(
        "upload through A -> listed by B: {:?} after the upload returned ({:?} after it began)",
        took,
        sent.elapsed()
    );
    let (status, body) = web_b.text("/api/v1/search?q=first").await;
    assert_eq!(status, 200);
    assert!(body.contains("/agent01/Logs/first.log"), "{body}");

    // PostgreSQL goes away: B says so at once, and is not ready; uploads through A land.
    pg.stop().unwrap();
    let t = Instant::now();
    let (status, body) = web_b.text("/api/v1/browse/agent01/Logs").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("catalog is unavailable"), "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "answered without hanging"
    );
    let (status, body) = web_b.text("/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("catalog"), "{body}");
    assert_eq!(web_b.text("/healthz?live").await.0, 200);
    std::fs::write(&f, b"written while the catalog was down\n").unwrap();
    upload(a.ftp.local_addr().port(), &f, "/Logs/during.log").await;

    // Back: the catalog catches up without any further upload.
    pg.start_again().unwrap();
    within(
        Duration::from_secs(15),
        "the file uploaded during the outage in B's listing",
        async || {
            web_b
                .text("/api/v1/browse/agent01/Logs")
                .await
                .1
                .contains("during.log")
        },
    )
    .await;
    assert_eq!(web_b.text("/healthz").await.0, 200);
    // One row per file, whichever server reconciled.
    let rows = pg
        .sql_in("archive", "SELECT path FROM files ORDER BY path")
        .unwrap();
    assert_eq!(rows, "/agent01/Logs/during.log\n/agent01/Logs/first.log");
    a.shutdown().await;
    b.shutdown().await;
}
