//! Faults with the real binary as processes: while 2,000 files (some growing) are synchronised,
//! the agent is SIGKILLed at 50 random moments and the server at 20. Afterwards the archive must
//! equal the source byte for byte, no file twice, no temporary file on disk or in the catalog.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FILES: usize = 2000;
const AGENT_KILLS: usize = 50;
const SERVER_KILLS: usize = 20;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logarchive"));
    c.env_remove("LOGARCHIVE_PASSWORD")
        .env("LOGARCHIVE_LOG", "warn");
    c
}

fn sha_tree(dir: &Path) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
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
                out.insert(rel, hex::encode(Sha256::digest(std::fs::read(&p).unwrap())));
            }
        }
    }
    out
}

struct Server {
    child: Child,
    web: String,
}

/// Starts the server; `ftp` is the control address to use (port 0 the first time). The child is
/// owned by the returned `Server`, which the test kills and waits for.
#[allow(clippy::zombie_processes)]
fn start_server(data: &Path, ftp: &str) -> (Server, String, Option<String>) {
    let mut child = bin()
        .args(["server", "--data"])
        .arg(data)
        .args(["--ftp-listen", ftp, "--web-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut password = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "server did not start");
        let line = lines.next().expect("server output").unwrap();
        if let Some(rest) = line.split("password '").nth(1) {
            password = rest.split('\'').next().map(str::to_string);
        }
        if let Some(rest) = line.split("web on http://").nth(1) {
            let web = rest.split('/').next().unwrap().to_string();
            let ftp = rest
                .split(", FTP on ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            std::thread::spawn(move || for _ in lines {});
            return (Server { child, web }, ftp, password);
        }
    }
}

fn http_get(web: &str, path: &str, auth: &str) -> String {
    let mut s = TcpStream::connect(web).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {web}\r\nAuthorization: Basic {auth}\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..4 {
            out.push(if i <= c.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn agent_and_server_killed_at_random_moments_lose_and_duplicate_nothing() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
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
    let (mut server, ftp, _) = start_server(&data, "127.0.0.1:0");
    let mut add = bin();
    add.args(["user", "--data"])
        .arg(&data)
        .args(["add", "reader", "--role", "viewer", "--password-stdin"])
        .stdin(Stdio::piped());
    let mut child = add.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"reader-password\n")
        .unwrap();
    assert!(child.wait().unwrap().success());

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
        let mut agent = bin()
            .args(["agent", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Random moments: the faults being injected, not synchronisation.
        std::thread::sleep(Duration::from_millis(100 + rng.next() % 500));
        if round % (AGENT_KILLS / SERVER_KILLS) == 1 && server_kills < SERVER_KILLS {
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            server_kills += 1;
            std::thread::sleep(Duration::from_millis(rng.next() % 300));
            server = start_server(&data, &ftp).0;
            std::thread::sleep(Duration::from_millis(rng.next() % 300));
        }
        agent.kill().unwrap();
        agent.wait().unwrap();
        agent_kills += 1;
        let g = &growing[round % growing.len()];
        let mut f = std::fs::OpenOptions::new().append(true).open(g).unwrap();
        writeln!(f, "line written after kill {round}").unwrap();
    }
    while server_kills < SERVER_KILLS {
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        server_kills += 1;
        server = start_server(&data, &ftp).0;
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
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
