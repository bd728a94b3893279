//! The server's disk fills up: the archive root is a size-limited tmpfs mounted for this test
//! (needs root, as in CI; without it the test fails and says why). The agent reports the full
//! disk, keeps its files, and completes once space is freed (the tmpfs is grown).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::{add_user, bin, server_command, spawn_agent, start_server, tree};

/// Unmounts on drop, whatever happened.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, size: &str) -> Mount {
    std::fs::create_dir_all(at).unwrap();
    let out = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0755"),
            "tmpfs",
        ])
        .arg(at)
        .output()
        .expect("running mount");
    assert!(
        out.status.success(),
        "this test mounts a small tmpfs as the archive and needs root (CI runs as root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Mount(at.to_path_buf())
}

fn status(config: &Path) -> serde_json::Value {
    let out = bin()
        .args(["agent", "status", "--config"])
        .arg(config)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[test]
fn a_full_disk_is_reported_and_the_upload_completes_once_space_is_freed() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let archive = data.join("archive");
    let mount = mount_tmpfs(&archive, "8m");
    add_user(&data, "agent01", "agent-password", &[]);
    // Declared after the mount: dropped (killed) before it is unmounted.
    let server = start_server(server_command(&data, "127.0.0.1:0"));
    let ftp = server.ftp;

    // 12 MB of logs for an 8 MB disk.
    let src = d.path().join("src");
    for i in 0..4 {
        let p = src.join(format!("Logs/big{i}.log"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let line = format!("big file {i} line of text\n");
        std::fs::write(p, line.repeat(3_000_000 / line.len())).unwrap();
    }
    std::fs::write(src.join("Logs/small.log"), b"small\n").unwrap();
    let before = tree(&src);
    std::fs::write(d.path().join("pw"), "agent-password\n").unwrap();
    let config = d.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "agent_id = \"agent01\"\nserver = \"ftp://{ftp}\"\nuser = \"agent01\"\npassword_file = \"{}\"\n\
             state_db = \"{}\"\nquiet_period = \"0s\"\nscan_interval = \"1s\"\nmax_backoff = \"1s\"\nstatus_interval = \"1s\"\n\
             [[source]]\nroot = \"{}\"\n",
            d.path().join("pw").display(),
            d.path().join("state/agent01.db").display(),
            src.display()
        ),
    )
    .unwrap();
    let agent = spawn_agent(&config);

    // The agent reports the full disk and keeps what it could not send.
    let deadline = Instant::now() + Duration::from_secs(60);
    let reported = loop {
        let s = status(&config);
        let err = s["last_error"].as_str().unwrap_or("").to_lowercase();
        if s["backlog_files"].as_u64().unwrap_or(0) > 0
            && (err.contains("full")
                || err.contains("space")
                || err.contains("452")
                || err.contains("552"))
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the full disk was never reported: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("reported: {}", reported["last_error"]);
    assert_eq!(tree(&src), before, "the agent changed its source files");

    // Space is freed: the upload completes by itself.
    let grow = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&mount.0)
        .status()
        .unwrap();
    assert!(grow.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&config);
        if s["backlog_files"] == 0 && tree(&archive.join("agent01")) == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upload did not complete after space was freed: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!tree(&archive.join("agent01"))
        .iter()
        .any(|(p, _)| p.contains("logarchive-tmp")));
    drop(agent);
    drop(server);
    drop(mount);
}
