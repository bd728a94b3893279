//! The FTP client library against the real server (in-process, real sockets), plain and FTPS;
//! the calls and the verified upload on each storage back-end (a folder, S3 on SeaweedFS).

mod common;

use common::*;
use logarchive_ftp::client::{
    Client, ClientError, DownloadOptions, EntryKind, UploadMode, UploadOptions,
};
use logarchive_ftp::rate::ByteRate;
use logarchive_ftp::server::FtpServerConfig;
use std::time::Duration;

async fn every_call(s: &TestServer) {
    s.add("admin", Role::Admin);
    let mut c = s.client("admin").await;
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    // Bare LF, CRLF, CR and binary bytes: must arrive byte-identical.
    let mut bytes = b"a\nb\r\nc\rd\n".repeat(5000);
    bytes.extend(0u8..=255);
    std::fs::write(&f, &bytes).unwrap();

    assert_eq!(c.pwd().await.unwrap(), "/");
    c.ensure_dir("/agent01/Logs/App/20240723").await.unwrap();
    assert_eq!(c.pwd().await.unwrap(), "/agent01/Logs/App/20240723");
    c.ensure_dir("/agent01/Logs/App/20240723").await.unwrap();
    c.cwd("..").await.unwrap();
    assert_eq!(c.pwd().await.unwrap(), "/agent01/Logs/App");
    c.cwd("20240723").await.unwrap();

    let up = c
        .upload(&f, "a.txt", UploadOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (up.bytes, up.size),
        (bytes.len() as u64, bytes.len() as u64)
    );
    assert_eq!(up.sha256, sha256_file(&f));
    assert_eq!(
        s.get("/agent01/Logs/App/20240723/a.txt").await.unwrap(),
        bytes
    );
    assert_eq!(c.size("a.txt").await.unwrap(), bytes.len() as u64);
    let mtime = c.mtime("a.txt").await.unwrap();
    assert!(mtime.elapsed().unwrap_or_default() < Duration::from_secs(600));
    let e = c
        .stat("/agent01/Logs/App/20240723/a.txt")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.name.as_str(), e.kind, e.size),
        ("a.txt", EntryKind::File, bytes.len() as u64)
    );
    assert!(c.exists("/agent01/Logs").await.unwrap());
    assert!(!c.exists("/agent01/None").await.unwrap());
    let l = c.list("/agent01/Logs").await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].name.as_str(), l[0].kind), ("App", EntryKind::Dir));
    assert!(l[0].modified.is_some());

    // Download, plain and resumed.
    let back = tmp.path().join("back");
    let d = c
        .download("a.txt", &back, DownloadOptions::default())
        .await
        .unwrap();
    assert_eq!(d.sha256, up.sha256);
    std::fs::write(&back, &bytes[..1000]).unwrap();
    let d = c
        .download("a.txt", &back, DownloadOptions::default().resume(true))
        .await
        .unwrap();
    assert_eq!(
        (d.bytes, d.sha256.as_str()),
        (bytes.len() as u64 - 1000, up.sha256.as_str())
    );

    // Resume and append uploads.
    let part = tmp.path().join("part");
    std::fs::write(&part, &bytes[..7000]).unwrap();
    c.upload(&part, "r.txt", UploadOptions::default())
        .await
        .unwrap();
    let r = c
        .upload(&f, "r.txt", UploadOptions::new(UploadMode::Resume))
        .await
        .unwrap();
    assert_eq!(r.bytes, bytes.len() as u64 - 7000);
    assert_eq!(r.sha256, up.sha256);
    let extra = tmp.path().join("extra");
    let mut more = bytes.clone();
    more.extend_from_slice(b"appended\n");
    std::fs::write(&extra, &more).unwrap();
    let a = c
        .upload(
            &extra,
            "r.txt",
            UploadOptions::new(UploadMode::Append {
                local_offset: bytes.len() as u64,
            }),
        )
        .await
        .unwrap();
    assert_eq!(a.bytes, 9);
    assert_eq!(c.remote_sha256("r.txt").await.unwrap(), sha256_file(&extra));
    // Progress is reported.
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = seen.clone();
    c.upload(
        &f,
        "p.txt",
        UploadOptions::default().progress(Some(std::sync::Arc::new(move |n| {
            s2.store(n, std::sync::atomic::Ordering::Relaxed)
        }))),
    )
    .await
    .unwrap();
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::Relaxed),
        bytes.len() as u64
    );

    // Verified upload, and a repeat that finds it already there.
    let v = c.upload_verified(&f, "/agent01/v.txt", None).await.unwrap();
    assert!(!v.already_present);
    assert!(s.get("/agent01/.v.txt.logarchive-tmp").await.is_none());
    let again = c.upload_verified(&f, "/agent01/v.txt", None).await.unwrap();
    assert!(again.already_present && again.bytes == 0);
    // Only the first `length` bytes (a snapshot of a growing file).
    let v = c
        .upload_verified(&f, "/agent01/head.txt", Some(100))
        .await
        .unwrap();
    assert_eq!(s.get("/agent01/head.txt").await.unwrap(), &bytes[..100]);
    assert_eq!(v.size, 100);
    let again = c
        .upload_verified(&f, "/agent01/head.txt", Some(100))
        .await
        .unwrap();
    assert!(again.already_present, "the same first 100 bytes");
    // A final name holding other bytes is never replaced: another size, or the same size with
    // other content, is a typed error naming what the server holds.
    match c.upload_verified(&f, "/agent01/head.txt", None).await {
        Err(ClientError::Exists { size: 100, .. }) => {}
        other => panic!("expected Exists (100 bytes), got {other:?}"),
    }
    let same_size = tmp.path().join("same-size");
    std::fs::write(&same_size, vec![b'z'; bytes.len()]).unwrap();
    match c.upload_verified(&same_size, "/agent01/v.txt", None).await {
        Err(ClientError::Exists { size, .. }) if size == bytes.len() as u64 => {}
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(s.get("/agent01/head.txt").await.unwrap(), &bytes[..100]);

    c.rename("r.txt", "renamed.txt").await.unwrap();
    c.delete("renamed.txt").await.unwrap();
    assert!(matches!(
        c.delete("renamed.txt").await,
        Err(ClientError::NotFound(_))
    ));
    c.mkdir("/agent01/empty").await.unwrap();
    c.rmdir("/agent01/empty").await.unwrap();
    c.quit().await.unwrap();
}

#[tokio::test]
async fn every_call_plain() {
    every_call(&TestServer::start().await).await;
}

#[tokio::test]
async fn every_call_ftps() {
    every_call(&TestServer::start_tls(|_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_on_s3() {
    every_call(&TestServer::start_on(Backend::S3).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_ftps_on_s3() {
    every_call(&TestServer::start_tls_on(Backend::S3, |_| {}).await).await;
}

#[tokio::test]
async fn transfers_resume_after_the_connection_is_cut() {
    resume_after_cut(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_resume_after_the_connection_is_cut_on_s3() {
    resume_after_cut(Backend::S3).await
}

async fn resume_after_cut(backend: Backend) {
    let mut s = TestServer::start_on(backend).await;
    s.add("agent01", Role::Agent);
    s.users
        .update(
            "agent01",
            UserUpdate {
                upload_limit: Some(ByteRate(2 << 20)),
                download_limit: Some(ByteRate(2 << 20)),
                ..Default::default()
            },
        )
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    random_file(&f, 3 << 20, 21);
    for upload in [true, false] {
        let mut c = s.client("agent01").await;
        let path = f.clone();
        let back = tmp.path().join("back");
        let job = tokio::spawn(async move {
            let r = if upload {
                c.upload_verified(&path, "/f.bin", None)
                    .await
                    .map(|v| (v.bytes, v.sha256))
            } else {
                c.download("/f.bin", &back, Default::default())
                    .await
                    .map(|d| (d.bytes, d.sha256))
            };
            (r, c)
        });
        // Cut the session once the transfer has moved a third of the file.
        wait_until("a third of the transfer", Duration::from_secs(20), || {
            s.handle
                .sessions()
                .iter()
                .any(|x| x.transfer_bytes.unwrap_or(0) > 1 << 20)
        })
        .await;
        assert_eq!(s.handle.disconnect_user("agent01"), 1);
        let (r, _c) = job.await.unwrap();
        let (bytes, sha) = r.expect("the client resumed by itself");
        assert_eq!(sha, sha256_file(&f));
        if upload {
            assert_eq!(sha256_hex(&s.get("/agent01/f.bin").await.unwrap()), sha);
            // The second STOR continued the temporary file from where the cut left it.
            let events = s.drain_events();
            assert!(
                events.iter().any(|e| matches!(e, logarchive_ftp::server::FtpEvent::Appended { offset, temp: true, .. } if *offset >= 1 << 20)),
                "no resumed upload in {events:?}"
            );
        } else {
            assert_eq!(sha256_file(&tmp.path().join("back")), sha);
            assert_eq!(
                bytes,
                3 << 20,
                "each byte received once: resumed, not restarted"
            );
        }
    }
}

#[tokio::test]
async fn reconnects_after_the_server_restarts_on_the_same_port() {
    let s = TestServer::start().await;
    s.add("agent01", Role::Agent);
    let port = s.port();
    let mut cfg = s.config("agent01");
    cfg.reconnect_attempts = 20;
    cfg.reconnect_base = Duration::from_millis(50);
    let mut c = Client::connect(cfg).await.unwrap();
    c.ensure_dir("/a").await.unwrap();
    s.handle.shutdown().await;
    let s = s
        .restart(move |c: &mut FtpServerConfig| c.listen = ([127, 0, 0, 1], port).into())
        .await;
    assert_eq!(s.port(), port);
    // The old connection is dead; the next call reconnects, logs in, returns to /a.
    assert_eq!(c.pwd().await.unwrap(), "/a");
    assert!(c.list(".").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_server_being_gone_is_a_typed_error_not_a_hang() {
    let s = TestServer::start().await;
    s.add("agent01", Role::Agent);
    let mut cfg = s.config("agent01");
    cfg.reconnect_attempts = 2;
    let mut c = Client::connect(cfg).await.unwrap();
    s.handle.shutdown().await;
    match c.list("/").await {
        Err(e @ (ClientError::Io { .. } | ClientError::Timeout(_))) => assert!(e.is_transient()),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hash_mismatch_is_reported_and_never_renamed() {
    hash_mismatch(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_mismatch_is_reported_and_never_renamed_on_s3() {
    hash_mismatch(Backend::S3).await
}

async fn hash_mismatch(backend: Backend) {
    let s = TestServer::start_on(backend).await;
    s.add("agent01", Role::Agent);
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    random_file(&f, 200_000, 4);
    let mut c = s.client("agent01").await;
    // An earlier attempt left half the file under the temporary name; then it changed on the
    // server (disk corruption, or someone else's bytes).
    let half = tmp.path().join("half");
    std::fs::write(&half, &std::fs::read(&f).unwrap()[..100_000]).unwrap();
    c.upload(&half, "/.f.log.logarchive-tmp", Default::default())
        .await
        .unwrap();
    let temp = "/agent01/.f.log.logarchive-tmp";
    let mut corrupted = s.get(temp).await.unwrap();
    corrupted[10] ^= 0xff;
    s.put(temp, &corrupted).await;
    match c.upload_verified(&f, "/f.log", None).await {
        Err(ClientError::HashMismatch { local, server, .. }) => assert_ne!(local, server),
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    assert!(
        s.get("/agent01/f.log").await.is_none(),
        "renamed to final despite the mismatch"
    );
}

#[tokio::test]
async fn a_refused_upload_is_a_permission_error_and_never_resumed() {
    refused_upload(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_a_permission_error_and_never_resumed_on_s3() {
    refused_upload(Backend::S3).await
}

async fn refused_upload(backend: Backend) {
    let s = TestServer::start_on(backend).await;
    s.add("agent01", Role::Agent);
    s.put("/agent01/other.log", b"somebody else's bytes\n")
        .await;
    // Far more than the socket buffers hold: the server refuses (no overwrite right) only once
    // the data connection is open and closes it unread, so the client's writes are reset.
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    random_file(&f, 16 << 20, 9);
    let mut c = s.client("agent01").await;
    for _ in 0..3 {
        match c.upload(&f, "/other.log", Default::default()).await {
            Err(ClientError::Permission(_)) => {}
            other => panic!("expected a permission error, got {other:?}"),
        }
        assert_eq!(
            s.get("/agent01/other.log").await.unwrap(),
            b"somebody else's bytes\n",
            "a refused upload changed the existing file"
        );
    }
    // The client is usable afterwards.
    c.upload(&f, "/mine.log", Default::default()).await.unwrap();
    assert_eq!(
        sha256_hex(&s.get("/agent01/mine.log").await.unwrap()),
        sha256_file(&f)
    );
}
