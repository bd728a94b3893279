//! The pages in a real headless Chromium (Debian `chromium` + `chromium-driver`, installed by
//! `.ci/run`), driven over WebDriver: log in, browse to a file, search by content and open a hit,
//! view and follow a growing file, download, add a user as admin. A screenshot of each page goes
//! to `target/browser-screenshots/`.
//!
//! Without chromedriver this test fails, unless `LOGARCHIVE_SKIP_BROWSER=1` says to skip it.

mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use logarchive_ftp::client::{UploadMode, UploadOptions};
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

#[tokio::test]
async fn a_session_in_chromium() {
    let Some(driver) = start_chromedriver() else {
        return;
    };
    let lines: String = (1..=3000)
        .map(|i| {
            format!(
                "2024-07-23 10:00:00 {} request {i} handled\n",
                if i % 100 == 0 { "ERROR" } else { "INFO" }
            )
        })
        .collect();
    let s = Server::start(move |a| {
        write(&a.join("agent01/Logs/App/20240723/app.log"), lines.as_bytes());
        write(&a.join("agent01/Logs/App/20240723/other.log"), b"nothing here\n");
        let status = serde_json::json!({"agent_id": "agent01", "host": "web-01", "backlog_files": 0, "backlog_bytes": 0, "updated_at_ms": 1});
        write(&a.join("agent01/.logarchive/status.json"), status.to_string().as_bytes());
    })
    .await;
    s.add_user("agent01", Role::Agent);
    let downloads = tempfile::tempdir().unwrap();
    let c = browser(&driver, downloads.path()).await;

    // Log in.
    c.goto(&s.url("/")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("username"))
        .await
        .unwrap();
    shot(&c, "login").await;
    c.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys("admin")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(&s.admin_password)
        .await
        .unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#agents", "web-01").await;
    shot(&c, "dashboard").await;

    // Browse from the dashboard down to a file.
    c.find(Locator::LinkText("agent01"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for folder in ["Logs/", "App/", "20240723/"] {
        c.wait()
            .at_most(WAIT)
            .for_element(Locator::LinkText(folder))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    wait_text(&c, "#listing", "app.log").await;
    shot(&c, "browse").await;
    c.find(Locator::LinkText("app.log"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let log = wait_text(&c, "#log", "request 3000 handled").await;
    assert!(
        !log.contains("request 1 handled"),
        "opens at the end (the last 64 KiB)"
    );
    c.find(Locator::Id("prev"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#log", "request 1000 handled").await;
    shot(&c, "view").await;

    // Search by content and open a hit at its line.
    c.goto(&s.url("/search")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("content"))
        .await
        .unwrap()
        .send_keys("request 2500 handled")
        .await
        .unwrap();
    c.find(Locator::Id("go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#search-stats", "1 match in ").await;
    shot(&c, "search").await;
    c.find(Locator::Css("#hits a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let line = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("l2500"))
        .await
        .unwrap();
    assert!(line.text().await.unwrap().contains("request 2500 handled"));
    assert_eq!(c.current_url().await.unwrap().fragment(), Some("l2500"));

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
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("follow"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
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
    c.find(Locator::Id("download"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
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
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("new-name"))
        .await
        .unwrap()
        .send_keys("viewer9")
        .await
        .unwrap();
    c.find(Locator::Id("new-role"))
        .await
        .unwrap()
        .select_by_value("viewer")
        .await
        .unwrap();
    c.find(Locator::Id("add"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = wait_text(&c, "#notice", "Added viewer9").await;
    let password = notice.rsplit(": ").next().unwrap().trim().to_string();
    assert!(s.running.users.get("viewer9").is_some());
    // Change its download limit in its row, and take the limit away again.
    let limit = c
        .find(Locator::Css("#user-viewer9 input[name=download_limit]"))
        .await
        .unwrap();
    limit.send_keys("1 MiB/s").await.unwrap();
    c.find(Locator::Css("#user-viewer9 td.actions button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
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
    c.find(Locator::Css("#user-viewer9 td.actions button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#notice", "Saved viewer9").await;
    assert_eq!(
        s.running.users.get("viewer9").unwrap().download_limit.0,
        0,
        "blank = unlimited"
    );

    // The new user logs in and sees no admin page.
    c.find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys("viewer9")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(&password)
        .await
        .unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#agents", "agent01").await;
    assert!(
        c.find(Locator::LinkText("Users")).await.is_err(),
        "viewers have no admin link"
    );
    c.close().await.unwrap();
}
