//! `logarchive demo` as a new user meets it: within a minute the agents have archived logs, a
//! content search finds ERROR lines, and the dashboard shows the agents in a real browser
//! (screenshot: target/browser-screenshots/demo-dashboard.png). Ctrl-C stops it cleanly and the
//! temporary folder goes.

use fantoccini::{ClientBuilder, Locator};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

mod support;
use support::{Killed, SIGINT};

fn chromedriver() -> Option<(Killed, u16)> {
    let mut child = match Command::new("chromedriver")
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => Killed(c),
        Err(e) if std::env::var("LOGARCHIVE_SKIP_BROWSER").as_deref() == Ok("1") => {
            eprintln!("skipping the browser part: chromedriver: {e}");
            return None;
        }
        Err(e) => panic!("chromedriver not found ({e}): install chromium-driver, or set LOGARCHIVE_SKIP_BROWSER=1"),
    };
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("chromedriver output").unwrap();
        if let Some(rest) = line.split("started successfully on port ").nth(1) {
            let port = rest.trim_end_matches('.').parse().unwrap();
            std::thread::spawn(move || for _ in lines {});
            return Some((child, port));
        }
    }
}

#[tokio::test]
async fn the_demo_shows_a_working_archive() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_logarchive"))
        .args([
            "demo",
            "--agents",
            "2",
            "--ftp-listen",
            "127.0.0.1:0",
            "--web-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map(Killed)
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the demo's first line").unwrap();
    let web = first
        .split("open http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let password = first
        .split("password '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    let second = lines.next().unwrap().unwrap();
    let data: PathBuf = second
        .split("; data in ")
        .nth(1)
        .unwrap()
        .split(". Ctrl-C")
        .next()
        .unwrap()
        .into();
    let base = format!("http://{web}");
    let http = reqwest::Client::new();
    let get = |path: &str| {
        http.get(format!("{base}{path}"))
            .basic_auth("admin", Some(&password))
            .send()
    };

    // Within a minute: both agents with files and a status, and ERROR lines to find.
    let t = Instant::now();
    loop {
        let d: serde_json::Value = get("/api/v1/agents").await.unwrap().json().await.unwrap();
        let agents = d["agents"].as_array().unwrap();
        let ready = agents.len() == 2
            && agents
                .iter()
                .all(|a| a["archive"]["files"].as_u64().unwrap() >= 5 && a["status"].is_object());
        let s: serde_json::Value = get("/api/v1/search?content=ERROR&max_matches=5")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let hits = s["content"]["hits"].as_array().map_or(0, |h| h.len());
        if ready && hits > 0 {
            break;
        }
        assert!(
            t.elapsed() < WAIT,
            "the demo did not fill up within a minute: {d} / {hits} hits"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Dated folders: two days of history and today.
    let t = Instant::now();
    loop {
        let l: serde_json::Value = get("/api/v1/browse/agent01/Logs/App")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if l["dirs"].as_array().unwrap().len() >= 3 {
            break;
        }
        assert!(t.elapsed() < WAIT, "dated folders missing: {l}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    if let Some((driver, port)) = chromedriver() {
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]
            }
        });
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone().into_iter().collect())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        c.goto(&format!("{base}/login")).await.unwrap();
        c.find(Locator::Id("username"))
            .await
            .unwrap()
            .send_keys("admin")
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
        let agents = c
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Id("agents"))
            .await
            .unwrap();
        let text = agents.text().await.unwrap();
        assert!(
            text.contains("agent01") && text.contains("agent02"),
            "{text}"
        );
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("demo-dashboard.png"),
            c.screenshot().await.unwrap(),
        )
        .unwrap();
        c.close().await.unwrap();
        drop(driver);
    }

    // The service log is rotated every 15 s in logrotate's modes in turn (create, copytruncate,
    // compress + delaycompress, dateext): after all four, every line it wrote is in the
    // archive exactly once across its generations, and no agent lost anything.
    let t = Instant::now();
    for agent in ["agent01", "agent02"] {
        let service = data.join("archive").join(agent).join("Logs/Service");
        while !service.join("service.log.~5~").exists() {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "{agent}: four rotations not archived: {:?}",
                support::tree(&service)
                    .iter()
                    .map(|(p, b)| (p.clone(), b.len()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Wait for the agents to catch up with what the writers wrote before their last rotation.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for agent in ["agent01", "agent02"] {
        let service = data.join("archive").join(agent).join("Logs/Service");
        let mut seen = std::collections::BTreeMap::<u64, u32>::new();
        for (_, bytes) in support::tree(&service) {
            for l in String::from_utf8_lossy(&bytes).lines() {
                let seq = l
                    .split(" seq=")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("{agent}: a service line without seq: {l:?}"));
                *seen.entry(seq).or_default() += 1;
            }
        }
        let max = *seen.keys().next_back().unwrap();
        let missing: Vec<u64> = (0..max).filter(|s| !seen.contains_key(s)).collect();
        let twice: Vec<u64> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| *s)
            .collect();
        assert!(
            missing.is_empty() && twice.is_empty(),
            "{agent}: missing {missing:?}, twice {twice:?}"
        );
    }
    let d: serde_json::Value = get("/api/v1/agents").await.unwrap().json().await.unwrap();
    for a in d["agents"].as_array().unwrap() {
        assert_eq!(a["status"]["lost"], 0, "{a}");
        assert!(
            a["status"]["already_archived"].as_u64().unwrap_or(0) >= 1,
            "the .gz: {a}"
        );
    }

    // Ctrl-C: a clean stop, and the temporary folder is gone.
    let status = demo.stop_with(SIGINT);
    assert!(status.success(), "{status}");
    assert!(!data.exists(), "{} left behind", data.display());
}
