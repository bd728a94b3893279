//! The catalog's contract, on both of its databases: SQLite (`DATA/catalog.db`) and a real
//! PostgreSQL (Debian's server, started for this test binary by `pg_harness`). Each check runs
//! on each; the PostgreSQL-only ones (migrations racing, the server going away and coming
//! back, settings) follow.

use logarchive_ftp::server::FtpEvent;
use logarchive_server::catalog::{Catalog, DirTotals, Entry, Location, NameQuery, PgSettings};
use logarchive_server::pg_harness::Postgres;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

fn postgres() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| Postgres::start().expect("PostgreSQL"))
}

/// A fresh PostgreSQL database's settings.
fn fresh_pg() -> PgSettings {
    static N: AtomicUsize = AtomicUsize::new(0);
    let pg = postgres();
    let url = pg
        .database(&format!("contract{}", N.fetch_add(1, Ordering::Relaxed)))
        .unwrap();
    PgSettings::new(&url, Some(&pg.password_file())).unwrap()
}

/// Runs `check` on a fresh SQLite catalog and on a fresh PostgreSQL one.
fn on_both(check: impl Fn(&Catalog, &Path)) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let c = Catalog::connect(&Location::Sqlite(d.path().join("catalog.db"))).unwrap();
    check(&c, &root);
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let c = Catalog::connect(&Location::Postgres(Box::new(fresh_pg()))).unwrap();
    check(&c, &root);
}

fn entry(path: &str, size: u64, modified_ms: i64) -> Entry {
    Entry {
        path: path.into(),
        agent: path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap()
            .into(),
        size,
        sha256: None,
        modified_ms,
        archived_ms: 0,
        appended_ms: None,
    }
}

fn names(c: &Catalog, name: &str, agent: Option<&str>) -> Vec<String> {
    c.search(&NameQuery {
        name: name.into(),
        agent: agent.map(str::to_string),
        ..Default::default()
    })
    .unwrap()
    .into_iter()
    .map(|e| e.path)
    .collect()
}

#[test]
fn search_list_and_reconcile() {
    on_both(|c, root| {
        std::fs::create_dir_all(root.join("agent01/Logs/App")).unwrap();
        std::fs::write(root.join("agent01/Logs/App/server-error.log"), b"x").unwrap();
        std::fs::write(root.join("agent01/Logs/App/.tmp.logarchive-tmp"), b"x").unwrap();
        std::fs::create_dir_all(root.join("agent02")).unwrap();
        std::fs::write(root.join("agent02/access.txt"), b"yy").unwrap();
        std::fs::write(root.join("agent02/100%_done.txt"), b"z").unwrap();
        assert_eq!(c.reconcile(root).unwrap(), (3, 0, 0));
        let (dirs, files) = c.list("/").unwrap();
        assert_eq!(dirs, vec!["/agent01", "/agent02"]);
        assert!(files.is_empty());
        let (dirs, files) = c.list("/agent01/Logs").unwrap();
        assert_eq!(
            (dirs, files.len()),
            (vec!["/agent01/Logs/App".to_string()], 0)
        );
        assert_eq!(
            names(c, "ERROR", None),
            vec!["/agent01/Logs/App/server-error.log"],
            "substring, any case"
        );
        assert_eq!(names(c, "*.txt", None).len(), 2);
        // Globs are case-sensitive; their classes work; LIKE's own wildcards mean themselves.
        assert_eq!(
            names(c, "server-*.log", None),
            vec!["/agent01/Logs/App/server-error.log"]
        );
        assert!(names(c, "SERVER-*.log", None).is_empty());
        assert_eq!(names(c, "acc[e]ss.tx?", None), vec!["/agent02/access.txt"]);
        assert_eq!(names(c, "100%_", None), vec!["/agent02/100%_done.txt"]);
        assert!(names(c, "1_0", None).is_empty(), "_ is no wildcard");
        assert_eq!(names(c, "", Some("agent02")).len(), 2);
        assert_eq!(names(c, "lo", None).len(), 1, "short substrings work too");
        std::fs::remove_file(root.join("agent02/access.txt")).unwrap();
        std::fs::write(root.join("agent01/Logs/App/server-error.log"), b"xx").unwrap();
        assert_eq!(c.reconcile(root).unwrap(), (0, 1, 1));
        assert_eq!(c.count().unwrap(), 2);
        let e = c
            .get("/agent01/Logs/App/server-error.log")
            .unwrap()
            .unwrap();
        assert_eq!((e.size, e.sha256), (2, None));
        assert!(c.get("/agent02/access.txt").unwrap().is_none());
    });
}

#[test]
fn folder_totals_are_exact_within_their_budget() {
    on_both(|c, _| {
        c.upsert_all(&[
            entry("/a1/Logs/App/x.log", 10, 5),
            entry("/a1/Logs/App/2024/y.log", 20, 9),
            entry("/a1/Logs/z.log", 1, 7),
            entry("/a1/Other/w.log", 100, 3),
            entry("/a1/top.log", 1000, 1),
            entry("/a2/q.log", 7, 2),
        ])
        .unwrap();
        let t = c.dir_totals("/a1", 100).unwrap();
        let want = |files, bytes, modified_ms| DirTotals {
            files,
            bytes,
            modified_ms,
        };
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t["/a1/Logs"], want(3, 31, 9));
        assert_eq!(t["/a1/Other"], want(1, 100, 3));
        let root = c.dir_totals("/", 100).unwrap();
        assert_eq!(root["/a1"], want(5, 1131, 9));
        assert_eq!(root["/a2"], want(1, 7, 2));
        // A budget that ends inside a folder leaves that folder out rather than undercount.
        assert!(c.dir_totals("/a1", 2).unwrap().is_empty());
        let t = c.dir_totals("/", 5).unwrap();
        assert_eq!(t.keys().collect::<Vec<_>>(), ["/a1"]);
        // Totals per agent, a walk in pages, counting with a cap.
        let totals = c.agent_totals().unwrap();
        assert_eq!(
            totals
                .iter()
                .map(|t| (t.agent.as_str(), t.files, t.bytes))
                .collect::<Vec<_>>(),
            [("a1", 5, 1131), ("a2", 1, 7)]
        );
        assert_eq!(c.agent_totals_of("a3").unwrap().files, 0);
        let page = c.files_under("/a1", None, 2).unwrap();
        assert_eq!(
            page.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["/a1/Logs/App/2024/y.log", "/a1/Logs/App/x.log"]
        );
        let next = c.files_under("/a1", Some(&page[1].path), 10).unwrap();
        assert_eq!(next.len(), 3);
        assert_eq!(c.count_under("/a1", 3).unwrap(), 3);
        assert_eq!(c.count_under("/", 100).unwrap(), 6);
        // A later entry for the same path wins; the first archive time stays.
        let mut again = entry("/a2/q.log", 8, 4);
        again.archived_ms = 99;
        let mut last = entry("/a2/q.log", 9, 4);
        last.archived_ms = 99;
        c.upsert_all(&[again, last]).unwrap();
        let q = c.get("/a2/q.log").unwrap().unwrap();
        assert_eq!((q.size, q.archived_ms), (9, 0));
    });
}

#[test]
fn generations_are_found_by_their_local_names_and_move_with_their_folder() {
    on_both(|c, root| {
        std::fs::create_dir_all(root.join("agent01/Logs")).unwrap();
        std::fs::write(root.join("agent01/Logs/service.log.~3~"), b"x").unwrap();
        std::fs::write(root.join("agent01/Logs/other.log"), b"y").unwrap();
        c.reconcile(root).unwrap();
        let ev = |path: &str, name: &str| FtpEvent::Alias {
            user: "agent01".into(),
            path: path.into(),
            name: name.into(),
        };
        c.apply(
            &ev("/agent01/Logs/service.log.~3~", "Logs/service.log.1"),
            root,
        )
        .unwrap();
        c.apply(
            &ev("/agent01/Logs/service.log.~3~", "Logs/service.log.2.gz"),
            root,
        )
        .unwrap();
        // Never for bookkeeping files, and never more than MAX_ALIASES a file.
        c.apply(&ev("/agent01/.logarchive/status.json", "x"), root)
            .unwrap();
        for i in 0..40 {
            c.add_alias("/agent01/Logs/other.log", &format!("o{i}"))
                .unwrap();
        }
        assert_eq!(
            c.aliases("/agent01/Logs/other.log").unwrap().len(),
            logarchive_server::catalog::MAX_ALIASES
        );
        assert_eq!(
            names(c, "service.log.1", None),
            ["/agent01/Logs/service.log.~3~"]
        );
        assert_eq!(
            names(c, "service.log.2*", None),
            ["/agent01/Logs/service.log.~3~"]
        );
        assert_eq!(
            c.aliases_in("/agent01/Logs").unwrap()["/agent01/Logs/service.log.~3~"],
            ["Logs/service.log.1", "Logs/service.log.2.gz"]
        );
        assert!(c.aliases_in("/agent01").unwrap().is_empty());
        // The folder renamed (with a name beyond ASCII): rows, names and folders move.
        std::fs::rename(root.join("agent01/Logs"), root.join("agent01/Jöurnal")).unwrap();
        c.apply(
            &FtpEvent::Renamed {
                user: "agent01".into(),
                from: "/agent01/Logs".into(),
                to: "/agent01/Jöurnal".into(),
                size: 0,
                sha256: None,
                from_temp: false,
                addr: "127.0.0.1:1".parse().unwrap(),
            },
            root,
        )
        .unwrap();
        assert_eq!(
            names(c, "service.log.1", None),
            ["/agent01/Jöurnal/service.log.~3~"]
        );
        assert_eq!(
            c.aliases("/agent01/Jöurnal/service.log.~3~").unwrap(),
            ["Logs/service.log.1", "Logs/service.log.2.gz"]
        );
        assert_eq!(c.list("/agent01").unwrap().0, ["/agent01/Jöurnal"]);
        // A removed file takes its names with it.
        std::fs::remove_file(root.join("agent01/Jöurnal/service.log.~3~")).unwrap();
        c.reconcile(root).unwrap();
        assert!(names(c, "service.log.1", None).is_empty());
        assert!(c
            .aliases("/agent01/Jöurnal/service.log.~3~")
            .unwrap()
            .is_empty());
    });
}

#[test]
fn servers_starting_together_migrate_the_schema_once() {
    let pg = fresh_pg();
    let catalogs: Vec<Catalog> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| Catalog::connect(&Location::Postgres(Box::new(pg.clone())))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("every server starts"))
            .collect()
    });
    let db = pg.url().rsplit('/').next().unwrap().to_string();
    let versions = postgres()
        .sql_in(
            &db,
            "SELECT version FROM logarchive_migrations ORDER BY version",
        )
        .unwrap();
    assert_eq!(versions, "1\n2\n3\n4\n5\n6", "each step applied once");
    // What one writes the others read at once.
    catalogs[0].upsert(&entry("/a/b.log", 3, 1)).unwrap();
    for c in &catalogs {
        assert_eq!(c.get("/a/b.log").unwrap().unwrap().size, 3);
    }
}

#[test]
fn a_catalog_whose_server_went_away_says_so_and_comes_back_by_itself() {
    // A cluster of its own: the others' tests go on meanwhile.
    let pg = Postgres::start().unwrap();
    let url = pg.database("outage").unwrap();
    let settings = PgSettings::new(&url, Some(&pg.password_file())).unwrap();
    let c = Catalog::connect(&Location::Postgres(Box::new(settings))).unwrap();
    c.upsert(&entry("/a/b.log", 3, 1)).unwrap();
    pg.stop().unwrap();
    let t = std::time::Instant::now();
    let e = c.list("/a").unwrap_err();
    assert!(e.to_string().contains("the catalog is unavailable"), "{e}");
    assert!(c.ping().is_err());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "fails fast"
    );
    pg.start_again().unwrap();
    // The first use after the server is back reconnects.
    assert_eq!(c.list("/a").unwrap().1.len(), 1);
    c.upsert(&entry("/a/c.log", 4, 1)).unwrap();
    assert_eq!(c.count().unwrap(), 2);
}

#[test]
fn postgres_settings_are_checked() {
    let pg = postgres();
    let err = |url: &str| PgSettings::new(url, None).unwrap_err().to_string();
    assert!(
        err("postgres://u:secret@127.0.0.1/x").contains("password_file"),
        "a password in the URL is refused"
    );
    // TLS settings that cannot work are named at once (TLS itself: tests/catalog_tls.rs).
    assert!(err("postgres://127.0.0.1/x?sslrootcert=/ca.pem").contains("sslmode=verify-full"));
    assert!(err("postgres://127.0.0.1/x?sslmode=prefer").contains("plain text"));
    let missing = err("postgres://127.0.0.1/x?sslmode=verify-full&sslrootcert=/nonexistent.pem");
    assert!(
        missing.contains("TLS") && missing.contains("/nonexistent.pem"),
        "{missing}"
    );
    assert!(err("nonsense://").contains("[catalog] url"));
    // A wrong password: refused with PostgreSQL's reason.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("pw"), "wrong\n").unwrap();
    let url = format!("postgres://logarchive@127.0.0.1:{}/postgres", pg.port);
    let bad = PgSettings::new(&url, Some(&d.path().join("pw"))).unwrap();
    let e = Catalog::connect(&Location::Postgres(Box::new(bad)))
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("password authentication failed"), "{e}");
    // Nothing listening: unavailable, said at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gone = PgSettings::new(&format!("postgres://logarchive@127.0.0.1:{port}/x"), None).unwrap();
    let e = Catalog::connect(&Location::Postgres(Box::new(gone)))
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("unavailable"), "{e}");
}

#[test]
fn server_check_probes_the_catalog_and_changes_nothing() {
    use logarchive_server::config::{Overrides, ServerConfigFile, ServerSettings};
    let d = tempfile::tempdir().unwrap();
    let settings = |catalog: &str| {
        let file: ServerConfigFile = toml::from_str(catalog).unwrap();
        ServerSettings::resolve(
            file,
            Overrides {
                data: Some(d.path().join("data")),
                ftp_listen: Some("127.0.0.1:0".parse().unwrap()),
                web_listen: Some("127.0.0.1:0".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let pg = postgres();
    let url = pg.database("checked").unwrap();
    let good = format!(
        "[catalog]\nurl = \"{url}\"\npassword_file = \"{}\"",
        pg.password_file().display()
    );
    assert_eq!(
        logarchive_server::check::check(&settings(&good)),
        Vec::<String>::new()
    );
    assert_eq!(
        pg.sql_in(
            "checked",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        .unwrap(),
        "0",
        "--check migrates nothing"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let problems = logarchive_server::check::check(&settings(&format!(
        "[catalog]\nurl = \"postgres://logarchive@127.0.0.1:{port}/x\""
    )));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("[catalog]") && problems[0].contains("unavailable"),
        "{problems:?}"
    );
    let problems = logarchive_server::check::check(&settings(&format!(
        "{good}\n[storage]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:{port}\""
    )));
    // The catalog with an S3 store (whose segment maps it then holds too) is fine; the
    // bucket out of reach is the one problem.
    assert!(
        problems.len() == 1 && problems[0].starts_with("[storage]"),
        "{problems:?}"
    );
    // Unknown keys are named.
    let e = toml::from_str::<ServerConfigFile>("[catalog]\nuri = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("uri"), "{e}");
}
