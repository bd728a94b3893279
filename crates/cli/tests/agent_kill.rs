//! The agent as a process, killed with SIGKILL mid-upload again and again: the archive must end
//! up byte-identical to the source, with no file twice and no temporary file left.

use std::io::Write;
use std::time::{Duration, Instant};

mod support;
use support::{add_user, bin, server_command, spawn_agent, start_server, tree, Rng};

#[test]
fn sigkill_twenty_times_mid_upload_loses_and_duplicates_nothing() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    add_user(&data, "agent01", "agent-password", &[]);
    let mut server = start_server(server_command(&data, "127.0.0.1:0"));
    let ftp = server.ftp;

    // The source: many small files and some big ones, so kills land mid-transfer.
    let src = d.path().join("src");
    let mut seed = 7u64;
    for i in 0..60 {
        let size = if i % 10 == 0 {
            3_000_000
        } else {
            1_000 + i * 997
        };
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 251) as u8
            })
            .collect();
        let p = src.join(format!("Logs/App/2024072{}/f{i:03}.log", i % 3));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let growing = src.join("Logs/growing.log");
    std::fs::write(&growing, b"start\n").unwrap();
    std::fs::write(d.path().join("pw"), "agent-password\n").unwrap();
    let config = d.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "agent_id = \"agent01\"\nserver = \"ftp://{ftp}\"\nuser = \"agent01\"\npassword_file = \"{}\"\n\
             state_db = \"{}\"\nquiet_period = \"0s\"\nscan_interval = \"1s\"\nmax_backoff = \"1s\"\nupload_limit = \"8MiB\"\n\
             [[source]]\nroot = \"{}\"\n",
            d.path().join("pw").display(),
            d.path().join("state/agent01.db").display(),
            src.display()
        ),
    )
    .unwrap();

    let mut rng = Rng(12345);
    for round in 0..20 {
        let mut agent = spawn_agent(&config);
        // A random moment to kill at: this is the fault being injected, not synchronisation.
        std::thread::sleep(Duration::from_millis(150 + rng.next() % 600));
        agent.kill_now(); // SIGKILL
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&growing)
            .unwrap();
        writeln!(f, "line written after kill {round}").unwrap();
    }
    let once = bin()
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );

    let archive = data.join("archive/agent01");
    let got = tree(&archive);
    assert!(
        !got.iter().any(|(p, _)| p.contains(".logarchive-tmp")),
        "temporary files left"
    );
    assert!(
        !got.iter().any(|(p, _)| p.contains(".~")),
        "a file archived twice under a new name"
    );
    assert_eq!(got, tree(&src), "archive differs from the source");
    let status = bin()
        .args(["agent", "status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(doc["backlog_files"], 0);
    assert_eq!(doc["files_archived"], 61);

    // SIGTERM: a clean stop with exit status 0. The metrics endpoint answering means the agent is
    // up (its signal handlers are installed before it).
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let maddr = probe.local_addr().unwrap();
    drop(probe);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "[[source]]",
        &format!("metrics_listen = \"{maddr}\"\n[[source]]"),
    );
    std::fs::write(&config, text).unwrap();
    let mut agent = spawn_agent(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(maddr).is_err() {
        assert!(Instant::now() < deadline, "agent did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(agent.terminate().success(), "SIGTERM must be a clean stop");
    assert!(server.child.terminate().success());
}
