//! The archive server on each storage back-end (a folder, and S3 on a real SeaweedFS): what an
//! agent uploads over FTP is listed, viewed, searched, downloaded (ranges, zips) and followed
//! through the web the same way, and a new catalog is rebuilt from the store alone.

mod support;

use logarchive_ftp::client::{UploadMode, UploadOptions};
use logarchive_server::users::Role;
use std::time::{Duration, Instant};
use support::*;

fn log(lines: std::ops::Range<usize>) -> String {
    lines
        .map(|i| format!("2024-07-23 10:00:{:02} INFO request {i} done\n", i % 60))
        .collect()
}

async fn json(w: &Web, path: &str) -> serde_json::Value {
    let r = w.get(path).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// The whole flow on `backend`; with `compressed`, the file is compressed at rest
/// (`compress_after = "1s"`) before anything reads it, and grows again while followed.
async fn web_on(backend: Backend, compressed: bool) {
    let s = Server::start_on_tuned(backend, |c| {
        c.storage.compress_after = logarchive_server::config::CompressAfter(if compressed {
            Some(Duration::from_secs(1))
        } else {
            None
        });
    })
    .await;
    s.add_user("agent01", Role::Agent);
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("a.log");
    let first = log(0..20_000) + "2024-07-23 10:01:00 ERROR needle-7f3a in request 20000\n";
    std::fs::write(&local, &first).unwrap();
    let mut c = s.ftp("agent01", PASSWORD).await.unwrap();
    c.ensure_dir("/Logs/App").await.unwrap();
    c.upload_verified(&local, "/Logs/App/a.log", None)
        .await
        .unwrap();
    s.eventually("the file in the catalog", || {
        s.running.catalog.get("/agent01/Logs/App/a.log").unwrap()
    })
    .await;
    if compressed && backend == Backend::Local {
        let zst = s.archive().join("agent01/Logs/App/a.log.zst");
        s.eventually("the file compressed at rest", || zst.exists().then_some(()))
            .await;
        assert!(!s.archive().join("agent01/Logs/App/a.log").exists());
    }
    if compressed {
        let a = s.admin().await;
        // The dashboard: logical and stored bytes, and the ratio (on S3 also the sign that the
        // file is one compressed object now).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = json(&a, "/api/v1/agents").await;
            let agent = &d["agents"].as_array().unwrap()[0];
            let (bytes, stored) = (&agent["archive"]["bytes"], &agent["stored_bytes"]);
            if stored
                .as_u64()
                .is_some_and(|st| st * 3 < bytes.as_u64().unwrap())
            {
                break;
            }
            assert!(Instant::now() < deadline, "not compressed within 30 s: {d}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, page) = a.text("/").await;
        assert_eq!(status, 200);
        assert!(
            page.contains("×)</td>"),
            "the ratio on the dashboard: {page}"
        );
    }
    // FTP shows the original: size, SHA-256, listing, bytes.
    assert_eq!(c.size("/Logs/App/a.log").await.unwrap(), first.len() as u64);
    let mut want = logarchive_ftp::sha::Sha256State::new();
    want.update(first.as_bytes());
    assert_eq!(
        c.remote_sha256("/Logs/App/a.log").await.unwrap(),
        want.hex()
    );
    let listed = c.list("/Logs/App").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let back = tmp.path().join("back.log");
    c.download(
        "/Logs/App/a.log",
        &back,
        logarchive_ftp::client::DownloadOptions::default(),
    )
    .await
    .unwrap();
    assert!(std::fs::read(&back).unwrap() == first.as_bytes(), "RETR");
    let a = s.admin().await;

    // Browse: listed with its size.
    let b = json(&a, "/api/v1/browse/agent01/Logs/App").await;
    let files = b["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "{b}");
    assert_eq!(files[0]["size"], first.len() as u64, "{b}");

    // View: the last page ends with the last line, line numbers known.
    let v = json(&a, "/api/v1/view/agent01/Logs/App/a.log").await;
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .ends_with("needle-7f3a in request 20000\n"),
        "{backend:?}: last page"
    );
    assert_eq!(v["size"], first.len() as u64);
    let offset = first.find("request 12345 done").unwrap() as u64;
    let v = json(
        &a,
        &format!("/api/v1/view/agent01/Logs/App/a.log?offset={offset}"),
    )
    .await;
    assert!(
        v["text"].as_str().unwrap().contains("request 12345 done"),
        "{backend:?}: a page from the middle"
    );

    // Content search finds the one line, with its line number.
    let r = a
        .get("/api/v1/search?content=needle-7f3a&q=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("needle-7f3a in request 20000"),
        "{backend:?}: {body}"
    );
    assert!(body.contains("\"line\":20001"), "{backend:?}: {body}");

    // Download: whole, and a range.
    let r = a
        .get("/api/v1/download/agent01/Logs/App/a.log")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.unwrap() == first.as_bytes(),
        "{backend:?}: download"
    );
    let r = a
        .get("/api/v1/download/agent01/Logs/App/a.log")
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), first.as_bytes()[100..200]);
    // A folder as a zip holds the file.
    let r = a.get("/api/v1/download/agent01/Logs").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let zip = r.bytes().await.unwrap();
    assert!(
        zip.windows(first.len().min(4096))
            .any(|w| w == &first.as_bytes()[..first.len().min(4096)]),
        "{backend:?}: the zip lacks the file's bytes"
    );

    // Follow: an append over FTP arrives as an event.
    let mut r = a
        .get(&format!(
            "/api/v1/follow/agent01/Logs/App/a.log?offset={}",
            first.len()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let more = "2024-07-23 10:02:00 WARN appended-line-9c1\n";
    std::fs::write(&local, format!("{first}{more}")).unwrap();
    c.upload(
        &local,
        "/Logs/App/a.log",
        UploadOptions::new(UploadMode::Append {
            local_offset: first.len() as u64,
        }),
    )
    .await
    .unwrap();
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !got.contains("appended-line-9c1") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, r.chunk())
            .await
            .unwrap_or_else(|_| panic!("{backend:?}: no follow event within 20 s: {got}"))
            .unwrap()
            .expect("the stream ended");
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(got.contains("event: append"), "{got}");
    assert!(!got.contains("event: reset"), "{backend:?}: {got}");

    // /metrics counts the object store's requests (and has nothing to count on a folder).
    let (_, m) = Web::new(&s.base).text("/metrics").await;
    let puts = m
        .lines()
        .find_map(|l| l.strip_prefix("logarchive_store_puts_total "))
        .map(|v| v.parse::<u64>().unwrap());
    let inline = m
        .lines()
        .find_map(|l| l.strip_prefix("logarchive_store_inline_bytes "))
        .map(|v| v.parse::<f64>().unwrap());
    match backend {
        // (Small uploads wait inline for the packer: the count may still be 0.)
        Backend::S3 => assert!(puts.is_some() && inline.is_some(), "{m}"),
        Backend::Local => assert_eq!((puts, inline), (None, None)),
    }

    // The store is the only source: a catalog rebuilt from nothing finds the file again.
    if backend == Backend::S3 {
        assert!(
            !s.archive().join("agent01/Logs/App/a.log").exists(),
            "an S3 archive wrote the file to the local folder"
        );
    }
    let fresh = tempfile::tempdir().unwrap();
    let catalog =
        logarchive_server::catalog::Catalog::open(&fresh.path().join("catalog.db")).unwrap();
    let view = s.running.store_view();
    let (added, _, _) =
        tokio::task::spawn_blocking(move || catalog.reconcile(&view).map(|r| (r, catalog)))
            .await
            .unwrap()
            .map(|(r, _)| r)
            .unwrap();
    assert!(
        added >= 1,
        "{backend:?}: reconcile found nothing in the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_reads_the_archive_on_a_folder() {
    web_on(Backend::Local, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_reads_compressed_files_on_a_folder() {
    web_on(Backend::Local, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_reads_the_archive_on_s3() {
    web_on(Backend::S3, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_reads_compressed_files_on_s3() {
    web_on(Backend::S3, true).await
}

/// `--check` tells a missing bucket, missing or wrong credentials, and an unreachable store
/// before the server starts, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_what_is_wrong_with_the_bucket() {
    use logarchive_server::config::{ServerSettings, StorageBackend};
    let weed = seaweed();
    let data = tempfile::tempdir().unwrap();
    let settings = |f: &dyn Fn(&mut ServerSettings)| {
        let mut s = settings(data.path());
        s.storage.backend = StorageBackend::S3;
        s.storage.endpoint = Some(weed.endpoint.clone());
        s.storage.bucket = Some(weed.bucket.clone());
        f(&mut s);
        s
    };
    let creds = weed.credentials();
    let good = data.path().join("good.env");
    std::fs::write(
        &good,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            creds.access_key_id,
            creds.secret()
        ),
    )
    .unwrap();
    let bad = data.path().join("bad.env");
    std::fs::write(
        &bad,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY=not-the-secret\n",
            creds.access_key_id
        ),
    )
    .unwrap();
    let half = data.path().join("half.env");
    std::fs::write(&half, "AWS_ACCESS_KEY_ID=x\n").unwrap();
    let storage_problems = |s: ServerSettings| async move {
        tokio::task::spawn_blocking(move || logarchive_server::check::check(&s))
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p.contains("storage") || p.contains("AWS_"))
            .collect::<Vec<_>>()
    };
    let ok = storage_problems(settings(&|s| {
        s.storage.credentials_file = Some(good.clone())
    }))
    .await;
    assert!(ok.is_empty(), "{ok:?}");
    let p = storage_problems(settings(&|s| {
        s.storage.credentials_file = Some(bad.clone())
    }))
    .await;
    assert!(
        p.len() == 1 && p[0].contains("[storage] bucket logarchive"),
        "wrong secret: {p:?}"
    );
    let p = storage_problems(settings(&|s| {
        s.storage.credentials_file = Some(half.clone())
    }))
    .await;
    assert!(
        p.len() == 1 && p[0].contains("AWS_SECRET_ACCESS_KEY is not set"),
        "half a key: {p:?}"
    );
    let p = storage_problems(settings(&|s| {
        s.storage.credentials_file = Some(good.clone());
        s.storage.bucket = None;
    }))
    .await;
    assert!(p.len() == 1 && p[0].contains("needs a bucket"), "{p:?}");
    let p = storage_problems(settings(&|s| {
        s.storage.credentials_file = Some(good.clone());
        s.storage.endpoint = Some("http://127.0.0.1:1".into());
    }))
    .await;
    assert!(p.len() == 1, "unreachable: {p:?}");
    assert!(
        !data.path().join("store.db").exists(),
        "--check created the metadata database"
    );
}

/// `/healthz` on S3: `ready` while the bucket answers; once the object store is gone, `503
/// alive, not ready` (a load balancer takes the server out), while `?live` still answers 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_tells_ready_from_alive_when_the_store_goes() {
    let weed = logarchive_store::s3::seaweed::SeaweedFs::start().expect("SeaweedFS");
    let (endpoint, bucket, creds) = (
        weed.endpoint.clone(),
        weed.bucket.clone(),
        weed.credentials(),
    );
    let s = Server::start_on_tuned(Backend::S3, |c| {
        let file = c.data.join("own-s3.env");
        std::fs::write(
            &file,
            format!(
                "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
                creds.access_key_id,
                creds.secret()
            ),
        )
        .unwrap();
        c.storage.endpoint = Some(endpoint);
        c.storage.bucket = Some(bucket);
        c.storage.credentials_file = Some(file);
    })
    .await;
    let anon = Web::new(&s.base);
    assert_eq!(anon.text("/healthz").await, (200, "ready\n".to_string()));
    drop(weed);
    let t = Instant::now();
    loop {
        let (status, body) = anon.text("/healthz").await;
        if status == 503 {
            assert!(
                body.starts_with("alive, not ready: the object store"),
                "{body}"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "/healthz still {status} {body} with the store gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        anon.text("/healthz?live").await,
        (200, "alive\n".to_string())
    );
}
