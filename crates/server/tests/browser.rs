//! The pages in a real headless Chromium (Debian `chromium` + `chromium-driver`, installed by
//! `.ci/run`), driven over WebDriver: log in, browse to a file, search by content and open a hit,
//! view and follow a growing file, download, add a user as admin. A screenshot of each page goes
//! to `target/browser-screenshots/`.
//!
//! Without chromedriver this test fails, unless `LOGARCHIVE_SKIP_BROWSER=1` says to skip it.

mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use logarchive_ftp::client::{UploadMode, UploadOptions};
use logarchive_ftp::rights::Right;
use logarchive_server::users::Role;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const WAIT: Duration = Duration::from_secs(20);

struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_chromedriver() -> Option<Driver> {
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let mut child = match Command::new(&bin)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("LOGARCHIVE_SKIP_BROWSER").as_deref() == Ok("1") {
                eprintln!("skipping the browser test: {bin}: {e}");
                return None;
            }
            panic!("{bin} not found ({e}): install chromium and chromium-driver (Debian), or set LOGARCHIVE_SKIP_BROWSER=1");
        }
    };
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("started successfully on port ").nth(1) {
            let port = rest.trim_end_matches('.').parse().unwrap();
            // Keep reading its output so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Some(Driver { child, port });
        }
    }
    panic!("chromedriver did not say which port it listens on");
}

fn screenshots() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn browser(driver: &Driver, downloads: &std::path::Path) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--no-first-run", "--password-store=basic"],
            "prefs": {
                "download.default_directory": downloads.to_str().unwrap(),
                "download.prompt_for_download": false,
            }
        }
    });
    let caps = caps.as_object().unwrap().clone().into_iter().collect();
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session in chromium")
}

/// The element `l` finds, once it is there.
async fn wait_for(c: &Client, l: Locator<'_>) -> fantoccini::elements::Element {
    c.wait().at_most(WAIT).for_element(l).await.unwrap()
}

async fn click(c: &Client, l: Locator<'_>) {
    c.find(l).await.unwrap().click().await.unwrap();
}

/// The archive (see [`archive`]) and a browser at its login page, reached from `/` (an anonymous
/// visitor is sent there).
async fn open(driver: &Driver) -> (Server, tempfile::TempDir, Client) {
    let s = archive().await;
    let downloads = tempfile::tempdir().unwrap();
    let c = browser(driver, downloads.path()).await;
    c.goto(&s.url("/")).await.unwrap();
    wait_for(&c, Locator::Id("username")).await;
    (s, downloads, c)
}

async fn wait_text(c: &Client, css: &str, want: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if t.contains(want) {
                    return t;
                }
            }
        }
        assert!(Instant::now() < deadline, "{css} never showed {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The archive both tests browse: a busy log with a later generation, a quiet one, and two
/// agents' status documents (agent01 online with an error, agent02 long gone).
async fn archive() -> Server {
    let lines: String = (1..=3000)
        .map(|i| {
            format!(
                "2024-07-23 10:{:02}:{:02} {} request {i} handled\n",
                i / 60 % 60,
                i % 60,
                if i % 100 == 0 { "ERROR" } else { "INFO" }
            )
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let s = Server::start(move |a| {
        write(&a.join("agent01/Logs/App/20240723/app.log"), lines.as_bytes());
        write(
            &a.join("agent01/Logs/App/20240723/app.log.~2~"),
            b"2024-07-23 11:00:00 INFO the next generation\n",
        );
        write(&a.join("agent01/Logs/App/20240723/other.log"), b"nothing here\n");
        let status = serde_json::json!({"agent_id": "agent01", "host": "web-01", "backlog_files": 0,
            "backlog_bytes": 0, "updated_at_ms": now, "last_error": "Logs/x.log: permission denied"});
        write(&a.join("agent01/.logarchive/status.json"), status.to_string().as_bytes());
        write(&a.join("agent02/Logs/old.log"), b"2024-07-01 00:00:00 INFO old\n");
        let status = serde_json::json!({"agent_id": "agent02", "host": "db-01", "updated_at_ms": 1});
        write(&a.join("agent02/.logarchive/status.json"), status.to_string().as_bytes());
    })
    .await;
    s.add_user("agent01", Role::Agent);
    s
}

async fn log_in(c: &Client, s: &Server, user: &str, password: &str) {
    c.goto(&s.url("/login")).await.unwrap();
    wait_for(c, Locator::Id("username"))
        .await
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    click(c, Locator::Id("login")).await;
    wait_text(c, "#agents", "agent01").await;
}

/// Runs `js` (a function body) in the page and returns what it returns.
async fn js(c: &Client, js: &str) -> serde_json::Value {
    c.execute(js, vec![]).await.unwrap()
}

/// Waits until `js` returns true.
async fn wait_js(c: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + WAIT;
    while js(c, script).await != serde_json::Value::Bool(true) {
        assert!(Instant::now() < deadline, "never true: {what} ({script})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lines of the viewer that are shown (not hidden by the level filter).
const SHOWN_LINES: &str = "return [...document.querySelectorAll('#log .ln')].filter(l => l.offsetParent !== null).map(l => l.textContent);";

#[tokio::test]
async fn a_session_in_chromium() {
    let Some(driver) = start_chromedriver() else {
        return;
    };
    let (s, downloads, c) = open(&driver).await;
    log_in(&c, &s, "admin", &s.admin_password).await;
    wait_text(&c, "#agents", "web-01").await;

    // The dashboard: who is online, and from an error to the agent's status.
    let online = wait_text(&c, "#agents tr[data-agent=agent01]", "online").await;
    assert!(online.contains("just now"), "{online}");
    wait_text(&c, "#agents tr[data-agent=agent02]", "offline").await;
    assert_eq!(
        c.find(Locator::Id("online-count"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "1"
    );
    click(&c, Locator::Css("#agents a.err-link")).await;
    wait_text(&c, "#last-error", "permission denied").await;
    wait_text(&c, "#fact-host", "web-01").await;
    c.goto(&s.url("/")).await.unwrap();
    wait_text(&c, "#agents", "web-01").await;

    // Browse from the dashboard down to a file.
    click(&c, Locator::LinkText("agent01")).await;
    for folder in ["Logs/", "App/", "20240723/"] {
        wait_for(&c, Locator::LinkText(folder))
            .await
            .click()
            .await
            .unwrap();
    }
    wait_text(&c, "#listing", "app.log").await;
    // A file's later generation is listed under it, with its number.
    let rows = js(
        &c,
        "return [...document.querySelectorAll('#listing tbody tr')].map(r => r.dataset.name);",
    )
    .await;
    assert_eq!(
        rows,
        serde_json::json!(["app.log", "app.log.~2~", "other.log"])
    );
    wait_text(&c, "#listing tr.gen", "generation 2").await;
    // Sorting by a column heading; again turns it around.
    click(&c, Locator::Css("#listing th a[href*='sort=size']")).await;
    wait_js(
        &c,
        "sorted by size",
        "return location.search.includes('sort=size&order=desc');",
    )
    .await;
    let rows = js(
        &c,
        "return [...document.querySelectorAll('#listing tbody tr')].map(r => r.dataset.name);",
    )
    .await;
    assert_eq!(
        rows,
        serde_json::json!(["app.log", "app.log.~2~", "other.log"]),
        "biggest first"
    );
    click(&c, Locator::Css("#listing th a[href*='sort=size']")).await;
    wait_js(
        &c,
        "sorted by size, smallest first",
        "return location.search.includes('sort=size&order=asc');",
    )
    .await;
    let rows = js(
        &c,
        "return [...document.querySelectorAll('#listing tbody tr')].map(r => r.dataset.name);",
    )
    .await;
    assert_eq!(
        rows,
        serde_json::json!(["other.log", "app.log", "app.log.~2~"]),
        "smallest first"
    );
    // The filter box hides what does not match as one types.
    c.find(Locator::Id("filter"))
        .await
        .unwrap()
        .send_keys("other")
        .await
        .unwrap();
    wait_js(&c, "filtered", "return [...document.querySelectorAll('#listing tbody tr')].filter(r => !r.hidden).map(r => r.dataset.name).join() === 'other.log';").await;
    // Folders tell what they hold.
    click(&c, Locator::Css(".crumbs a[href='/browse/agent01/Logs']")).await;
    let app = wait_text(&c, "#listing tr[data-name=App]", "3 files").await;
    assert!(app.contains("2024-") || app.contains("20"), "{app}");
    click(&c, Locator::LinkText("App/")).await;
    wait_for(&c, Locator::LinkText("20240723/"))
        .await
        .click()
        .await
        .unwrap();
    wait_text(&c, "#listing", "app.log").await;
    click(&c, Locator::LinkText("app.log")).await;
    let log = wait_text(&c, "#log", "request 3000 handled").await;
    assert!(
        !log.contains("request 1 handled"),
        "opens at the end (the last 64 KiB)"
    );
    wait_js(&c, "scrolled to the end", "return window.scrollY > 0 && window.innerHeight + window.scrollY >= document.body.scrollHeight - 2;").await;
    // The toolbar stays in view.
    let top = js(
        &c,
        "return document.getElementById('viewbar').getBoundingClientRect().top;",
    )
    .await;
    assert!(
        top.as_f64().unwrap().abs() < 1.0,
        "toolbar at the top: {top}"
    );
    // Level filter: errors only.
    c.find(Locator::Id("level"))
        .await
        .unwrap()
        .select_by_value("e")
        .await
        .unwrap();
    let shown = js(&c, SHOWN_LINES).await;
    let shown: Vec<String> = serde_json::from_value(shown).unwrap();
    assert!(
        !shown.is_empty() && shown.iter().all(|l| l.contains("ERROR")),
        "{shown:?}"
    );
    assert!(shown.iter().any(|l| l.contains("request 3000 handled")));
    c.find(Locator::Id("level"))
        .await
        .unwrap()
        .select_by_value("")
        .await
        .unwrap();
    // Find in the page: Enter goes to the next.
    c.find(Locator::Id("find"))
        .await
        .unwrap()
        .send_keys("request 29")
        .await
        .unwrap();
    let n = wait_text(&c, "#find-count", "of ").await;
    assert_eq!(n, "1 of 100", "requests 2900-2999, in the last page");
    c.find(Locator::Id("find"))
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    wait_text(&c, "#find-count", "2 of 100").await;
    let cur = wait_text(&c, "#log .found-cur", "request").await;
    assert!(cur.contains("request 29"), "{cur}");
    click(&c, Locator::Id("prev")).await;
    wait_text(&c, "#log", "request 1000 handled").await;
    shot(&c, "view").await;

    // Search by content and open a hit at its line.
    c.goto(&s.url("/search")).await.unwrap();
    wait_for(&c, Locator::Id("content"))
        .await
        .send_keys("request 25")
        .await
        .unwrap();
    c.find(Locator::Id("context"))
        .await
        .unwrap()
        .select_by_value("2")
        .await
        .unwrap();
    click(&c, Locator::Id("go")).await;
    // request 25, 250-259, 2500-2599: 111 matches, in one of the four files searched.
    wait_text(&c, "#search-stats", "111 matches in 1 file of 4").await;
    wait_text(&c, "#per-agent", "agent01: 111").await;
    let above = js(&c, "return document.getElementById('search-summary').getBoundingClientRect().top < document.getElementById('hits').getBoundingClientRect().top;").await;
    assert_eq!(
        above,
        serde_json::Value::Bool(true),
        "the summary shows above the hits"
    );
    let first = js(&c, "const h = document.querySelector('#hits li'); return [h.querySelector('mark').textContent, h.querySelectorAll('.cl').length];").await;
    assert_eq!(
        first,
        serde_json::json!(["request 25", 5]),
        "highlighted, two lines either side"
    );
    // The histogram narrows the time range.
    let bars = js(
        &c,
        "return document.querySelectorAll('#histogram a.bar').length;",
    )
    .await;
    assert!(bars.as_u64().unwrap() >= 2, "{bars}");
    js(&c, "document.querySelector('#histogram a.bar').dispatchEvent(new MouseEvent('click', {bubbles: true})); return null;").await;
    wait_js(&c, "narrowed to a bar's time", "return location.search.includes('from=2024-07-23T10') && document.getElementById('search-stats') !== null;").await;
    let narrowed = wait_text(&c, "#search-stats", "match").await;
    assert!(
        !narrowed.starts_with("111 "),
        "fewer matches in one bar's time: {narrowed}"
    );
    c.goto(&s.url("/search?content=request+2500+handled"))
        .await
        .unwrap();
    wait_text(&c, "#search-stats", "1 match in 1 file of 4").await;
    shot(&c, "search").await;
    click(&c, Locator::Css("#hits a")).await;
    let line = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("l2500"))
        .await
        .unwrap();
    assert!(line.text().await.unwrap().contains("request 2500 handled"));
    assert_eq!(c.current_url().await.unwrap().fragment(), Some("l2500"));
    // With the lines above it, in view below the toolbar.
    c.find(Locator::Id("l2480"))
        .await
        .expect("context above the hit");
    let pos = js(&c, "const r = document.getElementById('l2500').getBoundingClientRect(); return r.top > document.getElementById('viewbar').getBoundingClientRect().bottom && r.bottom < innerHeight;").await;
    assert_eq!(pos, serde_json::Value::Bool(true), "the hit is in view");

    // Follow a file while an agent appends to it.
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("grow.log");
    std::fs::write(&local, "started\n").unwrap();
    let mut ftp = s.ftp("agent01", PASSWORD).await.unwrap();
    ftp.upload_verified(&local, "/grow.log", None)
        .await
        .unwrap();
    s.eventually("grow.log in the catalog", || {
        s.running.catalog.get("/agent01/grow.log").unwrap()
    })
    .await;
    c.goto(&s.url("/view/agent01/grow.log")).await.unwrap();
    wait_for(&c, Locator::Id("follow"))
        .await
        .click()
        .await
        .unwrap();
    wait_text(&c, "#live", "live").await;
    // No need to wait for the stream: it starts from the offset the page was rendered at.
    std::fs::write(&local, "started\nERROR appended while following\n").unwrap();
    ftp.upload(
        &local,
        "/grow.log",
        UploadOptions::new(UploadMode::Append { local_offset: 8 }),
    )
    .await
    .unwrap();
    wait_text(&c, "#log", "appended while following").await;
    let appended = c.find(Locator::Css("#log .lv-error")).await.unwrap();
    assert!(appended
        .text()
        .await
        .unwrap()
        .contains("appended while following"));
    shot(&c, "follow").await;

    // Download.
    click(&c, Locator::Id("download")).await;
    let got = downloads.path().join("grow.log");
    let deadline = Instant::now() + WAIT;
    while std::fs::read(&got).ok().as_deref()
        != Some(b"started\nERROR appended while following\n".as_slice())
    {
        assert!(
            Instant::now() < deadline,
            "the download never arrived in {}",
            downloads.path().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Add a user as admin.
    c.goto(&s.url("/admin/users")).await.unwrap();
    wait_for(&c, Locator::Id("new-name"))
        .await
        .send_keys("viewer9")
        .await
        .unwrap();
    c.find(Locator::Id("new-role"))
        .await
        .unwrap()
        .select_by_value("viewer")
        .await
        .unwrap();
    click(&c, Locator::Id("add")).await;
    let notice = wait_text(&c, "#notice", "Added viewer9").await;
    let password = notice.rsplit(": ").next().unwrap().trim().to_string();
    assert!(s.running.users.get("viewer9").is_some());
    // Change its download limit in its row, and take the limit away again.
    let limit = c
        .find(Locator::Css("#user-viewer9 input[name=download_limit]"))
        .await
        .unwrap();
    limit.send_keys("1 MiB/s").await.unwrap();
    click(&c, Locator::Css("#user-viewer9 td.actions button")).await;
    wait_text(&c, "#notice", "Saved viewer9").await;
    assert_eq!(
        s.running.users.get("viewer9").unwrap().download_limit.0,
        1 << 20
    );
    shot(&c, "admin").await;
    c.find(Locator::Css("#user-viewer9 input[name=download_limit]"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    click(&c, Locator::Css("#user-viewer9 td.actions button")).await;
    wait_text(&c, "#notice", "Saved viewer9").await;
    assert_eq!(
        s.running.users.get("viewer9").unwrap().download_limit.0,
        0,
        "blank = unlimited"
    );
    // Rights are one checkbox each: take "read" away, and give it back.
    for (tick, want) in [(false, false), (true, true)] {
        let b = c
            .find(Locator::Css("#user-viewer9 input[name=right][value=read]"))
            .await
            .unwrap();
        assert_eq!(
            b.prop("checked").await.unwrap().as_deref() == Some("true"),
            !tick
        );
        b.click().await.unwrap();
        click(&c, Locator::Css("#user-viewer9 td.actions button")).await;
        wait_text(&c, "#notice", "Saved viewer9").await;
        let rights = s.running.users.get("viewer9").unwrap().rights;
        assert_eq!(rights.contains(Right::Read), want, "{rights}");
        assert!(rights.contains(Right::List), "{rights}");
    }

    // The new user logs in and sees no admin page.
    click(&c, Locator::Id("logout")).await;
    wait_for(&c, Locator::Id("username")).await;
    log_in(&c, &s, "viewer9", &password).await;
    assert!(
        c.find(Locator::LinkText("Users")).await.is_err(),
        "viewers have no admin link"
    );
    c.close().await.unwrap();
}

/// Every page in light and dark, at desktop width and at 400 px: nothing scrolls sideways on
/// a phone, and a screenshot of each goes to `target/browser-screenshots/`.
#[tokio::test]
async fn every_page_in_light_and_dark_at_desktop_and_phone_width() {
    let Some(driver) = start_chromedriver() else {
        return;
    };
    let (s, _downloads, c) = open(&driver).await;
    // The login page before logging in.
    for (theme, width) in [
        ("light", 1280),
        ("dark", 1280),
        ("light", 400),
        ("dark", 400),
    ] {
        c.set_window_size(width, 900).await.unwrap();
        js(
            &c,
            &format!("localStorage.setItem('theme', '{theme}'); return null;"),
        )
        .await;
        c.goto(&s.url("/login")).await.unwrap();
        wait_text(&c, "main", "Log in").await;
        fits(&c, "login", width).await;
        shot(&c, &format!("login-{theme}-{width}")).await;
    }
    c.set_window_size(1280, 900).await.unwrap();
    log_in(&c, &s, "admin", &s.admin_password).await;
    let pages = [
        ("dashboard", "/", "#agents", "web-01"),
        ("agent", "/agents/agent01", "#facts", "web-01"),
        (
            "browse",
            "/browse/agent01/Logs/App/20240723",
            "#listing",
            "generation 2",
        ),
        (
            "view",
            "/view/agent01/Logs/App/20240723/app.log",
            "#log",
            "request 3000",
        ),
        (
            "search",
            "/search?content=ERROR&context=2",
            "#search-stats",
            "matches",
        ),
        ("users", "/admin/users", "#users", "agent01"),
        ("audit", "/admin/audit", "#audit", "web.login"),
    ];
    for (theme, width) in [
        ("light", 1280),
        ("dark", 1280),
        ("light", 400),
        ("dark", 400),
    ] {
        c.set_window_size(width, 900).await.unwrap();
        js(
            &c,
            &format!("localStorage.setItem('theme', '{theme}'); return null;"),
        )
        .await;
        for (name, path, css, text) in pages {
            c.goto(&s.url(path)).await.unwrap();
            wait_text(&c, css, text).await;
            let dark = js(
                &c,
                "return getComputedStyle(document.body).backgroundColor;",
            )
            .await;
            assert_eq!(
                dark.as_str().unwrap() == "rgb(21, 23, 26)",
                theme == "dark",
                "{name}: {theme} theme, background {dark}"
            );
            fits(&c, name, width).await;
            shot(&c, &format!("{name}-{theme}-{width}")).await;
        }
    }
    // On a phone the navigation folds into a menu button.
    c.set_window_size(400, 900).await.unwrap();
    c.goto(&s.url("/")).await.unwrap();
    wait_text(&c, "#agents", "web-01").await;
    let nav_shown = "return document.getElementById('nav').offsetParent !== null;";
    assert_eq!(js(&c, nav_shown).await, serde_json::Value::Bool(false));
    click(&c, Locator::Id("menu")).await;
    assert_eq!(js(&c, nav_shown).await, serde_json::Value::Bool(true));
    // ...and the viewer wraps long lines.
    js(&c, "localStorage.removeItem('wrap'); return null;").await;
    c.goto(&s.url("/view/agent01/Logs/App/20240723/app.log"))
        .await
        .unwrap();
    wait_text(&c, "#log", "request 3000").await;
    assert_eq!(
        js(
            &c,
            "return document.getElementById('log').classList.contains('wrap');"
        )
        .await,
        serde_json::Value::Bool(true)
    );
    c.close().await.unwrap();
}

/// Nothing on the page is wider than the window (at phone width).
async fn fits(c: &Client, page: &str, width: u32) {
    if width > 500 {
        return;
    }
    let (doc, inner) = (
        js(c, "return document.documentElement.scrollWidth;").await,
        js(c, "return window.innerWidth;").await,
    );
    assert!(
        doc.as_u64().unwrap() <= inner.as_u64().unwrap(),
        "{page} scrolls sideways at {width} px: {doc} wide in a {inner} px window"
    );
}
