//! The catalog fed by the real FTP service: only completed files appear, with size and SHA-256;
//! appends update them; a restart reconciles with what is on disk.

use logarchive_ftp::client::{Client, ClientConfig, UploadMode, UploadOptions};
use logarchive_server::config::{Overrides, ServerConfigFile, ServerSettings};
use logarchive_server::users::{NewUser, Role};
use std::time::{Duration, Instant};

fn settings(data: &std::path::Path) -> ServerSettings {
    ServerSettings::resolve(
        ServerConfigFile::default(),
        Overrides {
            data: Some(data.to_path_buf()),
            ftp_listen: Some("127.0.0.1:0".parse().unwrap()),
            web_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap()
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test]
async fn completed_uploads_appends_and_reconciliation() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let s = settings(&data);
    let running = logarchive_server::start(&s).await.unwrap();
    assert!(running.initial_admin_password.is_some());
    running
        .users
        .add(NewUser::with_role("agent01", "agent password", Role::Agent))
        .unwrap();
    let port = running.ftp.local_addr().port();
    let mut c = Client::connect(ClientConfig::new(
        "127.0.0.1",
        port,
        "agent01",
        "agent password",
    ))
    .await
    .unwrap();
    let f = d.path().join("a.log");
    std::fs::write(&f, b"one\n").unwrap();
    c.ensure_dir("/Logs").await.unwrap();
    c.upload_verified(&f, "/Logs/a.log", None).await.unwrap();
    let cat = running.catalog.clone();
    let e = eventually("the upload in the catalog", || {
        cat.get("/agent01/Logs/a.log").unwrap()
    })
    .await;
    assert_eq!((e.agent.as_str(), e.size), ("agent01", 4));
    assert_eq!(e.sha256.as_deref(), Some(sha(b"one\n").as_str()));
    assert!(
        cat.get("/agent01/Logs/.a.log.logarchive-tmp")
            .unwrap()
            .is_none(),
        "temporary uploads never appear"
    );

    std::fs::write(&f, b"one\ntwo\n").unwrap();
    c.upload(
        &f,
        "/Logs/a.log",
        UploadOptions::new(UploadMode::Append { local_offset: 4 }),
    )
    .await
    .unwrap();
    let e = eventually("the append", || {
        cat.get("/agent01/Logs/a.log")
            .unwrap()
            .filter(|e| e.size == 8)
    })
    .await;
    assert_eq!(e.sha256.as_deref(), Some(sha(b"one\ntwo\n").as_str()));
    assert!(e.appended_ms.is_some());
    let (dirs, _) = cat.list("/agent01").unwrap();
    assert_eq!(dirs, vec!["/agent01/Logs"]);

    // Restart after files were copied in and removed by hand.
    running.shutdown().await;
    let archive = data.join("archive");
    std::fs::create_dir_all(archive.join("agent02/x")).unwrap();
    std::fs::write(archive.join("agent02/x/by-hand.txt"), b"copied in").unwrap();
    std::fs::remove_file(archive.join("agent01/Logs/a.log")).unwrap();
    let running = logarchive_server::start(&settings(&data)).await.unwrap();
    assert!(running.initial_admin_password.is_none());
    let cat = running.catalog.clone();
    eventually("reconciliation", || {
        (cat.get("/agent02/x/by-hand.txt").unwrap().is_some()
            && cat.get("/agent01/Logs/a.log").unwrap().is_none())
        .then_some(())
    })
    .await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_renamed_folder_takes_its_files_along_in_the_catalog() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let running = logarchive_server::start(&settings(&data)).await.unwrap();
    running
        .users
        .add(NewUser::with_role("ops", "ops password", Role::Admin))
        .unwrap();
    let port = running.ftp.local_addr().port();
    let mut c = Client::connect(ClientConfig::new("127.0.0.1", port, "ops", "ops password"))
        .await
        .unwrap();
    let f = d.path().join("a.log");
    std::fs::write(&f, b"one\n").unwrap();
    c.ensure_dir("/agent01/d/e").await.unwrap();
    c.upload_verified(&f, "/agent01/d/a.log", None)
        .await
        .unwrap();
    c.upload_verified(&f, "/agent01/d/e/b.log", None)
        .await
        .unwrap();
    let cat = running.catalog.clone();
    eventually("the uploads in the catalog", || {
        cat.get("/agent01/d/e/b.log").unwrap()
    })
    .await;

    c.ensure_dir("/agent02").await.unwrap();
    c.rename("/agent01/d", "/agent02/moved").await.unwrap();
    let b = eventually("the folder's files under their new paths", || {
        cat.get("/agent02/moved/e/b.log").unwrap()
    })
    .await;
    assert_eq!(b.agent, "agent02");
    assert_eq!(b.sha256.as_deref(), Some(sha(b"one\n").as_str()));
    assert!(cat.get("/agent02/moved/a.log").unwrap().is_some());
    assert!(cat.get("/agent01/d/a.log").unwrap().is_none());
    assert!(cat.get("/agent01/d/e/b.log").unwrap().is_none());
    let (dirs, _) = cat.list("/agent02/moved").unwrap();
    assert_eq!(dirs, vec!["/agent02/moved/e"]);
    assert!(cat.list("/agent01").unwrap().0.is_empty());
    running.shutdown().await;
}
