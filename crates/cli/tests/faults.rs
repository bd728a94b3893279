//! Faults with the real binary as processes: while 2,000 files (some growing) are synchronised,
//! the agent is SIGKILLed at 50 random moments and the server at 20. Afterwards the archive must
//! equal the source byte for byte, no file twice, no temporary file on disk or in the catalog.

use std::io::Write;
use std::time::{Duration, Instant};

const FILES: usize = 2000;
const AGENT_KILLS: usize = 50;
const SERVER_KILLS: usize = 20;

mod support;
use support::{
    add_user, base64, bin, http_get, server_command, sha_tree, spawn_agent, start_server, Rng,
};

#[test]
fn agent_and_server_killed_at_random_moments_lose_and_duplicate_nothing() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    add_user(&data, "agent01", "agent-password", &[]);
    let mut server = start_server(server_command(&data, "127.0.0.1:0"));
    let ftp = server.ftp.to_string();
    add_user(&data, "reader", "reader-password", &["--role", "viewer"]);

    // 2,000 files in dated folders, a few large ones so kills land mid-transfer, 20 that grow.
    let src = d.path().join("src");
    let mut rng = Rng(99);
    for i in 0..FILES {
        let size = if i % 200 == 0 {
            2_000_000
        } else {
            200 + rng.next() as usize % 6000
        };
        let bytes: Vec<u8> = (0..size).map(|_| (rng.next() % 251) as u8).collect();
        let p = src.join(format!("Logs/App/202407{:02}/f{i:04}.log", 1 + i % 28));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let growing: Vec<_> = (0..20)
        .map(|i| src.join(format!("Logs/growing-{i}.log")))
        .collect();
    for g in &growing {
        std::fs::write(g, b"start\n").unwrap();
    }
    std::fs::write(d.path().join("pw"), "agent-password\n").unwrap();
    let config = d.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "agent_id = \"agent01\"\nserver = \"ftp://{ftp}\"\nuser = \"agent01\"\npassword_file = \"{}\"\n\
             state_db = \"{}\"\nquiet_period = \"0s\"\nscan_interval = \"1s\"\nmax_backoff = \"1s\"\nmax_parallel_uploads = 4\n\
             [[source]]\nroot = \"{}\"\n",
            d.path().join("pw").display(),
            d.path().join("state/agent01.db").display(),
            src.display()
        ),
    )
    .unwrap();

    // 50 agent kills; every 5th round also kills the server and starts it again on its port.
    let (mut agent_kills, mut server_kills) = (0, 0);
    for round in 0..AGENT_KILLS {
        let mut agent = spawn_agent(&config);
        // Random moments: the faults being injected, not synchronisation.
        std::thread::sleep(Duration::from_millis(100 + rng.next() % 500));
        if round % (AGENT_KILLS / SERVER_KILLS) == 1 && server_kills < SERVER_KILLS {
            server.child.kill_now();
            server_kills += 1;
            std::thread::sleep(Duration::from_millis(rng.next() % 300));
            server = start_server(server_command(&data, &ftp));
            std::thread::sleep(Duration::from_millis(rng.next() % 300));
        }
        agent.kill_now();
        agent_kills += 1;
        let g = &growing[round % growing.len()];
        let mut f = std::fs::OpenOptions::new().append(true).open(g).unwrap();
        writeln!(f, "line written after kill {round}").unwrap();
    }
    while server_kills < SERVER_KILLS {
        server.child.kill_now();
        server_kills += 1;
        server = start_server(server_command(&data, &ftp));
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

    let want = sha_tree(&src);
    let got = sha_tree(&data.join("archive/agent01"));
    let temps = got.keys().filter(|p| p.contains(".logarchive-tmp")).count();
    let duplicated = got.keys().filter(|p| p.contains(".~")).count();
    let lost = want.iter().filter(|(p, h)| got.get(*p) != Some(h)).count();
    println!(
        "faults injected: {agent_kills} agent SIGKILLs, {server_kills} server SIGKILLs; files: {}; lost or different: {lost}; duplicated: {duplicated}; temporary left: {temps}",
        want.len()
    );
    assert_eq!((lost, duplicated, temps), (0, 0, 0));
    assert_eq!(got.len(), want.len(), "extra files in the archive");

    // The catalog agrees: every file once, no temporary name.
    let auth = base64(b"reader:reader-password");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http_get(
            &server.web,
            "/api/v1/search?agent=agent01&limit=10000",
            &auth,
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let paths: Vec<&str> = v["files"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["path"].as_str()).collect())
            .unwrap_or_default();
        let unique: std::collections::BTreeSet<&&str> = paths.iter().collect();
        if paths.len() == want.len() && unique.len() == paths.len() {
            assert!(!paths.iter().any(|p| p.contains("logarchive-tmp")));
            for p in &paths {
                assert!(
                    want.contains_key(p.trim_start_matches("/agent01/")),
                    "{p} not in the source"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "catalog holds {} entries ({} unique), want {}",
            paths.len(),
            unique.len(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
