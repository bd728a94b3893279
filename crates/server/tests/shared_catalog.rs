//! Two archive servers over one archive (a folder, or an S3 bucket whose segment maps are in
//! the same database) and one PostgreSQL catalog (`[catalog] url`):
//! what is uploaded through one is listed and found through the other at once; while
//! PostgreSQL is down the web says the catalog is unavailable (and /healthz is not ready)
//! instead of hanging, uploads get 451 (the agent retries), and all resumes by itself when it
//! is back. Accounts and web sessions are shared; one writer per file among the servers.

mod support;

use logarchive_ftp::client::{Client, ClientConfig, UploadMode, UploadOptions};
use logarchive_server::config::ServerSettings;
use logarchive_server::pg_harness::Postgres;
use logarchive_server::users::{NewUser, Role};
use std::time::{Duration, Instant};
use support::{Backend, Web};

fn shared(data: &std::path::Path, pg: &Postgres, url: &str) -> ServerSettings {
    let mut s = support::settings(data);
    s.catalog.url = Some(url.to_string());
    s.catalog.password_file = Some(pg.password_file());
    s
}

/// An FTP session of `agent01` on `server`.
async fn agent_client(server: &logarchive_server::Running) -> Client {
    Client::connect(ClientConfig::new(
        "127.0.0.1",
        server.ftp.local_addr().port(),
        "agent01",
        "agent pw",
    ))
    .await
    .unwrap()
}

async fn upload(server: &logarchive_server::Running, local: &std::path::Path, remote: &str) {
    let mut c = agent_client(server).await;
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

/// Two servers over one archive and one PostgreSQL database, with the account `agent01`
/// (password "agent pw"); the first made the first admin (`admin`). On a folder they share the
/// data folder; on S3 each has its own data folder (as on two machines) and they share the
/// bucket.
struct Pair {
    pg: Postgres,
    d: tempfile::TempDir,
    a: logarchive_server::Running,
    b: logarchive_server::Running,
    admin: String,
}

async fn pair(db: &str) -> Pair {
    pair_on(db, Backend::Local).await
}

async fn pair_on(db: &str, backend: Backend) -> Pair {
    let pg = Postgres::start().unwrap();
    let url = pg.database(db).unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut settings_a = shared(d.path(), &pg, &url);
    let mut settings_b = settings_a.clone();
    if backend == Backend::S3 {
        support::use_s3(&mut settings_a);
        let b_data = d.path().join("b");
        std::fs::create_dir_all(&b_data).unwrap();
        settings_b = shared(&b_data, &pg, &url);
        settings_b.storage = settings_a.storage.clone();
    }
    let a = logarchive_server::start(&settings_a).await.unwrap();
    let admin = a.initial_admin_password.clone().unwrap();
    let b = logarchive_server::start(&settings_b).await.unwrap();
    assert!(b.initial_admin_password.is_none(), "one first admin");
    add_agent(&a).await;
    Pair { pg, d, a, b, admin }
}

/// Adds `agent01` through `server`: blocking (argon2, and the accounts may be in PostgreSQL),
/// so off the async threads.
async fn add_agent(server: &logarchive_server::Running) {
    let users = server.users.clone();
    tokio::task::spawn_blocking(move || {
        users.add(NewUser::with_role("agent01", "agent pw", Role::Agent))
    })
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_catalog_and_ride_out_its_restart() {
    share_and_ride_out_a_restart(Backend::Local).await;
}

/// As above with the archive in one S3 bucket: each server has its own data folder, and the
/// segment maps are in PostgreSQL with the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_bucket_and_ride_out_a_catalog_restart() {
    share_and_ride_out_a_restart(Backend::S3).await;
}

async fn share_and_ride_out_a_restart(backend: Backend) {
    let Pair { pg, d, a, b, admin } = pair_on("archive", backend).await;
    let web_b = Web::new(&format!("http://{}", b.web_addr));
    assert_eq!(web_b.login("admin", &admin).await.status().as_u16(), 303);

    // Uploaded through A: listed and found through B.
    let f = d.path().join("a.log");
    std::fs::write(&f, b"one line\n").unwrap();
    let sent = Instant::now();
    upload(&a, &f, "/Logs/first.log").await;
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
    // Read through B (on S3: B's own data folder knows nothing of it; the segment map in
    // PostgreSQL does), and appended through B where A left off.
    let (status, body) = web_b.text("/download/agent01/Logs/first.log").await;
    assert_eq!((status, body.as_str()), (200, "one line\n"));
    std::fs::write(&f, b"one line\ntwo lines\n").unwrap();
    let mut c = agent_client(&b).await;
    c.upload(
        &f,
        "/Logs/first.log",
        UploadOptions::new(UploadMode::Append { local_offset: 9 }),
    )
    .await
    .unwrap();
    let web_a = Web::new(&format!("http://{}", a.web_addr));
    assert_eq!(web_a.login("admin", &admin).await.status().as_u16(), 303);
    let (status, body) = web_a.text("/download/agent01/Logs/first.log").await;
    assert_eq!((status, body.as_str()), (200, "one line\ntwo lines\n"));

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
    // A failed login meanwhile: refused at once, and in the audit trail once the database is
    // back (the event waits in B's queue).
    let guess = Web::new(&format!("http://{}", b.web_addr));
    assert_eq!(guess.login("admin", "a guess").await.status().as_u16(), 401);
    // Writes wait for the database too (one writer per file is kept there): 451, the agent
    // keeps the file and tries again.
    std::fs::write(&f, b"written while the catalog was down\n").unwrap();
    // On S3 the folders are in the database too: the login is refused (421, the agent comes
    // back later) before the upload is.
    let upload_to_a = async || -> Result<(), String> {
        let config = ClientConfig::new(
            "127.0.0.1",
            a.ftp.local_addr().port(),
            "agent01",
            "agent pw",
        );
        let mut c = Client::connect(config).await.map_err(|e| e.to_string())?;
        c.upload_verified(&f, "/Logs/during.log", None)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let e = upload_to_a()
        .await
        .expect_err("no writes without the database");
    assert!(
        e.contains("451") || (backend == Backend::S3 && e.contains("421")),
        "{e}"
    );

    // Back: the upload goes through (as an agent would, trying again for a moment), and the
    // catalog has it without further ado.
    pg.start_again().unwrap();
    let t = Instant::now();
    while let Err(e) = upload_to_a().await {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "uploads still refused: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    within(
        Duration::from_secs(15),
        "the login that failed during the outage in the audit trail",
        async || {
            web_b
                .text("/api/v1/audit?action=web.login_failed")
                .await
                .1
                .contains("\"actor\":\"admin\"")
        },
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Polls `f` on a blocking thread every millisecond until it is true (at most `limit`);
/// returns how long it took.
fn within_blocking(limit: Duration, what: &str, f: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if f() {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_live_in_postgresql_and_a_change_reaches_every_server_within_a_second() {
    use logarchive_server::users::UserUpdate;
    let pg = Postgres::start().unwrap();
    let url = pg.database("accounts").unwrap();
    // Two data folders: the accounts the servers share come from PostgreSQL alone.
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A users file already in A's data folder is stored in PostgreSQL at the first start.
    let seed = logarchive_server::users::UserDb::open(da.path().join("users.toml")).unwrap();
    seed.add(NewUser::with_role(
        "viewer1",
        "viewer password",
        Role::Viewer,
    ))
    .unwrap();
    seed.add(NewUser::with_role("admin", "admin password", Role::Admin))
        .unwrap();
    let a = logarchive_server::start(&shared(da.path(), &pg, &url))
        .await
        .unwrap();
    let b = logarchive_server::start(&shared(db.path(), &pg, &url))
        .await
        .unwrap();
    assert!(
        a.initial_admin_password.is_none(),
        "imported from users.toml"
    );
    assert!(
        b.initial_admin_password.is_none(),
        "the accounts are shared"
    );
    assert!(b.users.get("viewer1").is_some());

    // Changes made through A, seen by B: measured.
    let (ua, ub) = (a.users.clone(), b.users.clone());
    let mut seen = tokio::task::spawn_blocking(move || {
        ua.add(NewUser::with_role("agent01", "agent pw", Role::Agent))
            .unwrap();
        let mut seen = vec![within_blocking(
            Duration::from_secs(1),
            "a new account on B",
            || ub.get("agent01").is_some(),
        )];
        for i in 1..=20u64 {
            let limit = logarchive_ftp::rate::ByteRate(1_000_000 + i);
            ua.update(
                "agent01",
                UserUpdate {
                    upload_limit: Some(limit),
                    ..Default::default()
                },
            )
            .unwrap();
            seen.push(within_blocking(
                Duration::from_secs(1),
                "a new speed limit on B",
                || ub.get("agent01").is_some_and(|r| r.upload_limit == limit),
            ));
        }
        seen
    })
    .await
    .unwrap();
    seen.sort();
    eprintln!(
        "account change on A -> seen on B: p50 {:?}, max {:?} ({} changes)",
        seen[seen.len() / 2],
        seen[seen.len() - 1],
        seen.len()
    );

    // An FTP session on B and a web session on B; the account disabled through A: both end.
    let mut session = agent_client(&b).await;
    session.ensure_dir("/Logs").await.unwrap();
    let web = Web::new(&format!("http://{}", b.web_addr));
    assert_eq!(web.login("viewer1", "viewer password").await.status(), 303);
    assert_eq!(web.text("/api/v1/recent").await.0, 200);
    let ua = a.users.clone();
    tokio::task::spawn_blocking(move || {
        for name in ["agent01", "viewer1"] {
            ua.update(
                name,
                UserUpdate {
                    enabled: Some(false),
                    ..Default::default()
                },
            )
            .unwrap();
        }
    })
    .await
    .unwrap();
    within(
        Duration::from_secs(1),
        "B's web session ended",
        async || web.text("/api/v1/recent").await.0 == 401,
    )
    .await;
    within(
        Duration::from_secs(2),
        "B's FTP session ended",
        async || {
            b.ftp
                .sessions()
                .iter()
                .all(|s| s.user.as_deref() != Some("agent01"))
        },
    )
    .await;
    assert!(
        session.list("/").await.is_err(),
        "no new login for a disabled account"
    );

    // `logarchive user`'s way in (open_accounts with the same settings) edits the same rows.
    let s = shared(db.path(), &pg, &url);
    let ub = b.users.clone();
    tokio::task::spawn_blocking(move || {
        let cli = logarchive_server::open_accounts(&s).unwrap();
        cli.remove("viewer1").unwrap();
        within_blocking(Duration::from_secs(1), "a removal on B", || {
            ub.get("viewer1").is_none()
        });
    })
    .await
    .unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_together_on_an_empty_database_make_one_first_admin() {
    let pg = Postgres::start().unwrap();
    let url = pg.database("fresh").unwrap();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let settings: Vec<_> = dirs.iter().map(|d| shared(d.path(), &pg, &url)).collect();
    let (a, b, c) = tokio::join!(
        logarchive_server::start(&settings[0]),
        logarchive_server::start(&settings[1]),
        logarchive_server::start(&settings[2]),
    );
    let servers = [a.unwrap(), b.unwrap(), c.unwrap()];
    let made: Vec<_> = servers
        .iter()
        .filter_map(|s| s.initial_admin_password.clone())
        .collect();
    assert_eq!(made.len(), 1, "exactly one server made the first admin");
    assert_eq!(
        pg.sql_in("fresh", "SELECT name FROM accounts").unwrap(),
        "admin"
    );
    // Its password logs in on every server.
    for s in &servers {
        let web = Web::new(&format!("http://{}", s.web_addr));
        assert_eq!(web.login("admin", &made[0]).await.status(), 303);
    }
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_session_made_on_one_server_is_valid_on_every_server_and_ends_on_all() {
    let pg = Postgres::start().unwrap();
    let url = pg.database("sessions").unwrap();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = logarchive_server::start(&shared(da.path(), &pg, &url))
        .await
        .unwrap();
    let b = logarchive_server::start(&shared(db.path(), &pg, &url))
        .await
        .unwrap();
    let admin = a.initial_admin_password.clone().unwrap();
    let on_a = Web::new(&format!("http://{}", a.web_addr));
    assert_eq!(on_a.login("admin", &admin).await.status(), 303);
    // The same cookie, sent to B (a load balancer without stickiness).
    let on_b = Web::new(&format!("http://{}", b.web_addr));
    *on_b.cookie.lock().unwrap() = on_a.cookie.lock().unwrap().clone();
    assert_eq!(on_b.text("/api/v1/recent").await.0, 200);
    assert_eq!(
        pg.sql_in("sessions", "SELECT count(*) FROM web_sessions")
            .unwrap(),
        "1",
        "only the token's hash, once"
    );
    // Logged out through B: over on A too.
    let csrf = on_b.csrf().await;
    let r = on_b
        .post("/logout")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(on_a.text("/api/v1/recent").await.0, 401);
    assert_eq!(
        pg.sql_in("sessions", "SELECT count(*) FROM web_sessions")
            .unwrap(),
        "0"
    );
    // While PostgreSQL is away a session cannot be checked: 503, not a login page.
    assert_eq!(on_a.login("admin", &admin).await.status(), 303);
    pg.stop().unwrap();
    let (status, body) = on_a.text("/api/v1/recent").await;
    assert_eq!(status, 503, "{body}");
    pg.start_again().unwrap();
    assert_eq!(
        on_a.text("/api/v1/recent").await.0,
        200,
        "the session survived"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_never_write_one_file_at_once() {
    one_writer_per_file(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_never_write_one_file_of_their_bucket_at_once() {
    one_writer_per_file(Backend::S3).await;
}

async fn one_writer_per_file(backend: Backend) {
    use logarchive_ftp::server::WriteMode;
    use logarchive_store::VirtualPath;
    let Pair {
        pg: _pg, d, a, b, ..
    } = pair_on("locks", backend).await;
    let path = VirtualPath::parse(std::path::Path::new("agent01/Logs/x.log")).unwrap();
    a.store
        .mkdir(&VirtualPath::parse(std::path::Path::new("agent01")).unwrap())
        .await
        .unwrap();
    a.store
        .mkdir(&VirtualPath::parse(std::path::Path::new("agent01/Logs")).unwrap())
        .await
        .unwrap();
    // A writes (a slow upload, or one whose client has gone to B meanwhile).
    let mut held = a.store.write(&path, WriteMode::CreateNew).await.unwrap();
    held.write(b"from A\n").unwrap();
    // B may not touch the file meanwhile: through its store, nor through FTP (450).
    let e = b
        .store
        .write(&path, WriteMode::Append { at: 7 })
        .await
        .err()
        .expect("busy");
    assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "{e}");
    let f = d.path().join("more.log");
    std::fs::write(&f, b"from A\nfrom B\n").unwrap();
    let mut c = agent_client(&b).await;
    let e = c
        .upload(
            &f,
            "/Logs/x.log",
            logarchive_ftp::client::UploadOptions::new(
                logarchive_ftp::client::UploadMode::Append { local_offset: 7 },
            ),
        )
        .await
        .expect_err("refused while A writes");
    assert!(e.to_string().contains("450"), "{e}");
    // A done: B's retry goes through.
    tokio::task::spawn_blocking(move || held.finish(None))
        .await
        .unwrap()
        .unwrap();
    c.upload(
        &f,
        "/Logs/x.log",
        logarchive_ftp::client::UploadOptions::new(logarchive_ftp::client::UploadMode::Append {
            local_offset: 7,
        }),
    )
    .await
    .unwrap();
    // Read back through the other server.
    let mut down = a.store.read(&path, 0).await.unwrap();
    let got = tokio::task::spawn_blocking(move || {
        let mut out = vec![0u8; 64];
        let mut n = 0;
        while let Ok(k @ 1..) = down.read(&mut out[n..]) {
            n += k;
        }
        out.truncate(n);
        out
    })
    .await
    .unwrap();
    assert_eq!(got, b"from A\nfrom B\n");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_migrate_carries_every_row_and_local_name_into_postgresql() {
    use logarchive_server::catalog::{Catalog, Entry, Location};
    let pg = Postgres::start().unwrap();
    let url = pg.database("migrated").unwrap();
    let d = tempfile::tempdir().unwrap();
    let from = support::settings(d.path());
    let to = shared(d.path(), &pg, &url);
    // A SQLite catalog of 25,000 files (three pages), every 1,000th with two local names.
    let db = d.path().join("catalog.db");
    let d_db = db.clone();
    tokio::task::spawn_blocking(move || {
        let c = Catalog::connect(&Location::Sqlite(db)).unwrap();
        let rows: Vec<Entry> = (0..25_000)
            .map(|i| Entry {
                path: format!("/agent{:02}/Logs/f{i:06}.log", i % 7),
                agent: format!("agent{:02}", i % 7),
                size: i,
                sha256: Some(format!("{i:064x}")),
                modified_ms: i as i64,
                archived_ms: i as i64,
                appended_ms: None,
            })
            .collect();
        c.batch(|c| c.upsert_all(&rows)).unwrap();
        for e in rows.iter().step_by(1000) {
            c.add_alias(&e.path, "Logs/service.log.1").unwrap();
            c.add_alias(&e.path, "Logs/service.log.2.gz").unwrap();
        }
        // And an audit trail of 12,345 rows (two pages), as a server there recorded them.
        use logarchive_server::audit::{write_now, Event, Via};
        let events: Vec<Event> = (0..12_345)
            .map(|i| Event {
                at_ms: i,
                ..Event::now("admin", Via::Web, None, "account.change", "agent01", "")
            })
            .collect();
        write_now(&Location::Sqlite(d_db), "old-host:8080", &events).unwrap();
    })
    .await
    .unwrap();
    let report = logarchive_server::migrate::migrate(&from, &to, |_| {})
        .await
        .unwrap();
    assert_eq!((report.catalog_rows, report.catalog_names), (25_000, 50));
    assert_eq!(report.audit_rows, 12_345);
    let counts = || {
        pg.sql_in(
            "migrated",
            "SELECT (SELECT count(*) FROM files) || ' ' || (SELECT count(sha256) FROM files) \
             || ' ' || (SELECT count(*) FROM aliases) || ' ' || (SELECT sum(size) FROM files) \
             || ' ' || (SELECT count(*) FROM audit WHERE server = 'old-host:8080')",
        )
        .unwrap()
    };
    let want = format!("25000 25000 50 {} 12345", (0..25_000u64).sum::<u64>());
    assert_eq!(counts(), want);
    // Again: nothing changes.
    let again = logarchive_server::migrate::migrate(&from, &to, |_| {})
        .await
        .unwrap();
    assert_eq!(again.audit_rows, 0);
    assert_eq!(counts(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_on_one_server_streams_what_is_appended_through_another() {
    use logarchive_ftp::client::{UploadMode, UploadOptions};
    let Pair {
        pg: _pg,
        d,
        a,
        b,
        admin,
    } = pair("follow").await;
    let local = d.path().join("grow.log");
    let mut body = String::from("first line\n");
    std::fs::write(&local, &body).unwrap();
    upload(&a, &local, "/Logs/grow.log").await;
    let web_b = Web::new(&format!("http://{}", b.web_addr));
    assert_eq!(web_b.login("admin", &admin).await.status(), 303);
    within(Duration::from_secs(2), "the file listed on B", async || {
        web_b
            .text("/api/v1/browse/agent01/Logs")
            .await
            .1
            .contains("grow.log")
    })
    .await;
    let mut stream = web_b
        .get(&format!(
            "/api/v1/follow/agent01/Logs/grow.log?offset={}",
            body.len()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut c = agent_client(&a).await;
    let mut seen = Vec::new();
    let mut got = String::new();
    for i in 0..20 {
        let at = body.len() as u64;
        let line = format!("appended through A, line {i:03}\n");
        body.push_str(&line);
        std::fs::write(&local, &body).unwrap();
        c.upload(
            &local,
            "/Logs/grow.log",
            UploadOptions::new(UploadMode::Append { local_offset: at }),
        )
        .await
        .unwrap();
        let appended = Instant::now();
        let want = format!("line {i:03}");
        while !got.contains(&want) {
            let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
                .await
                .expect("no follow event on B within 5 s")
                .unwrap()
                .unwrap();
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
        seen.push(appended.elapsed());
    }
    seen.sort();
    eprintln!(
        "append through A -> line in B's follow stream: p50 {:?}, max {:?} ({} appends)",
        seen[seen.len() / 2],
        seen[seen.len() - 1],
        seen.len()
    );
    // Told through the catalog as it commits, not found by the once-a-second look.
    assert!(
        seen[seen.len() - 1] < Duration::from_millis(500),
        "within half a second: {seen:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compactor_never_swaps_a_file_another_server_writes() {
    use logarchive_ftp::server::WriteMode;
    use logarchive_store::VirtualPath;
    let pg = Postgres::start().unwrap();
    let url = pg.database("compaction").unwrap();
    let d = tempfile::tempdir().unwrap();
    // A quiet 64 KiB log already in the shared folder.
    let file = d.path().join("archive/agent01/Logs/quiet.log");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut body: Vec<u8> = (0..2000)
        .flat_map(|i| format!("an old line {i:05}\n").into_bytes())
        .collect();
    std::fs::write(&file, &body).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let mut sa = shared(d.path(), &pg, &url);
    sa.storage.compress_after =
        toml::from_str::<logarchive_server::config::StorageSection>("compress_after = \"1s\"")
            .unwrap()
            .compress_after;
    let mut sb = shared(d.path(), &pg, &url);
    sb.storage.compress_after =
        toml::from_str::<logarchive_server::config::StorageSection>("compress_after = \"never\"")
            .unwrap()
            .compress_after;
    // B appends to it (slowly) before A's compactor gets to it.
    let b = logarchive_server::start(&sb).await.unwrap();
    let path = VirtualPath::parse(std::path::Path::new("agent01/Logs/quiet.log")).unwrap();
    let mut held = b
        .store
        .write(
            &path,
            WriteMode::Append {
                at: body.len() as u64,
            },
        )
        .await
        .unwrap();
    let a = logarchive_server::start(&sa).await.unwrap();
    let zst = d.path().join("archive/agent01/Logs/quiet.log.zst");
    // A's compactor passes every second; while B writes, the file stays as it is.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        assert!(!zst.exists(), "compressed while another server wrote it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let more = b"a line B appended\n".to_vec();
    held.write(&more).unwrap();
    tokio::task::spawn_blocking(move || held.finish(None))
        .await
        .unwrap()
        .unwrap();
    body.extend_from_slice(&more);
    // Then A compresses it, with B's line in it.
    within(
        Duration::from_secs(20),
        "A compressed the file",
        async || zst.exists() && !file.exists(),
    )
    .await;
    let reader = a.store.open_reader(&path).await.unwrap();
    let mut back = vec![0u8; reader.len() as usize];
    let mut done = 0;
    while done < back.len() {
        done += reader.read_at(&mut back[done..], done as u64).unwrap();
    }
    assert_eq!(back, body);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_granted_after_its_writer_gave_up_is_released() {
    use logarchive_ftp::server::WriteMode;
    use logarchive_store::VirtualPath;
    let Pair {
        pg: _pg, d, a, b, ..
    } = pair("abandoned").await;
    std::fs::create_dir_all(d.path().join("archive/agent01")).unwrap();
    let path = VirtualPath::parse(std::path::Path::new("agent01/x.log")).unwrap();
    // A's writer asks for the lock and is gone before the answer (a session cut meanwhile).
    for _ in 0..20 {
        use futures_util::FutureExt;
        // Polled once (the request goes out), then dropped.
        let asked = a
            .store
            .write(&path, WriteMode::Replace { at: 0 })
            .now_or_never();
        assert!(asked.is_none(), "the answer cannot have come yet");
    }
    // B may write it (not at once, perhaps: the grants are being released).
    let t = Instant::now();
    loop {
        match b.store.write(&path, WriteMode::Replace { at: 0 }).await {
            Ok(u) => {
                tokio::task::spawn_blocking(move || u.finish(None))
                    .await
                    .unwrap()
                    .unwrap();
                break;
            }
            Err(e) => assert!(
                t.elapsed() < Duration::from_secs(5),
                "the abandoned locks were never released: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Login lockouts count together: wrong passwords spread over two servers lock the account on
/// both (FTP and web each keep their own count), within a second of the failure that reached
/// the limit; a server started afterwards knows the failures too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_on_one_server_count_on_every_server() {
    let Pair {
        pg, d, a, b, admin, ..
    } = pair("lockouts").await;
    let ftp_login = async |server: &logarchive_server::Running, password: &str| {
        let config = ClientConfig::new(
            "127.0.0.1",
            server.ftp.local_addr().port(),
            "agent01",
            password,
        );
        Client::connect(config)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    // Five failures allowed per name and address (the default): three on A, two on B.
    for _ in 0..3 {
        assert!(ftp_login(&a, "wrong").await.is_err());
    }
    for _ in 0..2 {
        assert!(ftp_login(&b, "wrong").await.is_err());
    }
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let took = within(
        Duration::from_secs(1),
        "A counts B's failures",
        async || a.ftp.lockout().is_locked("agent01", ip),
    )
    .await;
    eprintln!("failure on B -> counted on A: {took:?}");
    assert!(b.ftp.lockout().is_locked("agent01", ip));
    let e = ftp_login(&a, "agent pw").await.expect_err("locked on A");
    assert!(e.contains("refused"), "{e}");

    // The web: four failures on B, the fifth on A; then the right password fails on B too.
    let web_a = Web::new(&format!("http://{}", a.web_addr));
    let web_b = Web::new(&format!("http://{}", b.web_addr));
    for _ in 0..4 {
        assert_ne!(web_b.login("admin", "wrong").await.status().as_u16(), 303);
    }
    assert_ne!(web_a.login("admin", "wrong").await.status().as_u16(), 303);
    let took = within(
        Duration::from_secs(1),
        "B counts A's web failure",
        async || b.web_lockout.is_locked("admin", ip),
    )
    .await;
    eprintln!("web failure on A -> counted on B: {took:?}");
    assert_ne!(web_b.login("admin", &admin).await.status().as_u16(), 303);

    // A third server started now counts the failures of the last window.
    let c_data = d.path().join("c");
    std::fs::create_dir_all(&c_data).unwrap();
    let url = format!("postgres://logarchive@127.0.0.1:{}/lockouts", pg.port);
    let c = logarchive_server::start(&shared(&c_data, &pg, &url))
        .await
        .unwrap();
    within(
        Duration::from_secs(2),
        "a new server counts them",
        async || c.ftp.lockout().is_locked("agent01", ip),
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

/// One audit trail for all servers: what is done through A and through B is read through
/// either, each row naming the server it came through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_is_one_for_every_server() {
    let Pair {
        pg: _pg,
        d: _d,
        a,
        b,
        admin,
    } = pair("trail").await;
    let http = reqwest::Client::new();
    // A web login on A; a change through B's API; a wrong FTP password on A.
    let web_a = Web::new(&format!("http://{}", a.web_addr));
    let r = web_a.login("admin", &admin).await;
    assert_eq!(r.status().as_u16(), 303, "{}", r.text().await.unwrap());
    let r = http
        .patch(format!("http://{}/api/v1/users/agent01", b.web_addr))
        .basic_auth("admin", Some(&admin))
        .json(&serde_json::json!({"enabled": "false"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let wrong = ClientConfig::new("127.0.0.1", a.ftp.local_addr().port(), "agent01", "wrong");
    assert!(Client::connect(wrong).await.is_err());

    for (reader, name) in [(&a, "A"), (&b, "B")] {
        let mut rows = Vec::new();
        within(
            Duration::from_secs(5),
            "the trail through both",
            async || {
                let v: serde_json::Value = http
                    .get(format!("http://{}/api/v1/audit", reader.web_addr))
                    .basic_auth("admin", Some(&admin))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                rows = v["events"].as_array().unwrap().clone();
                rows.len() >= 3
            },
        )
        .await;
        let server_of = |action: &str| {
            let r = rows
                .iter()
                .find(|r| r["action"] == action)
                .unwrap_or_else(|| panic!("{action} through {name}: {rows:#?}"));
            r["server"].as_str().unwrap().to_string()
        };
        let port = |s: &logarchive_server::Running| format!(":{}", s.web_addr.port());
        assert!(server_of("web.login").ends_with(&port(&a)));
        assert!(server_of("account.change").ends_with(&port(&b)));
        assert!(server_of("ftp.login_failed").ends_with(&port(&a)));
        assert_eq!(rows.len(), 3, "each once: {rows:#?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}
