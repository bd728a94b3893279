//! `deploy/haproxy.cfg` as written (only its addresses and ports replaced): Debian's HAProxy in
//! front of two `logarchive server`s sharing a PostgreSQL catalog and one folder, each with its
//! own passive range announced at the balancer's address. An agent that knows only the
//! balancer archives through both servers; one server SIGKILLed, the balancer's health check
//! takes it out and the next files go through the other. The balancer, the servers and their
//! passive ports are on 127.0.0.10, .11 and .12.

mod support;

use logarchive_server::pg_harness::Postgres;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const LB: &str = "127.0.0.10";
const A: &str = "127.0.0.11";
const B: &str = "127.0.0.12";

/// A port free on all three addresses (and, for a range, the nine after it).
fn free_on_all(span: u16) -> u16 {
    for _ in 0..50 {
        let base = TcpListener::bind(format!("{LB}:0"))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base.checked_add(span).is_none() {
            continue;
        }
        let held: Vec<_> = [LB, A, B]
            .iter()
            .flat_map(|ip| (base..base + span).map(move |p| TcpListener::bind(format!("{ip}:{p}"))))
            .collect();
        if held.iter().all(|h| h.is_ok()) {
            return base;
        }
    }
    panic!("no free ports on {LB}, {A} and {B}");
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn haproxy_in_front_of_two_servers_as_deploy_writes_it() {
    let Ok(haproxy) = which("haproxy") else {
        panic!("HAProxy is not installed: `apt-get install haproxy` (test.sh does)");
    };
    let pg = Postgres::start().unwrap();
    let url = pg.database("logarchive").unwrap();
    let d = tempfile::tempdir().unwrap();
    let (ftp, web) = (free_on_all(1), free_on_all(1));
    let (pa, pb) = (free_on_all(10), free_on_all(10));
    let config = |ip: &str, passive: u16| {
        let p = d.path().join(format!("server-{ip}.toml"));
        std::fs::write(
            &p,
            format!(
                "data = \"{}\"\nftp_listen = \"{ip}:{ftp}\"\nweb_listen = \"{ip}:{web}\"\n\
                 [ftp]\npassive_host = \"{LB}\"\npassive_ports = \"{passive}-{}\"\n\
                 [catalog]\nurl = \"{url}\"\npassword_file = \"{}\"\n",
                d.path().join("data").display(),
                passive + 9,
                pg.password_file().display()
            ),
        )
        .unwrap();
        p
    };
    let (ca, cb) = (config(A, pa), config(B, pb));
    for (name, role, pw) in [
        ("agent01", "agent", "agent-password"),
        ("viewer", "viewer", "viewer-password"),
    ] {
        assert!(user_add_to(&ca, name, pw, role).0, "user add {name}");
    }
    let start = |cfg: &std::path::Path| {
        let mut c = bin();
        c.args(["server", "--config"]).arg(cfg);
        start_server(c)
    };
    let mut server_a = start(&ca);
    let server_b = start(&cb);

    // The deployment's file, pointed at this machine's addresses and ports.
    let cfg = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/haproxy.cfg"
    ))
    .unwrap()
    .replace("bind :2121", &format!("bind {LB}:{ftp}"))
    .replace("bind :8443", &format!("bind {LB}:{web}"))
    .replace("bind :50000-50099", &format!("bind {LB}:{pa}-{}", pa + 9))
    .replace("bind :50100-50199", &format!("bind {LB}:{pb}-{}", pb + 9))
    .replace("10.0.0.11:2121", &format!("{A}:{ftp}"))
    .replace("10.0.0.12:2121", &format!("{B}:{ftp}"))
    .replace("10.0.0.11:8443", &format!("{A}:{web}"))
    .replace("10.0.0.12:8443", &format!("{B}:{web}"))
    .replace("check port 8443", &format!("check port {web}"))
    .replace("10.0.0.11", A)
    .replace("10.0.0.12", B);
    assert!(!cfg.contains("10.0.0.") && !cfg.contains(":8443"), "{cfg}");
    let cfg_path = d.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let checked = Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let _lb = Killed::spawn(
        Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.path().join("haproxy.log")).unwrap()),
    );
    let lb_web = format!("{LB}:{web}");
    let auth = base64(b"viewer:viewer-password");
    let t = Instant::now();
    loop {
        let answer = std::net::TcpStream::connect(&lb_web)
            .is_ok()
            .then(|| http_get(&lb_web, "/healthz", ""));
        if answer.as_deref().is_some_and(|a| a.trim() == "ready") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the balancer's web frontend: {answer:?}\n{}",
            std::fs::read_to_string(d.path().join("haproxy.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("Logs")).unwrap();
    for i in 0..20 {
        std::fs::write(
            src.join(format!("Logs/first-{i:02}.log")),
            format!("line {i}\n"),
        )
        .unwrap();
    }
    let agent_config = write_agent_config(
        d.path(),
        "agent01",
        "agent-password",
        &[format!("{LB}:{ftp}")],
        &src,
        "max_backoff = \"1s\"\nmax_parallel_uploads = 4\n",
    );
    agent_once(&agent_config);
    let listing = || http_get(&lb_web, "/api/v1/browse/agent01/Logs", &auth);
    wait_for(
        "20 files listed through the balancer",
        Duration::from_secs(5),
        || listing().matches("first-").count() == 20,
    );
    // A stock client through the balancer too: curl, each transfer a session of its own, with
    // EPSV and with PASV (whose reply must announce the balancer's address): the passive
    // ranges of both servers are reached.
    for i in 0..4 {
        let body = format!("sent by curl through the balancer, {i}\n");
        let local = d.path().join(format!("curl-{i}.log"));
        std::fs::write(&local, &body).unwrap();
        let url = format!("ftp://{LB}:{ftp}/Logs/curl-{i}.log");
        let epsv = if i % 2 == 0 {
            "--ftp-pasv"
        } else {
            "--disable-epsv"
        };
        let curl = |args: &[&str]| {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "20",
                    "--user",
                    "agent01:agent-password",
                    epsv,
                ])
                .args(args)
                .output()
                .expect("curl (apt-get install curl)");
            assert!(
                out.status.success(),
                "curl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        curl(&["-T", &local.to_string_lossy(), &url]);
        assert_eq!(
            curl(&[&url]),
            body.as_bytes(),
            "{url} read back through the balancer"
        );
    }
    // Both servers took logins (leastconn spreads the agent's connections).
    let logins = |web: &str| {
        http_get(web, "/metrics", &auth)
            .lines()
            .find(|l| l.starts_with("logarchive_ftp_logins_total"))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (la, lb) = (logins(&server_a.web), logins(&server_b.web));
    assert!(la > 0 && lb > 0, "logins: A {la}, B {lb}");

    // A dies; the balancer's check takes it out; the agent goes on through B.
    server_a.child.kill_now();
    for i in 0..10 {
        std::fs::write(
            src.join(format!("Logs/second-{i:02}.log")),
            format!("more {i}\n"),
        )
        .unwrap();
    }
    agent_once(&agent_config);
    wait_for(
        "the new files listed through the balancer",
        Duration::from_secs(5),
        || listing().matches("second-").count() == 10,
    );
    // Each file once (the agent's 30, curl's 4), with its SHA-256.
    assert_eq!(
        pg.sql_in(
            "logarchive",
            "SELECT count(*), count(DISTINCT path), count(sha256) FROM files"
        )
        .unwrap(),
        "34|34|34"
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
