//! Busy logs with Debian's real `logrotate`, with the real binaries as processes. Daemon-like
//! writers hold their log open and append numbered lines at ~1,400 lines/s each, reopening it
//! about a second after a rotation (as after a HUP); logrotate is forced at random moments in
//! every mode (create, copytruncate, compress + delaycompress, dateext, rotate 1) and the agent
//! is SIGKILLed now and then. Afterwards every line is in the archive exactly once across
//! generations, except inside logrotate's own copytruncate window (lines written between its copy
//! and its truncation are in neither file), which the test measures and accounts for.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

mod support;
use support::{add_user, base64, bin, http_get, server_command, spawn_agent, start_server, Rng};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The logrotate modes, with their config lines.
const MODES: [(&str, &str); 5] = [
    ("create", "rotate 5\n  create"),
    ("copytruncate", "rotate 5\n  copytruncate"),
    (
        "compress",
        "rotate 5\n  create\n  compress\n  delaycompress",
    ),
    // Rotated names keep `.log`, so the patterns match them too: still one generation each.
    (
        "dateext",
        "rotate 5\n  create\n  dateext\n  dateformat -%Y%m%d-%s\n  extension .log",
    ),
    ("rotate1", "rotate 1\n  create"),
];

fn logrotate() -> PathBuf {
    for p in [
        "/usr/sbin/logrotate",
        "/usr/bin/logrotate",
        "/sbin/logrotate",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("logrotate is not installed: apt-get install logrotate (./test.sh installs it)");
}

/// A daemon's logging: the file held open (O_APPEND), three numbered lines every 2 ms, reopened
/// about a second after it was rotated away (never, for copytruncate). Returns lines written.
fn daemon_writer(
    mode: &'static str,
    path: PathBuf,
    reopens: bool,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let open = || {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .expect("opening the log")
        };
        let mut f = open();
        let mut ino = f.metadata().unwrap().ino();
        let mut seq = 0u64;
        let mut reopen_at: Option<Instant> = None;
        let mut checked = Instant::now();
        let pad = "x".repeat(40);
        while !stop.load(Relaxed) {
            let ms = now_ms();
            let mut batch = String::new();
            for _ in 0..3 {
                batch.push_str(&format!("{mode} {seq:09} {ms} {pad}\n"));
                seq += 1;
            }
            f.write_all(batch.as_bytes()).expect("writing the log");
            if reopens && checked.elapsed() >= Duration::from_millis(20) {
                checked = Instant::now();
                let moved = std::fs::metadata(&path).map_or(true, |m| m.ino() != ino);
                if moved && reopen_at.is_none() {
                    reopen_at = Some(Instant::now() + Duration::from_secs(1));
                }
                if reopen_at.is_some_and(|t| Instant::now() >= t) {
                    f = open();
                    ino = f.metadata().unwrap().ino();
                    reopen_at = None;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        seq
    })
}

/// Per mode and line number: how often the line is in the archive (all generations), and its
/// time stamp.
fn archived_lines(archive: &Path) -> BTreeMap<String, BTreeMap<u64, (u32, i64)>> {
    let mut out: BTreeMap<String, BTreeMap<u64, (u32, i64)>> = BTreeMap::new();
    for (rel, bytes) in support::tree(archive) {
        for line in String::from_utf8_lossy(&bytes).lines() {
            let mut parts = line.split(' ');
            let (Some(mode), Some(seq), Some(ms)) = (parts.next(), parts.next(), parts.next())
            else {
                panic!("{rel}: a broken line {line:?}");
            };
            let (Ok(seq), Ok(ms)) = (seq.parse::<u64>(), ms.parse::<i64>()) else {
                panic!("{rel}: a broken line {line:?}");
            };
            let e = out
                .entry(mode.to_string())
                .or_default()
                .entry(seq)
                .or_insert((0, ms));
            e.0 += 1;
        }
    }
    out
}

#[test]
fn every_line_once_through_logrotate_in_every_mode_with_agent_kills() {
    let logrotate = logrotate();
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    add_user(&data, "agent01", "agent-password", &[]);
    add_user(&data, "reader", "reader-password", &["--role", "viewer"]);
    let mut server = start_server(server_command(&data, "127.0.0.1:0"));
    let src = d.path().join("src");
    let rot = d.path().join("rot");
    std::fs::create_dir_all(&rot).unwrap();
    std::fs::write(d.path().join("pw"), "agent-password\n").unwrap();
    let config = d.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "agent_id = \"agent01\"\nserver = \"ftp://{}\"\nuser = \"agent01\"\npassword_file = \"{}\"\n\
             state_db = \"{}\"\nquiet_period = \"2s\"\nscan_interval = \"2s\"\nmax_lag = \"1s\"\n\
             max_backoff = \"1s\"\nstatus_interval = \"1s\"\n[[source]]\nroot = \"{}\"\ninclude = [\"**/*.log\"]\n",
            server.ftp,
            d.path().join("pw").display(),
            d.path().join("state/agent.db").display(),
            src.display()
        ),
    )
    .unwrap();

    let stop_writing = Arc::new(AtomicBool::new(false));
    let stop_rotating = Arc::new(AtomicBool::new(false));
    // Deleting rotations (rotate 1 removes the previous generation) never run while the agent
    // is down: what a file held bytes nobody had read when it was removed is gone for any
    // reader. Every other rotation runs whenever it comes.
    let agent_up = Arc::new(RwLock::new(()));
    let windows: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
    let mut writers = Vec::new();
    let mut rotators = Vec::new();
    for (i, (mode, lines)) in MODES.iter().enumerate() {
        let dir = src.join(mode);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("app.log");
        let conf = rot.join(format!("{mode}.conf"));
        std::fs::write(
            &conf,
            format!("\"{}\" {{\n  {lines}\n  missingok\n}}\n", log.display()),
        )
        .unwrap();
        writers.push((
            *mode,
            daemon_writer(
                mode,
                log,
                *mode != "copytruncate",
                Arc::clone(&stop_writing),
            ),
        ));
        let (stop, windows, up, lr) = (
            Arc::clone(&stop_rotating),
            Arc::clone(&windows),
            Arc::clone(&agent_up),
            logrotate.clone(),
        );
        let state = rot.join(format!("{mode}.state"));
        let mode = *mode;
        rotators.push(std::thread::spawn(move || {
            let mut rng = Rng(1000 + i as u64);
            let mut n = 0u32;
            loop {
                // A random moment (the fault being injected, not synchronisation); more than a
                // second apart so dateext's names (to the second) never collide.
                let at = Instant::now() + Duration::from_millis(1200 + rng.next() % 2800);
                while Instant::now() < at {
                    if stop.load(Relaxed) {
                        return (mode, n);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _up = (mode == "rotate1").then(|| up.read().unwrap());
                let start = now_ms();
                let out = std::process::Command::new(&lr)
                    .args(["-f", "-s"])
                    .arg(&state)
                    .arg(&conf)
                    .output()
                    .unwrap();
                let end = now_ms();
                assert!(
                    out.status.success(),
                    "logrotate {mode}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                if mode == "copytruncate" {
                    windows.lock().unwrap().push((start, end));
                }
                n += 1;
            }
        }));
    }

    let mut agent = spawn_agent(&config);
    let mut rng = Rng(77);
    let run_for = Duration::from_secs(30);
    let t0 = Instant::now();
    let mut kills = 0;
    while t0.elapsed() < run_for {
        std::thread::sleep(Duration::from_millis(4000 + rng.next() % 5000));
        if t0.elapsed() >= run_for {
            break;
        }
        let down = agent_up.write().unwrap();
        agent.kill_now(); // SIGKILL
        kills += 1;
        std::thread::sleep(Duration::from_millis(100 + rng.next() % 500));
        agent = spawn_agent(&config);
        // Up again once it has looked at its files (its first scan takes well under this).
        std::thread::sleep(Duration::from_millis(1500));
        drop(down);
    }
    stop_rotating.store(true, Relaxed);
    let rotations: Vec<(&str, u32)> = rotators.into_iter().map(|r| r.join().unwrap()).collect();
    // The writers go on past their reopening after the last rotation (an empty file nobody ever
    // writes to is archived as what it is: an empty file).
    std::thread::sleep(Duration::from_millis(1500));
    stop_writing.store(true, Relaxed);
    let written: BTreeMap<&str, u64> = writers
        .into_iter()
        .map(|(m, w)| (m, w.join().unwrap()))
        .collect();
    let windows = windows.lock().unwrap().clone();

    // Lines a copytruncate rotation may lose were written during its run: a run of missing lines
    // is logrotate's only if the archived lines around it were stamped within the run (with a
    // margin: a stamp precedes its write).
    let within_a_run = |before: i64, after: i64| {
        windows
            .iter()
            .any(|(s, e)| before >= s - 50 && after <= e + 50)
    };
    let archive = data.join("archive/agent01");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (counts, missing) = loop {
        let counts = archived_lines(&archive);
        let missing: BTreeMap<&str, Vec<u64>> = written
            .iter()
            .map(|(m, w)| {
                let got = counts.get(*m);
                let miss = (0..*w)
                    .filter(|s| got.is_none_or(|g| !g.contains_key(s)))
                    .collect::<Vec<_>>();
                (*m, miss)
            })
            .collect();
        // The copytruncate writer's missing lines are only allowed inside a window: wait for
        // everything else.
        let waiting: usize = missing
            .iter()
            .map(|(m, v)| if *m == "copytruncate" { 0 } else { v.len() })
            .sum();
        if waiting == 0 || Instant::now() > deadline {
            break (counts, missing);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // A missing copytruncate line was written between its archived neighbours.
    let ct = counts.get("copytruncate").cloned().unwrap_or_default();
    let in_logrotates_window = |seq: u64| -> bool {
        match (ct.range(..seq).next_back(), ct.range(seq..).next()) {
            (Some((_, (_, before))), Some((_, (_, after)))) => within_a_run(*before, *after),
            _ => false,
        }
    };
    let mut report = String::new();
    let mut problems = Vec::new();
    for (mode, w) in &written {
        let got = counts.get(*mode).cloned().unwrap_or_default();
        let dup = got.values().filter(|(n, _)| *n > 1).count();
        let miss = &missing[mode];
        let mut in_logrotate_window = 0;
        for s in miss {
            if *mode == "copytruncate" && in_logrotates_window(*s) {
                in_logrotate_window += 1;
            }
        }
        let rotated = rotations.iter().find(|r| r.0 == *mode).map_or(0, |r| r.1);
        report.push_str(&format!(
            "{mode:<13} rotations {rotated:>3}  written {:>6}  archived {:>6}  duplicated {dup}  lost {} ({} inside logrotate's copytruncate window)\n",
            w,
            got.len(),
            miss.len(),
            in_logrotate_window
        ));
        if dup > 0 {
            problems.push(format!("{mode}: {dup} lines archived twice"));
        }
        if miss.len() > in_logrotate_window {
            problems.push(format!(
                "{mode}: {} lines lost outside logrotate's window, e.g. {:?}",
                miss.len() - in_logrotate_window,
                &miss[..miss.len().min(10)]
            ));
        }
        if rotated == 0 {
            problems.push(format!("{mode}: logrotate never rotated"));
        }
    }
    eprintln!("agent SIGKILLed {kills} times; copytruncate windows {windows:?}\n{report}");
    // No empty stubs, no temporary file left.
    for (rel, bytes) in support::tree(&archive) {
        if bytes.is_empty() {
            problems.push(format!("{rel}: an empty generation"));
        }
        if rel.contains(".logarchive-tmp") {
            problems.push(format!("{rel}: a temporary upload left"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}\n{report}");

    // The compressed generations were recognised as already archived, and the catalog finds a
    // generation by the local name it had.
    let status = bin()
        .args(["agent", "status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        doc["already_archived"].as_u64().unwrap_or(0) > 0,
        "no compressed generation recognised: {doc}"
    );
    // What the agent counts as lost is what logrotate's copytruncate runs lost: bytes it saw
    // written that were in neither file (78-byte lines).
    let ct_lost = missing["copytruncate"].len() as u64 * 78;
    assert!(
        doc["lost_bytes"].as_u64().unwrap_or(0) <= ct_lost,
        "the agent lost more than logrotate's window ({ct_lost} bytes): {doc}"
    );
    let auth = base64(b"reader:reader-password");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hits = http_get(&server.web, "/api/v1/search?q=app.log.1", &auth);
        let v: serde_json::Value = serde_json::from_str(&hits).unwrap_or_default();
        let found = v["files"].as_array().map_or(0, |f| f.len());
        if found > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no generation found by its local name app.log.1: {hits}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.terminate().success());
    assert!(server.child.terminate().success());
}
