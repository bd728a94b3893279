//! The web interface and JSON API over real sockets: a real server (FTP + web), a real SQLite
//! catalog, files on disk.

mod support;

use logarchive_ftp::client::{UploadMode, UploadOptions};
use logarchive_server::users::Role;
use std::time::{Duration, Instant};
use support::*;

fn log_lines(n: usize) -> String {
    (1..=n)
        .map(|i| format!("2024-07-23 10:00:00 INFO request {i} done\n"))
        .collect()
}

/// A script polling the API with basic auth pays one argon2 check, not one per request; a
/// password change, a disabled account or a wrong password are still refused at once.
#[tokio::test]
async fn basic_auth_is_checked_once_and_never_outlives_a_change() {
    let s = Server::start(|_| {}).await;
    s.add_user("viewer1", Role::Viewer);
    let http = reqwest::Client::new();
    let get = |pw: &str| {
        http.get(s.url("/api/v1/browse"))
            .basic_auth("viewer1", Some(pw))
            .send()
    };
    let checks = || async {
        let (_, m) = Web::new(&s.base).text("/metrics").await;
        m.lines()
            .find_map(|l| l.strip_prefix("logarchive_web_password_checks_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no password check counter in:\n{m}"))
    };
    let before = checks().await;
    for _ in 0..20 {
        assert_eq!(get(PASSWORD).await.unwrap().status(), 200);
    }
    assert_eq!(checks().await - before, 1, "20 requests, one argon2 check");
    assert_eq!(get("wrong password").await.unwrap().status(), 401);

    // A new password: the old one is refused at once, the new one works.
    s.running
        .users
        .update(
            "viewer1",
            logarchive_server::users::UserUpdate {
                password: Some("a brand new password".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(get(PASSWORD).await.unwrap().status(), 401);
    assert_eq!(get("a brand new password").await.unwrap().status(), 200);
    // Disabled: refused although the credentials were just verified.
    s.disable("viewer1");
    assert_eq!(get("a brand new password").await.unwrap().status(), 401);
}

/// An agent's parallel connections and reconnects pay one argon2 check a minute, not one per
/// FTP login; a wrong password, a new password or a disabled account are still refused at once.
#[tokio::test]
async fn ftp_logins_pay_argon2_once_and_never_outlive_a_change() {
    let s = Server::start(|_| {}).await;
    s.add_user("agent01", Role::Agent);
    let checks = || async {
        let (_, m) = Web::new(&s.base).text("/metrics").await;
        m.lines()
            .find_map(|l| l.strip_prefix("logarchive_password_checks_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no password check counter in:\n{m}"))
    };
    let before = checks().await;
    for _ in 0..5 {
        let c = s.ftp("agent01", PASSWORD).await.expect("login");
        c.quit().await.expect("quit");
    }
    assert_eq!(checks().await - before, 1, "5 logins, one argon2 check");
    assert!(s.ftp("agent01", "wrong password").await.is_err());
    assert_eq!(checks().await - before, 2, "a wrong password is checked");
    s.running
        .users
        .update(
            "agent01",
            logarchive_server::users::UserUpdate {
                password: Some("a brand new password".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        s.ftp("agent01", PASSWORD).await.is_err(),
        "the old password passed after a change"
    );
    s.ftp("agent01", "a brand new password")
        .await
        .expect("login with the new password")
        .quit()
        .await
        .expect("quit");
    s.disable("agent01");
    assert!(
        s.ftp("agent01", "a brand new password").await.is_err(),
        "a disabled account logged in"
    );
}

#[tokio::test]
async fn login_sessions_roles_and_lockout() {
    let s = Server::start_with(|_| {}, |c| c.web.login_max_failures = 3).await;
    s.add_user("viewer1", Role::Viewer);
    s.add_user("agent01", Role::Agent);
    let anon = Web::new(&s.base);
    // Anonymous: pages go to the login form, the API asks for credentials.
    let r = anon.get("/").send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let r = anon.get("/api/v1/browse").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));

    // A session cookie that scripts cannot read and other sites cannot send.
    let v = Web::new(&s.base);
    let r = v.login("viewer1", PASSWORD).await;
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "no TLS here: {cookie}");
    assert_eq!(v.text("/browse").await.0, 200);
    // A viewer reads but does not administer.
    assert_eq!(v.text("/admin/users").await.0, 403);
    assert_eq!(v.get("/api/v1/users").send().await.unwrap().status(), 403);
    assert_eq!(
        v.get("/api/v1/sessions").send().await.unwrap().status(),
        403
    );
    let (_, home) = v.text("/").await;
    assert!(
        !home.contains("/admin/users"),
        "the viewer sees no admin link"
    );

    // Agents have no web access at all.
    assert_eq!(
        Web::new(&s.base).login("agent01", PASSWORD).await.status(),
        401
    );

    // Basic auth on the API.
    let r = anon
        .http
        .get(s.url("/api/v1/browse"))
        .basic_auth("viewer1", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Disabling the account ends its open session at once.
    s.disable("viewer1");
    assert_eq!(v.get("/api/v1/browse").send().await.unwrap().status(), 401);

    // Logging out ends the session on the server, not only in the browser.
    let a = s.admin().await;
    let csrf = a.csrf().await;
    let stolen = a.cookie.lock().unwrap().clone().unwrap();
    let r = a
        .post("/logout")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = anon
        .http
        .get(s.url("/api/v1/browse"))
        .header("cookie", &stolen)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a logged-out session must be dead");

    // Lockout: after 3 failures even the right password is refused for a while.
    let w = Web::new(&s.base);
    for _ in 0..3 {
        assert_eq!(w.login("admin", "wrong").await.status(), 401);
    }
    let r = w.login("admin", &s.admin_password).await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("Too many failed logins"));
    // Basic auth shares the lockout.
    let r = anon
        .http
        .get(s.url("/api/v1/browse"))
        .basic_auth("admin", Some(&s.admin_password))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn parallel_web_guesses_are_counted_before_any_password_is_checked() {
    let s = Server::start_with(
        |_| {},
        |c| {
            c.web.login_max_failures = 5;
            // All 200 at once from one address: the lockout is under test, not the connection cap.
            c.web.max_connections_per_address = 1000;
        },
    )
    .await;
    let checks = || async {
        let (_, m) = Web::new(&s.base).text("/metrics").await;
        m.lines()
            .find_map(|l| l.strip_prefix("logarchive_web_password_checks_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no password check counter in:\n{m}"))
    };
    let before = checks().await;
    let guesses: Vec<_> = (0..200)
        .map(|i| {
            let base = s.base.clone();
            tokio::spawn(async move {
                Web::new(&base)
                    .login("admin", &format!("guess {i}"))
                    .await
                    .status()
            })
        })
        .collect();
    for g in guesses {
        let status = g.await.unwrap();
        assert!(status == 401 || status == 429, "{status}");
    }
    let checked = checks().await - before;
    assert!(
        checked <= 5,
        "{checked} of 200 parallel guesses had their password checked"
    );
    let r = Web::new(&s.base).login("admin", &s.admin_password).await;
    assert_eq!(
        r.status(),
        429,
        "the right password after the guesses is refused too"
    );
}

#[tokio::test]
async fn forms_need_the_csrf_token_and_the_same_origin() {
    let s = Server::start(|_| {}).await;
    let a = s.admin().await;
    let add = |csrf: Option<&str>| {
        let mut f = vec![("name", "viewer2"), ("role", "viewer")];
        if let Some(c) = csrf {
            f.push(("csrf", c));
        }
        a.post("/admin/users").form(&f)
    };
    assert_eq!(add(None).send().await.unwrap().status(), 403);
    assert_eq!(add(Some("forged")).send().await.unwrap().status(), 403);
    let csrf = a.csrf().await;
    let r = add(Some(&csrf))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(s.running.users.get("viewer2").is_none());
    // The API with a cookie needs the token in a header.
    let r = a
        .post("/api/v1/users")
        .json(&serde_json::json!({"name": "viewer2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = add(Some(&csrf)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Added viewer2. Password (shown once): "),
        "{html}"
    );
    assert!(s.running.users.get("viewer2").is_some());
    // The page refuses to remove the account that is using it, and says why.
    let r = a
        .post("/admin/users/admin/delete")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the admin page, with the error on it");
    let html = r.text().await.unwrap();
    assert!(
        html.contains("you cannot remove your own account"),
        "{html}"
    );
    assert!(s.running.users.get("admin").is_some());
    // A login form posted from another site is refused too.
    let r = Web::new(&s.base)
        .http
        .post(s.url("/login"))
        .header("origin", "http://evil.example")
        .form(&[
            ("username", "admin"),
            ("password", s.admin_password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn a_new_password_ends_the_sessions_opened_with_the_old_one() {
    let s = Server::start(|_| {}).await;
    s.add_user("viewer1", Role::Viewer);
    s.add_user("agent01", Role::Agent);
    let v1 = s.login("viewer1", PASSWORD).await;
    let v2 = s.login("viewer1", PASSWORD).await;
    let mut ftp = s.ftp("agent01", PASSWORD).await.unwrap();
    ftp.ensure_dir("/before").await.unwrap();
    let ok = |w: &Web| {
        let r = w.get("/api/v1/browse");
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ok(&v1).await, 200);

    // Changed by another process (the CLI writes the users file): both web sessions and the
    // FTP session end at their next request or command.
    let other = logarchive_server::users::UserDb::open(s.data.path().join("users.toml")).unwrap();
    for name in ["viewer1", "agent01"] {
        other
            .update(
                name,
                logarchive_server::users::UserUpdate {
                    password: Some("a brand new password".into()),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    s.eventually("the server to read the changed file", || {
        s.running.users.get("viewer1").filter(|r| {
            logarchive_server::users::verify_password(&r.password, "a brand new password")
        })
    })
    .await;
    assert_eq!(ok(&v1).await, 401);
    assert_eq!(ok(&v2).await, 401);
    assert!(
        ftp.ensure_dir("/after").await.is_err(),
        "the FTP session opened with the old password goes on"
    );

    // The admin changes their own password on the API: their other session ends, the one that
    // made the change goes on.
    let a1 = s.admin().await;
    let a2 = s.admin().await;
    let csrf = a1.csrf().await;
    let r = a1
        .post("/api/v1/users/admin/password")
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ok(&a1).await, 200, "the session that changed it goes on");
    assert_eq!(ok(&a2).await, 401, "the admin's other session ends");
}

#[tokio::test]
async fn admin_api_manages_users_effective_at_once_for_ftp() {
    let s = Server::start(|_| {}).await;
    let api = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| r.basic_auth("admin", Some(s.admin_password.clone()));
    // Add an agent with a generated password: FTP accepts it at once.
    let r = auth(api.post(s.url("/api/v1/users")))
        .json(&serde_json::json!({"name": "agent07", "role": "agent", "upload_limit": "2 MiB/s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    let pw = v["password"].as_str().unwrap().to_string();
    assert_eq!(v["user"]["home"], "/agent07");
    assert_eq!(v["user"]["upload_limit"], 2 << 20);
    assert!(v["user"].get("password").is_none(), "never the hash");
    let c = s
        .ftp("agent07", &pw)
        .await
        .expect("FTP login with the new account");
    // Its session shows among the live FTP sessions.
    let sessions: Vec<serde_json::Value> = auth(api.get(s.url("/api/v1/sessions")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        sessions
            .iter()
            .any(|x| x["user"] == "agent07"
                && x["address"].as_str().unwrap().starts_with("127.0.0.1:")),
        "{sessions:?}"
    );
    drop(c);
    // Invalid input is a 400 with a message, and changes nothing.
    let r = auth(api.patch(s.url("/api/v1/users/agent07")))
        .json(&serde_json::json!({"rights": "list,fly"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("fly"));
    let r = auth(api.patch(s.url("/api/v1/users/agent07")))
        .json(&serde_json::json!({"allowed_ips": "10.9.9.0/24", "download_limit": "1 MiB/s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        s.ftp("agent07", &pw).await.is_err(),
        "127.0.0.1 is no longer allowed"
    );
    let r = auth(api.patch(s.url("/api/v1/users/agent07")))
        .json(&serde_json::json!({"allowed_ips": "any", "enabled": "false"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(s.ftp("agent07", &pw).await.is_err(), "disabled");
    // Password reset: the old one stops working.
    let r = auth(api.patch(s.url("/api/v1/users/agent07")))
        .json(&serde_json::json!({"enabled": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = auth(api.post(s.url("/api/v1/users/agent07/password")))
        .send()
        .await
        .unwrap();
    let new_pw = r.json::<serde_json::Value>().await.unwrap()["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(s.ftp("agent07", &pw).await.is_err());
    assert!(s.ftp("agent07", &new_pw).await.is_ok());
    let list: Vec<serde_json::Value> = auth(api.get(s.url("/api/v1/users")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 2);
    // Removing: gone for FTP (its open session too), 404 afterwards; one cannot remove oneself.
    let mut live = s.ftp("agent07", &new_pw).await.unwrap();
    live.pwd().await.unwrap();
    let r = auth(api.delete(s.url("/api/v1/users/agent07")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let t = Instant::now();
    while live.pwd().await.is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the removed account's open FTP session still answers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.ftp("agent07", &new_pw).await.is_err());
    let r = auth(api.get(s.url("/api/v1/users/agent07")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = auth(api.delete(s.url("/api/v1/users/admin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = auth(api.post(s.url("/api/v1/users")))
        .json(&serde_json::json!({"name": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn traversal_attempts_never_leave_the_archive() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-OUTSIDE\n").unwrap();
    let secret_dir = outside.path().to_path_buf();
    let s = Server::start(move |a| {
        write(&a.join("agent01/Logs/a.txt"), b"inside\n");
        std::os::unix::fs::symlink(&secret, a.join("agent01/Logs/link.txt")).unwrap();
        std::os::unix::fs::symlink(&secret_dir, a.join("agent01/dirlink")).unwrap();
        write(&a.join("agent01/.logarchive/status.json"), b"{}");
        write(
            &a.join("agent01/Logs/.b.txt.logarchive-tmp"),
            b"partial TOP-SECRET-OUTSIDE",
        );
    })
    .await;
    let a = s.admin().await;
    let corpus = [
        "/../secret.txt",
        "/agent01/../../secret.txt",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/agent01/%2e%2e/%2e%2e/etc/passwd",
        "/agent01%2f..%2f..%2fetc%2fpasswd",
        "/agent01%2F..%2F..%2Fetc%2Fpasswd",
        "/%2fetc%2fpasswd",
        "//etc/passwd",
        "/agent01/Logs/link.txt",
        "/agent01/dirlink/secret.txt",
        "/agent01/dirlink",
        "/agent01/.logarchive/status.json",
        "/agent01/Logs/.b.txt.logarchive-tmp",
        "/agent01/Logs/a.txt%00.png",
        "/agent01/Logs/..%5c..%5csecret.txt",
        "/agent01/Logs/%252e%252e/a.txt",
    ];
    for p in corpus {
        for prefix in [
            "/view",
            "/download",
            "/browse",
            "/api/v1/view",
            "/api/v1/download",
            "/api/v1/browse",
        ] {
            // Sent raw: the client must not normalise the dots away.
            let url = format!("{prefix}{p}");
            let r = a.get(&url).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert!(
                !body.contains("TOP-SECRET") && !body.contains("root:x:0"),
                "{url} leaked: {status} {body}"
            );
            assert!(
                matches!(status, 400 | 404)
                    || (prefix.contains("browse") && status == 200 && p == "//etc/passwd"),
                "{url}: {status}"
            );
        }
    }
    // Hidden files are not listed either.
    let (_, listing) = a.text("/api/v1/browse/agent01/Logs").await;
    assert!(
        listing.contains("a.txt") && !listing.contains("tmp") && !listing.contains("link"),
        "{listing}"
    );
    let (_, root) = a.text("/api/v1/browse/agent01").await;
    assert!(!root.contains(".logarchive"), "{root}");
}

#[tokio::test]
async fn hostile_names_statuses_and_contents_render_inert() {
    const XSS: [&str; 4] = [
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(2)>",
        "'><svg onload=alert(3)>",
        "javascript:alert(4)",
    ];
    let s = Server::start(|a| {
        for (i, x) in XSS.iter().enumerate() {
            let name = x.replace('/', "_");
            write(
                &a.join(format!("agent01/{name}/{name}.log")),
                format!("ERROR {x} line {i}\n").as_bytes(),
            );
        }
        let status = serde_json::json!({
            "agent_id": XSS[0], "host": XSS[1], "last_error": XSS[2], "version": XSS[0],
            "updated_at_ms": 1, "backlog_files": 1, "backlog_bytes": 2,
        });
        write(
            &a.join("agent01/.logarchive/status.json"),
            status.to_string().as_bytes(),
        );
        write(
            &a.join(format!("{}/x.log", XSS[2].replace('/', "_"))),
            b"x\n",
        );
    })
    .await;
    let a = s.admin().await;
    let mut pages = vec![
        "/".to_string(),
        "/browse/agent01".to_string(),
        "/search?q=.log".to_string(),
        "/search?content=alert&q=".to_string(),
        "/admin/users".to_string(),
    ];
    let l: serde_json::Value = a
        .get("/api/v1/search?q=.log&limit=100")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for f in l["files"].as_array().unwrap() {
        let p = f["path"].as_str().unwrap();
        let enc: String = p
            .split('/')
            .filter(|c| !c.is_empty())
            .map(|c| format!("/{}", urlencode(c)))
            .collect();
        pages.push(format!("/view{enc}"));
        let dir = &enc[..enc.rfind('/').unwrap()];
        pages.push(format!("/browse{dir}"));
    }
    assert!(pages.len() > 8, "{pages:?}");
    for p in &pages {
        let (status, html) = a.text(p).await;
        assert_eq!(status, 200, "{p}: {html}");
        for x in XSS {
            if x.starts_with("javascript:") {
                assert!(!html.contains(&format!("href=\"{x}")), "{p}: {x}");
            } else {
                assert!(!html.contains(x), "{p} renders {x} unescaped");
            }
        }
        assert!(!html.contains("<script>alert"), "{p}");
    }
    // File shown inline is text with a sandbox, never HTML.
    let r = a
        .get(&format!(
            "/api/v1/download/agent01/{0}/{0}.log?inline=true",
            urlencode(&XSS[0].replace('/', "_"))
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.headers()["content-security-policy"], "sandbox");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A sparse 2 GiB log with marked lines at its start, middle and end.
fn big_sparse_log(path: &std::path::Path) -> u64 {
    const SIZE: u64 = 2 << 30;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(path).unwrap();
    f.set_len(SIZE).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(b"FIRST LINE\n", 0).unwrap();
    let mut mid = b"\nMIDDLE MARK ERROR here\n".to_vec();
    mid.extend(std::iter::repeat_n(b'm', 100));
    mid.push(b'\n');
    f.write_at(&mid, SIZE / 2).unwrap();
    let tail = b"\nsecond to last\nLAST LINE WARN\n";
    f.write_at(tail, SIZE - tail.len() as u64).unwrap();
    SIZE
}

#[tokio::test]
async fn the_viewer_pages_a_2_gib_file_by_offset() {
    let s = Server::start(|a| {
        big_sparse_log(&a.join("agent01/big.log"));
    })
    .await;
    let a = s.admin().await;
    let size: u64 = 2 << 30;
    let timed = |path: String| {
        let a = &a;
        async move {
            let t = Instant::now();
            let (status, body) = a.text(&path).await;
            (status, body, t.elapsed())
        }
    };
    let (st, end, took) = timed("/api/v1/view/agent01/big.log".into()).await;
    assert_eq!(st, 200);
    let end: serde_json::Value = serde_json::from_str(&end).unwrap();
    assert_eq!(end["end"], size);
    assert!(end["text"]
        .as_str()
        .unwrap()
        .ends_with("second to last\nLAST LINE WARN\n"));
    assert!(
        took < Duration::from_secs(2),
        "end of a 2 GiB file took {took:?}"
    );
    let (_, mid, took) = timed(format!(
        "/api/v1/view/agent01/big.log?offset={}",
        size / 2 + 1
    ))
    .await;
    let mid: serde_json::Value = serde_json::from_str(&mid).unwrap();
    assert_eq!(
        mid["offset"],
        size / 2 + 1,
        "starts at the line holding the offset"
    );
    assert!(mid["text"]
        .as_str()
        .unwrap()
        .starts_with("MIDDLE MARK ERROR here\n"));
    assert!(took < Duration::from_secs(2), "middle took {took:?}");
    let (_, start, _) = timed("/api/v1/view/agent01/big.log?offset=0".into()).await;
    let start: serde_json::Value = serde_json::from_str(&start).unwrap();
    assert_eq!(start["first_line"], 1);
    assert!(start["text"].as_str().unwrap().starts_with("FIRST LINE\n"));
    // The page: level colours, line anchors, paging links.
    let (st, html, _) = timed(format!("/view/agent01/big.log?offset={}", size / 2 + 1)).await;
    assert_eq!(st, 200);
    assert!(html.contains("class=\"ln lv-error\""), "levels coloured");
    assert!(html.contains("id=\"prev\"") && html.contains("id=\"next\""));
    let (_, html, _) = timed("/view/agent01/big.log".into()).await;
    assert!(
        html.contains("LAST LINE WARN")
            && html.contains("lv-warn")
            && html.contains("id=\"follow\"")
    );
}

#[tokio::test]
async fn line_numbers_and_paging_backwards() {
    let s = Server::start(|a| write(&a.join("agent01/l.log"), log_lines(30_000).as_bytes())).await;
    let a = s.admin().await;
    let (_, html) = a.text("/view/agent01/l.log?line=12345").await;
    assert!(
        html.contains("id=\"l12345\" data-n=\"12345\">2024-07-23 10:00:00 INFO request 12345 done"),
        "opens at the line"
    );
    let p: serde_json::Value = a
        .get("/api/v1/view/agent01/l.log")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = p["first_line"].as_u64().unwrap();
    let before = p["offset"].as_u64().unwrap();
    let q: serde_json::Value = a
        .get(&format!(
            "/api/v1/view/agent01/l.log?before={before}&ln={first}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(q["end"], before);
    let qtext = q["text"].as_str().unwrap();
    let last_line = qtext.lines().last().unwrap();
    assert_eq!(
        last_line,
        format!("2024-07-23 10:00:00 INFO request {} done", first - 1)
    );
    assert_eq!(
        q["first_line"].as_u64().unwrap() + qtext.lines().count() as u64,
        first
    );
}

#[tokio::test]
async fn downloads_with_ranges_etags_and_names() {
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let b2 = body.clone();
    let s = Server::start(move |a| write(&a.join("agent01/Logs/r\u{e9}sum\u{e9} \"x\".bin"), &b2))
        .await;
    let a = s.admin().await;
    let path = "/download/agent01/Logs/r%C3%A9sum%C3%A9%20%22x%22.bin";
    let r = a.get(path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cd.starts_with("attachment; filename=\"r_sum_ _x_.bin\""),
        "{cd}"
    );
    assert!(
        cd.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.bin"),
        "{cd}"
    );
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);
    let r = a
        .get(path)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/1000000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[1000..2000]);
    let r = a
        .get(path)
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[body.len() - 10..]);
    let r = a
        .get(path)
        .header("range", "bytes=5000000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */1000000");
    let r = a
        .get(path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // A range against another version of the file gets the whole (new) file.
    let r = a
        .get(path)
        .header("range", "bytes=0-9")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = a
        .get(path)
        .header("range", "bytes=0-9")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    // After an append the validator changes.
    s.append("agent01/Logs/r\u{e9}sum\u{e9} \"x\".bin", b"more")
        .await;
    let r = a
        .get(path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "1000004");
}

// The zip of a folder bigger than memory is tested against the real binary (its memory, not
// this test process's): crates/cli/tests/web_zip.rs.

#[tokio::test]
async fn a_folder_downloads_as_a_valid_zip_without_temporary_files() {
    let s = Server::start(|a| {
        write(
            &a.join("agent01/Logs/day0/a.log"),
            log_lines(1000).as_bytes(),
        );
        write(&a.join("agent01/Logs/small.txt"), b"small file\n");
        write(
            &a.join("agent01/Logs/.t.log.logarchive-tmp"),
            b"never in a zip\n",
        );
        write(&a.join("agent02/other.txt"), b"other agent\n");
    })
    .await;
    let a = s.admin().await;
    let r = a.get("/download/agent01/Logs").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("Logs.zip"));
    python_zip_check(
        &r.bytes().await.unwrap(),
        "names = sorted(z.namelist())\n\
         assert names == ['Logs/day0/a.log', 'Logs/small.txt'], names\n\
         assert z.read('Logs/small.txt') == b'small file\\n'\n\
         assert z.read('Logs/day0/a.log').count(b'\\n') == 1000\n",
    );
    // The whole archive is one zip too, its entries under `archive/`.
    let r = a.get("/download").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("archive.zip"));
    python_zip_check(
        &r.bytes().await.unwrap(),
        "names = sorted(z.namelist())\n\
         assert names == ['archive/agent01/Logs/day0/a.log', 'archive/agent01/Logs/small.txt', 'archive/agent02/other.txt'], names\n",
    );
}

/// Python's zipfile opens `zip` as valid (every CRC right), then runs `script` on it as `z`.
fn python_zip_check(zip: &[u8], script: &str) {
    let out = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(out.path(), zip).unwrap();
    let check = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\n{script}"
        ))
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test]
async fn search_by_name_agent_time_and_content() {
    let s = Server::start(|a| {
        write(
            &a.join("agent01/Logs/App/20240723/app.log"),
            log_lines(5000).as_bytes(),
        );
        write(
            &a.join("agent01/Logs/App/20240723/db.log"),
            b"connect\nERROR Timeout on query 7\nerror timeout again\n",
        );
        write(&a.join("agent02/var/app.log"), b"ERROR Timeout elsewhere\n");
        write(
            &a.join("agent02/var/bin.dat"),
            b"binary\0ERROR Timeout hidden in binary\n",
        );
    })
    .await;
    let a = s.admin().await;
    let get = |q: &str| {
        let a = &a;
        let q = q.to_string();
        async move {
            let r = a.get(&format!("/api/v1/search?{q}")).send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let paths = |v: &serde_json::Value| {
        let mut p: Vec<String> = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect();
        p.sort();
        p
    };
    let (_, v) = get("q=app").await;
    assert_eq!(
        paths(&v),
        ["/agent01/Logs/App/20240723/app.log", "/agent02/var/app.log"]
    );
    let (_, v) = get("q=*.log&agent=agent02").await;
    assert_eq!(paths(&v), ["/agent02/var/app.log"]);
    let (_, v) = get("q=app&to=2000-01-01").await;
    assert!(paths(&v).is_empty(), "modified long after 2000");
    let (_, v) = get("q=app&from=2000-01-01").await;
    assert_eq!(paths(&v).len(), 2);
    let (st, v) = get("q=app&from=yesterday").await;
    assert_eq!(st, 400, "{v}");
    // Content: literal, any case by default; binary files skipped.
    let (_, v) = get("content=error%20timeout").await;
    let hits = v["content"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3, "{v}");
    assert_eq!(v["content"]["stats"]["matches"], 3);
    let h = hits
        .iter()
        .find(|h| h["path"] == "/agent01/Logs/App/20240723/db.log" && h["line"] == 2)
        .unwrap();
    assert_eq!(h["text"], "ERROR Timeout on query 7");
    assert_eq!(h["offset"], 8);
    assert_eq!(
        h["matches"],
        serde_json::json!([[0, 13]]),
        "where it matched"
    );
    // Context lines around a match.
    let (_, v) = get("content=timeout%20on&context=1").await;
    let h = &v["content"]["hits"][0];
    assert_eq!(
        (&h["before"], &h["after"]),
        (
            &serde_json::json!(["connect"]),
            &serde_json::json!(["error timeout again"])
        )
    );
    let (_, v) = get("content=request%2042%20done&context=2").await;
    let h = &v["content"]["hits"][0];
    assert_eq!(h["line"], 42);
    assert_eq!(h["before"][0], "2024-07-23 10:00:00 INFO request 40 done");
    assert_eq!(h["after"][1], "2024-07-23 10:00:00 INFO request 44 done");
    // A line's own time narrows the search by from/to, whenever its file was written;
    // a line without one goes by its file's time.
    assert_eq!(
        h["time_ms"],
        serde_json::json!(1_721_728_800_000i64),
        "2024-07-23 10:00:00 UTC"
    );
    let (_, v) = get("content=request%2042%20done&from=2024-07-23T10:00&to=2024-07-23T10:00").await;
    assert_eq!(v["content"]["stats"]["matches"], 1, "{v}");
    let (_, v) = get("content=request%2042%20done&to=2024-07-23T09:59").await;
    assert_eq!(v["content"]["stats"]["matches"], 0, "{v}");
    let (_, v) = get("content=timeout&to=2024-07-23").await;
    assert_eq!(
        v["content"]["stats"]["matches"], 0,
        "files written today: {v}"
    );
    let (_, v) = get("content=ERROR%20Timeout&case=true").await;
    assert_eq!(v["content"]["hits"].as_array().unwrap().len(), 2);
    let (_, v) = get("content=query%20%5Cd%2B&regex=true").await;
    assert_eq!(v["content"]["hits"].as_array().unwrap().len(), 1);
    let (_, v) = get("content=query%20%5Cd%2B").await;
    assert_eq!(
        v["content"]["hits"].as_array().unwrap().len(),
        0,
        "a literal by default"
    );
    let (st, _) = get("content=(unclosed&regex=true").await;
    assert_eq!(st, 400);
    // A pattern whose program is huge is refused with a clear message, not compiled for
    // seconds (`\w{3000}`: Unicode word characters, 3000 times).
    let t = Instant::now();
    let (st, v) = get("content=%5Cw%7B3000%7D&regex=true").await;
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("too complex"), "{v}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Bounded by the match count, and says so.
    let (_, v) = get("content=request&max_matches=10").await;
    assert_eq!(v["content"]["hits"].as_array().unwrap().len(), 10);
    assert_eq!(v["content"]["stats"]["hit_limit"], true);
    // Name filters narrow the content search.
    let (_, v) = get("content=timeout&agent=agent02").await;
    assert_eq!(v["content"]["hits"].as_array().unwrap().len(), 1);
    // The page streams the same hits, linking to the line in the viewer.
    let (_, html) = a.text("/search?content=timeout&q=db.log").await;
    assert!(
        html.contains("href=\"/view/agent01/Logs/App/20240723/db.log?around=8&#38;ln=2#l2\""),
        "{html}"
    );
    assert!(
        html.contains("2 matches in 1 file of 1 file searched ("),
        "{html}"
    );
    assert!(
        html.contains("<mark>timeout</mark>") || html.contains("<mark>Timeout</mark>"),
        "{html}"
    );
    assert!(html.contains("agent01</a>: 2"), "counts per agent: {html}");
    assert!(!html.contains(" in 0 ms"), "{html}");
    assert!(
        html.contains("limits: 1000 matches, 30 s."),
        "both bounds shown: {html}"
    );
    assert!(html.trim_end().ends_with("</html>"));
}

#[tokio::test]
async fn search_time_limit_is_kept_and_reported() {
    let s = Server::start_with(
        |a| {
            for i in 0..40 {
                write(
                    &a.join(format!("agent01/f{i}.log")),
                    log_lines(20_000).as_bytes(),
                );
            }
        },
        |c| {
            c.web.search_timeout = Duration::ZERO;
        },
    )
    .await;
    let a = s.admin().await;
    let v: serde_json::Value = a
        .get("/api/v1/search?content=request")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["content"]["stats"]["timed_out"], true,
        "{}",
        v["content"]["stats"]
    );
    let (_, html) = a.text("/search?content=request").await;
    assert!(html.contains("stopped after the time limit"));
}

#[tokio::test]
async fn follow_streams_what_an_agent_appends() {
    let s = Server::start(|_| {}).await;
    s.add_user("agent01", Role::Agent);
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("grow.log");
    std::fs::write(&local, "first line\n").unwrap();
    let mut c = s.ftp("agent01", PASSWORD).await.unwrap();
    c.upload_verified(&local, "/grow.log", None).await.unwrap();
    s.eventually("the file in the catalog", || {
        s.running.catalog.get("/agent01/grow.log").unwrap()
    })
    .await;
    let a = s.admin().await;
    let mut r = a
        .get("/api/v1/follow/agent01/grow.log?offset=11")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    std::fs::write(&local, "first line\nsecond line ERROR\nthird\n").unwrap();
    c.upload(
        &local,
        "/grow.log",
        UploadOptions::new(UploadMode::Append { local_offset: 11 }),
    )
    .await
    .unwrap();
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !got.contains("third") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, r.chunk())
            .await
            .expect("no follow event within 20 s")
            .unwrap()
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(got.contains("event: append"), "{got}");
    assert!(got.contains("second line ERROR\\nthird\\n"), "{got}");
    assert!(got.contains("\"offset\":11"), "{got}");
    // The metrics count what the FTP service did: one file archived, one append of 24 bytes.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, m) = Web::new(&s.base).text("/metrics").await;
        if m.contains("logarchive_files_archived_total 1\n")
            && m.contains("logarchive_appends_total 1\n")
            && m.contains("logarchive_bytes_appended_total 24\n")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never counted the upload:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_agents_status_document_cannot_claim_freshness_or_another_identity() {
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let s = Server::start(|a| {
        write(&a.join("agent01/a.log"), b"a\n");
        write(&a.join("agent02/b.log"), b"b\n");
        // Published an hour ago, claiming to be another agent and to be from the year 2100.
        let status = serde_json::json!({"agent_id": "agent02", "host": "web-01",
            "updated_at_ms": 4_102_444_800_000i64, "last_scan_ms": i64::MAX});
        let p = a.join("agent01/.logarchive/status.json");
        write(&p, status.to_string().as_bytes());
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        // i64::MIN, which once wrapped around into "fresh".
        let p = a.join("agent02/.logarchive/status.json");
        write(&p, br#"{"updated_at_ms": -9223372036854775808}"#);
    })
    .await;
    let a = s.admin().await;
    let (st, body) = a.text("/api/v1/agents").await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let agents = v["agents"].as_array().unwrap();
    let one = agents.iter().find(|x| x["agent"] == "agent01").unwrap();
    let written = hour_ago
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(one["status"]["agent_id"], "agent01");
    assert_eq!(one["status"]["claimed_agent_id"], "agent02");
    let updated = one["status"]["updated_at_ms"].as_i64().unwrap();
    assert!(
        (written - 1000..=written + 1000).contains(&updated),
        "{updated} vs {written}"
    );
    assert!(one["status"]["last_scan_ms"].as_i64().unwrap() <= updated + 1000);
    let two = agents.iter().find(|x| x["agent"] == "agent02").unwrap();
    assert_eq!(two["status"]["updated_at_ms"], 0);
    // Both are shown as stale on the dashboard.
    let (_, html) = a.text("/").await;
    assert_eq!(html.matches("class=\"stale\"").count(), 2, "{html}");
}

#[tokio::test]
async fn dashboard_browse_metrics_health_and_openapi() {
    let s = Server::start(|a| {
        write(&a.join("agent01/Logs/App/20240723/a.txt"), b"a\n");
        write(&a.join("agent01/Logs/App/20240724/b.txt"), b"bb\n");
        write(&a.join("agent02/c.txt"), b"ccc\n");
        let status = serde_json::json!({"agent_id": "agent01", "host": "web-01", "backlog_files": 4, "backlog_bytes": 4096, "last_error": "disk on fire", "updated_at_ms": 1,
            "max_lag_seconds": 75, "max_lag_bytes": 2048, "lagging": [{"path": "Logs/busy.log", "bytes": 2048, "seconds": 75}]});
        write(&a.join("agent01/.logarchive/status.json"), status.to_string().as_bytes());
    })
    .await;
    let a = s.admin().await;
    let (st, html) = a.text("/").await;
    assert_eq!(st, 200);
    for want in [
        "web-01",
        "disk on fire",
        "4 files, 4.0 KiB",
        // The worst lag of a file behind its writer, marked when over a minute.
        "class=\"behind\" title=\"Logs/busy.log: 75 s, 2.0 KiB\">75 s, 2.0 KiB",
        "agent02",
        "<svg class=\"chart\"",
        "<rect",
    ] {
        assert!(html.contains(want), "dashboard lacks {want}: {html}");
    }
    // Each agent's status page: its document and what the archive holds; no page for a
    // stranger.
    let (st, html) = a.text("/agents/agent01").await;
    assert_eq!(st, 200);
    for want in [
        "web-01",
        "disk on fire",
        "2 files, 5 B",
        "Logs/busy.log",
        "offline",
    ] {
        assert!(html.contains(want), "agent page lacks {want}: {html}");
    }
    let (st, html) = a.text("/agents/agent02").await;
    assert!(st == 200 && html.contains("1 file, 4 B"), "{st} {html}");
    assert_eq!(a.text("/agents/nobody").await.0, 404);
    let (_, html) = a.text("/browse/agent01/Logs/App").await;
    assert!(
        html.contains("id=\"counts\">2 folders</span>"),
        "no '0 files': {html}"
    );
    // The filter works without the page's script too.
    let (_, filtered) = a.text("/browse/agent01/Logs/App?filter=0724").await;
    assert!(
        filtered.contains("1 folder of 2 matching “0724”"),
        "{filtered}"
    );
    assert!(!filtered.contains("data-name=\"20240723\""), "{filtered}");
    // The roots answer with and without their slash.
    for root in [
        "/browse/",
        "/api/v1/browse/",
        "/download/",
        "/api/v1/download/",
    ] {
        let (st, body) = a.text(root).await;
        assert_eq!(st, 200, "{root}");
        assert!(body.contains("agent01"), "{root}: {body}");
    }
    assert!(html.contains("href=\"/browse/agent01/Logs/App/20240723\""));
    let (_, html) = a.text("/browse/agent01/Logs/App?sort=time").await;
    assert!(
        html.find("20240724").unwrap() < html.find("20240723").unwrap(),
        "newest folder first"
    );
    // A file's browse address opens the viewer.
    let r = a.get("/browse/agent01/c.txt").send().await.unwrap();
    assert_eq!(r.status(), 404, "agent01 has no c.txt");
    let r = a.get("/browse/agent02/c.txt").send().await.unwrap();
    assert_eq!(r.status(), 303);
    // Health and metrics need no login.
    let anon = Web::new(&s.base);
    assert_eq!(anon.text("/healthz").await, (200, "ready\n".to_string()));
    let (_, m) = anon.text("/metrics").await;
    for want in [
        "logarchive_catalog_files 3",
        "logarchive_ftp_sessions 0",
        "logarchive_search_seconds_count",
        "logarchive_web_logins_total 1",
        "logarchive_files_archived_total 0",
    ] {
        assert!(m.contains(want), "metrics lack {want}:\n{m}");
    }
    // Every route of the OpenAPI document answers (no 404/405): the document matches the code.
    let doc: serde_json::Value = a
        .get("/api/v1/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/search"));
    let search_params: Vec<&str> = doc["paths"]["/api/v1/search"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["q", "agent", "from", "to", "content", "regex", "case"] {
        assert!(
            search_params.contains(&p),
            "search lacks {p}: {search_params:?}"
        );
    }
    let api = reqwest::Client::new();
    for (path, item) in paths {
        let target = if path.contains("/browse/") {
            "agent01/Logs/App"
        } else {
            "agent01/Logs/App/20240723/a.txt"
        };
        let url = path.replace("{path}", target).replace("{name}", "admin");
        let url = if url.contains("follow") {
            format!("{url}?offset=0")
        } else {
            url
        };
        for method in item.as_object().unwrap().keys() {
            if method != "get" || url.contains("follow") {
                // State-changing routes are exercised by the admin test; follow never ends.
                continue;
            }
            let r = api
                .get(s.url(&url))
                .basic_auth("admin", Some(&s.admin_password))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{method} {url}");
            // What the document promises: a JSON body with the schema's required fields.
            let ok = &item[method]["responses"]["200"];
            let Some(schema) = ok["content"]["application/json"]["schema"].as_object() else {
                continue;
            };
            let body: serde_json::Value = r
                .json()
                .await
                .unwrap_or_else(|e| panic!("{url}: not JSON: {e}"));
            if let Some(name) = schema.get("$ref").and_then(|r| r.as_str()) {
                let name = name.rsplit('/').next().unwrap();
                let def = &doc["components"]["schemas"][name];
                for field in def["required"].as_array().into_iter().flatten() {
                    let field = field.as_str().unwrap();
                    assert!(
                        body.get(field).is_some(),
                        "{url}: {field} missing from {body}"
                    );
                }
            } else if schema.get("type").and_then(|t| t.as_str()) == Some("array") {
                assert!(body.is_array(), "{url}: not an array: {body}");
            }
        }
    }
}

#[tokio::test]
async fn https_from_the_same_certificate_as_ftps() {
    let certs = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let (c2, k2) = (cert.clone(), key.clone());
    let s = Server::start_with(|_| {}, move |c| c.tls = Some((c2, k2))).await;
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", s.running.web_addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", s.running.web_addr.port());
    let r = https.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000",
        "HSTS under TLS"
    );
    let r = https
        .post(format!("{base}/login"))
        .form(&[
            ("username", "admin"),
            ("password", s.admin_password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("__Host-logarchive_session=") && cookie.contains("; Secure"),
        "{cookie}"
    );
    let token = cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap();
    let browse = |cookies: String| {
        https
            .get(format!("{base}/api/v1/browse"))
            .header("cookie", cookies)
            .send()
    };
    let r = browse(format!("__Host-logarchive_session={token}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A second session cookie planted beside ours (first or last): no session at all.
    for cookies in [
        format!("__Host-logarchive_session=planted; __Host-logarchive_session={token}"),
        format!("__Host-logarchive_session={token}; __Host-logarchive_session=planted"),
        format!("logarchive_session={token}"),
    ] {
        let r = browse(cookies.clone()).await.unwrap();
        assert_eq!(r.status(), 401, "{cookies}");
    }
    // Plain HTTP on the HTTPS port is told, in plain HTTP, to use https; a silent client does
    // not block others.
    let silent = tokio::net::TcpStream::connect(s.running.web_addr)
        .await
        .unwrap();
    let r = Web::new(&format!("http://{}", s.running.web_addr))
        .get("/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("use https://"));
    let r = https.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "served while a handshake hangs");
    drop(silent);
}
