//! The audit trail on a real server: account changes through the API and the admin page,
//! web logins, what FTP clients delete and rename, read back through `/api/v1/audit` and the
//! page, filtered and paged; old rows deleted at `[audit] keep`.

mod support;

use std::time::Duration;
use support::*;

/// `GET /api/v1/audit?{query}` as the admin (basic auth).
async fn audit_page(s: &Server, query: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(s.url(&format!("/api/v1/audit?{query}")))
        .basic_auth("admin", Some(&s.admin_password))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The trail as the API shows it, once `want` rows match `query`.
async fn trail(s: &Server, query: &str, want: usize) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        rows = audit_page(s, query).await["events"]
            .as_array()
            .unwrap()
            .clone();
        if rows.len() >= want {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{query}: {} rows, not {want}: {rows:#?}", rows.len());
}

fn one<'a>(rows: &'a [serde_json::Value], action: &str) -> &'a serde_json::Value {
    let found: Vec<_> = rows.iter().filter(|r| r["action"] == action).collect();
    assert_eq!(found.len(), 1, "one {action} in {rows:#?}");
    found[0]
}

#[tokio::test]
async fn account_changes_logins_and_ftp_deletions_are_in_the_trail() {
    let s = Server::start(|a| {
        write(&a.join("agent01/Logs/a.log"), b"a\n");
        write(&a.join("agent01/Logs/b.log"), b"b\n");
        std::fs::create_dir_all(a.join("agent01/Old")).unwrap();
    })
    .await;
    let http = reqwest::Client::new();
    let admin = |r: reqwest::RequestBuilder| r.basic_auth("admin", Some(s.admin_password.clone()));

    // Web: a login through the form, a wrong password (with a name that is markup).
    let _web = s.admin().await;
    let bad = Web::new(&s.base);
    assert_eq!(
        bad.login("<img src=x>", "wrong password").await.status(),
        401
    );

    // Accounts through the API.
    let r = admin(http.post(s.url("/api/v1/users")))
        .json(
            &serde_json::json!({"name": "cleaner", "role": "agent", "home": "/agent01",
            "rights": "list,read,rename,delete"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    let pw = v["password"].as_str().unwrap().to_string();
    let r = admin(http.patch(s.url("/api/v1/users/cleaner")))
        .json(&serde_json::json!({"upload_limit": "2 MiB/s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // FTP, by a stock client (curl's quote commands): a rename, a deletion, a folder removed;
    // then a wrong password.
    let port = s.running.ftp.local_addr().port();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--user", &format!("cleaner:{pw}")])
            .args(["-Q", "RNFR /Logs/a.log", "-Q", "RNTO /Logs/a-kept.log"])
            .args(["-Q", "DELE /Logs/b.log", "-Q", "RMD /Old"])
            .arg(format!("ftp://127.0.0.1:{port}/"))
            .output()
            .expect("curl (./test.sh installs it)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.ftp("cleaner", "not the password").await.is_err());

    let r = admin(http.post(s.url("/api/v1/users/cleaner/password")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = admin(http.delete(s.url("/api/v1/users/cleaner")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let rows = trail(&s, "", 10).await;
    let login = one(&rows, "web.login");
    assert_eq!(login["actor"], "admin");
    assert_eq!(login["via"], "web");
    assert_eq!(login["ip"], "127.0.0.1");
    assert!(login["server"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{}", s.running.web_addr.port())));
    assert_eq!(one(&rows, "web.login_failed")["actor"], "<img src=x>");
    let add = one(&rows, "account.add");
    assert_eq!(
        (&add["actor"], &add["target"]),
        (&"admin".into(), &"cleaner".into())
    );
    assert!(add["detail"]
        .as_str()
        .unwrap()
        .contains("rights list,read,rename,delete"));
    let change = one(&rows, "account.change");
    assert_eq!(
        change["detail"], "upload_limit: unlimited -> 2.0 MiB/s",
        "{change}"
    );
    let rename = one(&rows, "file.rename");
    assert_eq!(
        (
            &rename["actor"],
            &rename["via"],
            &rename["target"],
            &rename["detail"]
        ),
        (
            &"cleaner".into(),
            &"ftp".into(),
            &"/agent01/Logs/a.log".into(),
            &"to /agent01/Logs/a-kept.log".into()
        )
    );
    assert_eq!(rename["ip"], "127.0.0.1", "the FTP client's address");
    assert_eq!(one(&rows, "file.delete")["target"], "/agent01/Logs/b.log");
    assert_eq!(one(&rows, "folder.remove")["ip"], "127.0.0.1");
    assert_eq!(one(&rows, "folder.remove")["target"], "/agent01/Old");
    let ftp_failed = one(&rows, "ftp.login_failed");
    assert_eq!(
        (&ftp_failed["actor"], &ftp_failed["ip"]),
        (&"cleaner".into(), &"127.0.0.1".into())
    );
    assert!(
        !ftp_failed.to_string().contains("not the password"),
        "never a password"
    );
    assert_eq!(one(&rows, "account.password")["target"], "cleaner");
    assert_eq!(one(&rows, "account.remove")["target"], "cleaner");
    // Newest first.
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");

    // Filters: a group of actions, an account, a folder's paths.
    let accounts = trail(&s, "action=account", 4).await;
    assert_eq!(accounts.len(), 4, "{accounts:#?}");
    assert!(accounts
        .iter()
        .all(|r| r["action"].as_str().unwrap().starts_with("account.")));
    let by_cleaner = trail(&s, "who=cleaner", 4).await;
    assert_eq!(by_cleaner.len(), 4, "{by_cleaner:#?}");
    let below = trail(&s, "target=%2Fagent01%2FLogs%2F", 2).await;
    assert_eq!(below.len(), 2, "{below:#?}");
    // A `_` in a folder filter is a character, not a wildcard.
    let none = audit_page(&s, "target=%2Fagent0_%2F").await;
    assert_eq!(none["events"].as_array().unwrap().len(), 0);

    // Pages: `next_before` leads on, without overlap, to the end.
    let mut seen = Vec::new();
    let mut before = String::new();
    loop {
        let v = audit_page(&s, &format!("limit=3{before}")).await;
        seen.extend(
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_i64().unwrap()),
        );
        match v["next_before"].as_i64() {
            Some(b) => before = format!("&before={b}"),
            None => break,
        }
    }
    let all = trail(&s, "limit=1000", 10).await;
    assert_eq!(
        seen,
        all.iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    );

    // Administrators only.
    s.add_user("viewer1", logarchive_server::users::Role::Viewer);
    let r = http
        .get(s.url("/api/v1/audit"))
        .basic_auth("viewer1", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        http.get(s.url("/api/v1/audit"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let viewer = s.login("viewer1", PASSWORD).await;
    assert_eq!(viewer.text("/admin/audit").await.0, 403);

    // The page: the rows, markup shown as text.
    let web = s.admin().await;
    let (status, page) = web.text("/admin/audit?action=web").await;
    assert_eq!(status, 200);
    assert!(page.contains("web.login_failed"), "{page}");
    assert!(
        page.contains("&#60;img src=x&#62;") || page.contains("&lt;img src=x&gt;"),
        "{page}"
    );
    assert!(!page.contains("<img src=x>"));
    assert!(!page.contains("account.add"), "filtered out");
    let (_, page) = web.text("/admin/audit?limit=2").await;
    assert!(page.contains("id=\"older\""), "a link to older rows");
}

#[tokio::test]
async fn the_trail_outlives_a_restart_and_rows_older_than_keep_are_deleted() {
    let data = tempfile::tempdir().unwrap();
    let mut settings = support::settings(data.path());
    let first = logarchive_server::start(&settings).await.unwrap();
    let admin_password = first.initial_admin_password.clone().unwrap();
    let web = Web::new(&format!("http://{}", first.web_addr));
    assert_eq!(web.login("admin", &admin_password).await.status(), 303);
    first.shutdown().await;
    // A row from long ago, as an older server would have left it.
    let db = rusqlite::Connection::open(data.path().join("catalog.db")).unwrap();
    let year_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 365 * 86_400_000;
    db.execute(
        "INSERT INTO audit (at_ms, server, actor, via, ip, action, target, detail) \
         VALUES (?1, 'old', 'admin', 'web', NULL, 'web.login', 'admin', '')",
        [year_ago],
    )
    .unwrap();
    drop(db);
    settings.audit.keep = Duration::from_secs(30 * 86_400);
    let second = logarchive_server::start(&settings).await.unwrap();
    let s = second.web_addr;
    let http = reqwest::Client::new();
    let t = std::time::Instant::now();
    loop {
        let v: serde_json::Value = http
            .get(format!("http://{s}/api/v1/audit"))
            .basic_auth("admin", Some(&admin_password))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = v["events"].as_array().unwrap();
        let servers: Vec<&str> = rows.iter().map(|r| r["server"].as_str().unwrap()).collect();
        // The first server's login (recorded before its shutdown) stays; the old row goes.
        if !servers.contains(&"old") {
            assert_eq!(rows.len(), 1, "{rows:#?}");
            assert_eq!(rows[0]["action"], "web.login");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the old row stays: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.shutdown().await;
}
