//! Network faults between a real agent and a real server (both the `logarchive` binary):
//!
//! - through a fault-injecting TCP proxy of our own (this machine's kernel has no `netem`, and no
//!   iptables/nft): connections delayed, cut after a random number of bytes, or refused;
//! - across two network namespaces joined by a veth pair, with a 30 s partition made by setting
//!   the link down and up again (needs root and `ip` from iproute2; where namespaces are not
//!   allowed the test says so and fails, it is never skipped).
//!
//! Either way the archive must end up equal to the source, nothing twice, no temporary file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;
use support::{add_user, bin, start_server, tree, Killed, Rng};

/// Source files: many small, a few of 1-2 MB so faults land mid-transfer.
fn make_source(src: &Path, n: usize, seed: u64) {
    let mut r = Rng(seed);
    for i in 0..n {
        let size = if i % 25 == 0 {
            1_000_000 + r.next() as usize % 1_000_000
        } else {
            100 + r.next() as usize % 20_000
        };
        let bytes: Vec<u8> = (0..size).map(|_| (r.next() % 251) as u8).collect();
        let p = src.join(format!("Logs/App/2024072{}/f{i:04}.log", i % 5));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

fn agent_config(dir: &Path, server: &str, src: &Path, extra: &str) -> PathBuf {
    std::fs::write(dir.join("pw"), "agent-password\n").unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "agent_id = \"agent01\"\nserver = \"{server}\"\nuser = \"agent01\"\npassword_file = \"{}\"\n\
             state_db = \"{}\"\nquiet_period = \"0s\"\nscan_interval = \"1s\"\nmax_backoff = \"2s\"\nstatus_interval = \"1s\"\n{extra}\
             [[source]]\nroot = \"{}\"\n",
            dir.join("pw").display(),
            dir.join("state/agent01.db").display(),
            src.display()
        ),
    )
    .unwrap();
    config
}

fn backlog(config: &Path) -> Option<u64> {
    let out = bin()
        .args(["agent", "status", "--config"])
        .arg(config)
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["backlog_files"]
        .as_u64()
        .filter(|_| v["files_archived"].as_u64() > Some(0))
}

/// No upload left under its temporary name, no file archived twice as a new generation.
fn assert_no_temporary_or_duplicate(got: &[(String, Vec<u8>)]) {
    assert!(!got
        .iter()
        .any(|(p, _)| p.contains("logarchive-tmp") || p.contains(".~")));
}

/// Waits until the archive equals the source, with a bound; returns the archive's files.
fn wait_synced(
    config: &Path,
    src: &Path,
    archive: &Path,
    within: Duration,
) -> Vec<(String, Vec<u8>)> {
    let want = tree(src);
    let deadline = Instant::now() + within;
    loop {
        if backlog(config) == Some(0) {
            let got = tree(archive);
            if got == want {
                return got;
            }
        }
        if Instant::now() >= deadline {
            let status = bin()
                .args(["agent", "status", "--config"])
                .arg(config)
                .output()
                .unwrap();
            let log =
                std::fs::read_to_string(config.with_file_name("agent.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "not synchronised within {within:?}: {}\nagent log (newest first):\n{}",
                String::from_utf8_lossy(&status.stdout),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[derive(Default)]
struct Faults {
    connections: AtomicU64,
    cut: AtomicU64,
    delayed: AtomicU64,
    refused: AtomicU64,
}

#[derive(Clone, Copy)]
struct Fault {
    delay: bool,
    cut: bool,
    cut_after: u64,
}

/// Copies one direction; `true` if it cut the connection.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    moved: Arc<AtomicU64>,
    f: Fault,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if f.delay {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let total = moved.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if f.cut && total > f.cut_after {
            return true;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    false
}

/// Forwards `listen` to `target`, injecting faults into a share of the connections.
async fn proxy(
    listen: tokio::net::TcpListener,
    target: SocketAddr,
    faults: Arc<Faults>,
    seed: u64,
) {
    let mut r = Rng(seed);
    loop {
        let Ok((client, _)) = listen.accept().await else {
            continue;
        };
        faults.connections.fetch_add(1, Ordering::Relaxed);
        let roll = r.next() % 100;
        let cut_after = 1 + r.next() % 3_000_000;
        let f = Arc::clone(&faults);
        tokio::spawn(async move {
            if roll < 4 {
                f.refused.fetch_add(1, Ordering::Relaxed);
                return; // dropped at once: a refused/reset connection
            }
            let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                return;
            };
            let (cut, delay) = (roll < 16, (16..36).contains(&roll));
            if cut {
                f.cut.fetch_add(1, Ordering::Relaxed);
            }
            if delay {
                f.delayed.fetch_add(1, Ordering::Relaxed);
            }
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let moved = Arc::new(AtomicU64::new(0));
            let fault = Fault {
                delay,
                cut,
                cut_after,
            };
            let up = pump(cr, sw, Arc::clone(&moved), fault);
            let down = pump(sr, cw, moved, fault);
            tokio::pin!(up, down);
            // One direction ending normally (a half-close) lets the other finish; a cut drops
            // both sockets at once.
            tokio::select! {
                c = &mut up => if !c { down.await; },
                c = &mut down => if !c { up.await; },
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_proxy_between_agent_and_server_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    add_user(&data, "agent01", "agent-password", &[]);
    // The proxy answers on 127.0.0.2 for the control port and for every passive port; the
    // server announces 127.0.0.2 in its PASV replies, so data connections cross the proxy too.
    // Below the ephemeral range (where outgoing connections of other tests take ports at random),
    // from a random start: a range of 30 ports free on both addresses.
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let span = ephemeral_start.saturating_sub(10_000 + 40).max(1);
    let mut rng = Rng(u64::from(std::process::id()) ^ 0x5eed);
    let (ports, listeners) = 'found: {
        for _ in 0..500 {
            let lo = 10_000 + (rng.next() % u64::from(span)) as u16;
            let ls: Vec<_> = (lo..lo + 30)
                .filter_map(|p| std::net::TcpListener::bind(("127.0.0.2", p)).ok())
                .collect();
            let free_here =
                (lo..lo + 30).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
            if ls.len() == 30 && free_here {
                break 'found (lo..=lo + 29, ls);
            }
        }
        panic!("no free range of 30 ports for the passive connections");
    };
    let cfg = d.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "[ftp]\npassive_ports = \"{}-{}\"\npassive_host = \"127.0.0.2\"\nstall_timeout = \"5s\"\n",
            ports.start(),
            ports.end()
        ),
    )
    .unwrap();
    let mut cmd = bin();
    cmd.args(["server", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(&data)
        .args(["--ftp-listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0"]);
    let server = start_server(cmd);
    let ftp = server.ftp;
    let faults = Arc::new(Faults::default());
    let control = tokio::net::TcpListener::bind(("127.0.0.2", ftp.port()))
        .await
        .unwrap();
    tokio::spawn(proxy(control, ftp, Arc::clone(&faults), 1));
    for (i, l) in listeners.into_iter().enumerate() {
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let l = tokio::net::TcpListener::from_std(l).unwrap();
        tokio::spawn(proxy(
            l,
            SocketAddr::from(([127, 0, 0, 1], port)),
            Arc::clone(&faults),
            100 + i as u64,
        ));
    }

    let src = d.path().join("src");
    make_source(&src, 300, 5);
    let config = agent_config(
        d.path(),
        &format!("ftp://127.0.0.2:{}", ftp.port()),
        &src,
        "",
    );
    let log = std::fs::File::create(d.path().join("agent.log")).unwrap();
    let agent = Killed::spawn(
        bin()
            .args(["agent", "--config"])
            .arg(&config)
            .env("LOGARCHIVE_LOG", "info,logarchive_ftp=debug")
            .stdout(Stdio::null())
            .stderr(log),
    );
    let (c2, s2, a2) = (config.clone(), src.clone(), data.join("archive/agent01"));
    let got =
        tokio::task::spawn_blocking(move || wait_synced(&c2, &s2, &a2, Duration::from_secs(120)))
            .await
            .unwrap();
    drop(agent);
    let log = std::fs::read_to_string(d.path().join("agent.log")).unwrap_or_default();
    let interrupted = log.lines().filter(|l| l.contains("interrupted")).count();
    assert_no_temporary_or_duplicate(&got);
    println!(
        "proxy: {} connections, {} cut, {} delayed, {} refused; {interrupted} transfers resumed; 300 files synchronised, none lost or twice",
        faults.connections.load(Ordering::Relaxed),
        faults.cut.load(Ordering::Relaxed),
        faults.delayed.load(Ordering::Relaxed),
        faults.refused.load(Ordering::Relaxed)
    );
    assert!(faults.cut.load(Ordering::Relaxed) > 0 && faults.refused.load(Ordering::Relaxed) > 0);
    drop(server);
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Netns {
    srv: String,
    agt: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let id = std::process::id() % 100_000;
        let n = Netns {
            srv: format!("la-srv-{id}"),
            agt: format!("la-agt-{id}"),
        };
        ip(&["netns", "add", &n.srv])?;
        ip(&["netns", "add", &n.agt])?;
        let (vs, va) = (format!("vs{id}"), format!("va{id}"));
        ip(&["link", "add", &vs, "type", "veth", "peer", "name", &va])?;
        ip(&["link", "set", &vs, "netns", &n.srv])?;
        ip(&["link", "set", &va, "netns", &n.agt])?;
        for (ns, dev, addr) in [
            (&n.srv, &vs, "10.213.0.1/24"),
            (&n.agt, &va, "10.213.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(n)
    }

    fn link(&self, up: bool) {
        let id = std::process::id() % 100_000;
        ip(&[
            "-n",
            &self.agt,
            "link",
            "set",
            &format!("va{id}"),
            if up { "up" } else { "down" },
        ])
        .unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.srv]);
        let _ = ip(&["netns", "del", &self.agt]);
    }
}

#[test]
fn a_30_second_partition_between_namespaces_loses_nothing() {
    let ns = match Netns::create() {
        Ok(n) => n,
        Err(e) => panic!(
            "this test needs network namespaces (root and iproute2), and this machine refused: {e}"
        ),
    };
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    add_user(&data, "agent01", "agent-password", &[]);
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns.srv,
        env!("CARGO_BIN_EXE_logarchive"),
        "server",
        "--data",
    ])
    .arg(&data)
    .args([
        "--ftp-listen",
        "10.213.0.1:2121",
        "--web-listen",
        "127.0.0.1:0",
    ])
    .env("LOGARCHIVE_LOG", "warn");
    let server = start_server(cmd);
    let src = d.path().join("src");
    make_source(&src, 200, 9);
    // Slow enough that the partition lands mid-synchronisation.
    let config = agent_config(
        d.path(),
        "ftp://10.213.0.1:2121",
        &src,
        "upload_limit = \"2MiB\"\n",
    );
    let agent = Killed::spawn(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.agt,
                env!("CARGO_BIN_EXE_logarchive"),
                "agent",
                "--config",
            ])
            .arg(&config)
            .env("LOGARCHIVE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // Let it start sending, then cut the link for 30 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tree(&data.join("archive/agent01"))
        .iter()
        .any(|(p, _)| p.ends_with(".log"))
    {
        assert!(
            Instant::now() < deadline,
            "nothing arrived before the partition"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ns.link(false);
    let during = tree(&data.join("archive/agent01")).len();
    std::thread::sleep(Duration::from_secs(30)); // the fault: a 30 s partition
    let after_partition = tree(&data.join("archive/agent01")).len();
    ns.link(true);
    let got = wait_synced(
        &config,
        &src,
        &data.join("archive/agent01"),
        Duration::from_secs(180),
    );
    assert_no_temporary_or_duplicate(&got);
    println!(
        "partition: 30 s with the link down ({during} -> {after_partition} files on the server meanwhile); afterwards all {} files synchronised",
        got.len()
    );
    drop(agent);
    drop(server);
}
