//! The server's disk fills up: the archive root is a size-limited tmpfs mounted for this test
//! (needs root, as in CI; without it the test fails and says why). The agent reports the full
//! disk, keeps its files, and completes once space is freed (the tmpfs is grown).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logarchive"));
    c.env_remove("LOGARCHIVE_PASSWORD")
        .env("LOGARCHIVE_LOG", "warn");
    c
}

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

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if rel.starts_with(".logarchive") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_full_disk_is_reported_and_the_upload_completes_once_space_is_freed() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let archive = data.join("archive");
    let mount = mount_tmpfs(&archive, "8m");
    let mut add = bin();
    add.args(["user", "--data"])
        .arg(&data)
        .args(["add", "agent01", "--password-stdin"])
        .stdin(Stdio::piped());
    let mut child = add.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"agent-password\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut server = bin()
        .args(["server", "--data"])
        .arg(&data)
        .args(["--ftp-listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let ftp = loop {
        let line = lines.next().expect("server output").unwrap();
        if let Some(rest) = line.split(", FTP on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };

    // 12 MB of logs for an 8 MB disk.
    let src = d.path().join("src");
    for i in 0..4 {
        let p = src.join(format!("Logs/big{i}.log"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let line = format!("big file {i} line of text\n");
        std::fs::write(p, line.repeat(3_000_000 / line.len())).unwrap();
    }
    std::fs::write(src.join("Logs/small.log"), b"small\n").unwrap();
    let before = files(&src);
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
    let mut agent = bin()
        .args(["agent", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

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
    assert_eq!(files(&src), before, "the agent changed its source files");

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
        if s["backlog_files"] == 0 && files(&archive.join("agent01")) == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upload did not complete after space was freed: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!files(&archive.join("agent01"))
        .iter()
        .any(|(p, _)| p.contains("logarchive-tmp")));
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = server.kill();
    let _ = server.wait();
    drop(mount);
}
