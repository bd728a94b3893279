//! The three data-path fixes, each pinned by a test that fails without it: TCP_NODELAY on the
//! control connection, large pipelined chunks with hashing on the way, and race-free passive ports.

mod common;

use common::*;
use std::time::Duration;

/// The latency test holds this, and so do the tests that load the machine, so they never run
/// beside it and skew its median.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn small_files_do_not_wait_for_delayed_acks() {
    let _alone = MEASURING.lock().await;
    // sendfile(2) from a file on disk: the local back-end's.
    let s = TestServer::start_on(Backend::Local).await;
    s.add("agent01", Role::Agent);
    // Like the benchmark client: one connection, PASV + STOR per file. Without TCP_NODELAY each
    // 226 waits ~40 ms for the client's delayed ACK, i.e. > 2 s for 60 files.
    let out = python(
        r#"
import ftplib, io, os, time
f = ftplib.FTP()
f.connect('127.0.0.1', int(os.environ['PORT']), timeout=20)
f.login('agent01', os.environ['PASS'])
f.voidcmd('TYPE I')
data = b'x' * 16384
times = []
for i in range(60):
    t = time.perf_counter()
    f.storbinary('STOR f%03d' % i, io.BytesIO(data))
    times.append(time.perf_counter() - t)
times.sort()
print('median_ms %.2f' % (times[len(times) // 2] * 1000))
"#,
        &[
            ("PORT", s.port().to_string()),
            ("PASS", PASSWORD.to_string()),
        ],
    )
    .await;
    let median: f64 = out.trim().trim_start_matches("median_ms ").parse().unwrap();
    assert!(
        median < 20.0,
        "median time per file {median} ms: the 226 waited for a delayed ACK"
    );
    assert_eq!(s.stored_names("agent01").await.len(), 60);
}

#[tokio::test]
async fn uploads_are_written_in_large_chunks_and_hashed_on_the_way() {
    // Write sizes into a file on disk: the local back-end's.
    let s = TestServer::start_on(Backend::Local).await;
    s.add("agent01", Role::Agent);
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    random_file(&f, 32 << 20, 5);
    let mut c = s.client("agent01").await;
    let before = s.handle.local_stats().unwrap().upload_writes();
    c.upload(&f, "/f", Default::default()).await.unwrap();
    let writes = s.handle.local_stats().unwrap().upload_writes() - before;
    // 32 MiB in ~1 MiB chunks is ~33 writes (4 KiB steps would be 8192).
    assert!(writes <= 40, "{writes} writes for 32 MiB");
    // The server's hash comes from the upload itself: no read of the file.
    assert_eq!(c.remote_sha256("/f").await.unwrap(), sha256_file(&f));
    assert_eq!(s.handle.local_stats().unwrap().full_hash_reads(), 0);

    // After a restart the state is gone: the file is read once, then remembered.
    s.handle.shutdown().await;
    let s = s.restart(|_| {}).await;
    let mut c = s.client("agent01").await;
    for _ in 0..2 {
        assert_eq!(c.remote_sha256("/f").await.unwrap(), sha256_file(&f));
    }
    assert_eq!(s.handle.local_stats().unwrap().full_hash_reads(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_never_lose_a_passive_port_race() {
    let _alone = MEASURING.lock().await;
    // A narrow passive range makes collisions certain for a bind-then-listen binder.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = probe
        .local_addr()
        .unwrap()
        .port()
        .saturating_sub(200)
        .max(20000);
    drop(probe);
    let mut s = TestServer::start_with(move |c| c.passive_ports = base..=base + 24).await;
    s.add_custom("bench", "/", logarchive_ftp::rights::Rights::ALL);
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    std::fs::write(&f, b"small file").unwrap();
    let mut tasks = Vec::new();
    for j in 0..12 {
        let cfg = s.config("bench");
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = logarchive_ftp::client::Client::connect(cfg)
                .await
                .expect("login");
            c.ensure_dir(&format!("/c{j}")).await.expect("mkdir");
            for i in 0..40 {
                c.upload(&f, &format!("f{i}"), Default::default())
                    .await
                    .expect("upload");
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("clients finish")
            .expect("no client failed");
    }
    for j in 0..12 {
        assert_eq!(s.stored_names(&format!("c{j}")).await.len(), 40);
    }
    // Every session survived: a control connection dropped over a port would show as a second
    // login (the client reconnects by itself).
    let logins = s
        .drain_events()
        .iter()
        .filter(|e| matches!(e, logarchive_ftp::server::FtpEvent::LoggedIn { .. }))
        .count();
    assert_eq!(logins, 12);
}

#[tokio::test]
async fn plain_downloads_use_sendfile_and_arrive_intact() {
    let _alone = MEASURING.lock().await;
    // sendfile(2) from a file on disk: the local back-end's.
    let s = TestServer::start_on(Backend::Local).await;
    s.add("agent01", Role::Agent);
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    random_file(&f, 5 << 20, 11);
    let mut c = s.client("agent01").await;
    c.upload(&f, "/f", Default::default()).await.unwrap();
    let back = tmp.path().join("back");
    let out = c.download("/f", &back, Default::default()).await.unwrap();
    assert_eq!(out.sha256, sha256_file(&f));
    assert_eq!(s.handle.stats().zero_copy_downloads(), 1);
    // A resumed download starts at the offset.
    std::fs::write(&back, &std::fs::read(&f).unwrap()[..1_000_000]).unwrap();
    let out = c
        .download(
            "/f",
            &back,
            logarchive_ftp::client::DownloadOptions::default().resume(true),
        )
        .await
        .unwrap();
    assert_eq!(out.bytes, (5 << 20) - 1_000_000);
    assert_eq!(sha256_file(&back), sha256_file(&f));
}
