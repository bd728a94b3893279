//! Memory stays flat whatever the file's size: a 1 GiB upload and download through the
//! server (client and server in this process), on each storage back-end. In a test binary of
//! its own, one at a time, so nothing else moves the process's RSS.

mod common;

use common::*;
use std::time::Duration;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_round_trip_in_constant_memory() {
    gibibyte_round_trip(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_round_trip_in_constant_memory_on_s3() {
    gibibyte_round_trip(Backend::S3).await
}

async fn gibibyte_round_trip(backend: Backend) {
    // One at a time: the memory measured is the whole test process's.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    // As the binary does at start: large buffers go back to the system when freed.
    logarchive_ftp::os::tune_allocator();
    let s = TestServer::start_on(backend).await;
    s.add("agent01", Role::Agent);
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("big");
    random_file(&f, 1 << 30, 99);
    let mut c = s.client("agent01").await;
    let base = rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base));
    let p2 = peak.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let sampler = std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            p2.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let up = c.upload_verified(&f, "/big.bin", None).await.unwrap();
    let back = tmp.path().join("back");
    let down = c
        .download("/big.bin", &back, Default::default())
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(up.sha256, down.sha256);
    assert_eq!(down.size, 1 << 30);
    let growth_mib = (peak.load(std::sync::atomic::Ordering::Relaxed) - base) / 1024;
    eprintln!("1 GiB round trip on {backend:?}: RSS grew by {growth_mib} MiB");
    // Client and server together, in one process: a few MiB of buffers, never the file.
    assert!(
        growth_mib < 64,
        "memory grew by {growth_mib} MiB for a 1 GiB round trip on {backend:?}"
    );
}
