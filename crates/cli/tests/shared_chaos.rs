//! Three `logarchive server` processes over one archive and one PostgreSQL catalog, ten agents
//! that know all three: while 2,000 files (ten of them growing, written by daemon-like writers
//! that hold them open) are archived, random servers are SIGKILLed 30 times and started again,
//! and PostgreSQL is restarted once. Afterwards every file equals its source, nothing is
//! archived twice, the catalog has each file once, and `archive fsck` (run beside the servers)
//! is clean. Twice: over one folder, and over a multi-node SeaweedFS (master, two volume
//! servers keeping each volume twice, filer and S3 gateway, each a process of its own), each
//! server with a data folder of its own and the segment maps in PostgreSQL, where one volume
//! server is SIGKILLed too and started again seconds later.

mod support;

use logarchive_server::pg_harness::Postgres;
use logarchive_store::s3::seaweed::SeaweedFs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const SERVERS: usize = 3;
const AGENTS: usize = 10;
const FILES_PER_AGENT: usize = 200;
const SERVER_KILLS: usize = 30;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon's log: held open, a numbered line every few milliseconds until `stop`.
fn writer(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            writeln!(f, "{} line {i:08} of a busy daemon", path.display()).unwrap();
            i += 1;
            // The pace of a busy daemon (this is the load, not a synchronisation).
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

#[test]
fn three_servers_killed_thirty_times_and_a_postgresql_restart_lose_and_duplicate_nothing() {
    chaos(None);
}

#[test]
fn three_servers_on_one_bucket_killed_thirty_times_with_a_postgresql_restart_and_a_lost_volume_server(
) {
    chaos(Some(
        SeaweedFs::start_cluster().expect("SeaweedFS (cluster)"),
    ));
}

/// The run over one folder (`weed`: `None`) or over the bucket of `weed`.
fn chaos(mut weed: Option<SeaweedFs>) {
    let pg = Postgres::start().unwrap();
    let url = pg.database("chaos").unwrap();
    let d = tempfile::tempdir().unwrap();
    // Over a folder all servers share `data`; over a bucket each has `data0`, `data1`, ...
    let data = d.path().join("data");
    let storage = match &weed {
        None => String::new(),
        Some(w) => s3_storage(w, d.path(), "chaos") + "gc_grace = \"2s\"\n",
    };
    let configs: Vec<(PathBuf, u16)> = (0..SERVERS)
        .map(|i| {
            let (ftp, web) = (free_port(), free_port());
            let p = d.path().join(format!("server{i}.toml"));
            let own = match weed {
                None => data.clone(),
                Some(_) => d.path().join(format!("data{i}")),
            };
            std::fs::write(
                &p,
                format!(
                    "data = \"{}\"\nftp_listen = \"127.0.0.1:{ftp}\"\nweb_listen = \"127.0.0.1:{web}\"\n\
                     [catalog]\nurl = \"{url}\"\npassword_file = \"{}\"\n{storage}",
                    own.display(),
                    pg.password_file().display()
                ),
            )
            .unwrap();
            (p, ftp)
        })
        .collect();
    for a in 0..AGENTS {
        let name = format!("agent{a:02}");
        let added = user_add_to(&configs[0].0, &name, &format!("{name}-password"), "agent");
        assert!(added.0, "user add {name}: {}", added.1);
    }
    assert!(user_add_to(&configs[0].0, "reader", "reader-password", "viewer").0);
    let start = |i: usize| {
        let mut c = bin();
        c.args(["server", "--config"]).arg(&configs[i].0);
        start_server(c)
    };
    let mut servers: Vec<Server> = (0..SERVERS).map(start).collect();

    // The sources: 200 files per agent (a few of 1 MB, so kills land mid-transfer) and one
    // growing log each.
    let mut rng = Rng(1414);
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    let mut agents = Vec::new();
    for a in 0..AGENTS {
        let src = d.path().join(format!("src{a:02}"));
        for i in 0..FILES_PER_AGENT {
            let size = if i % 100 == 0 {
                1_000_000
            } else {
                100 + rng.next() as usize % 4000
            };
            let bytes: Vec<u8> = (0..size).map(|_| (rng.next() % 251) as u8).collect();
            let p = src.join(format!("Logs/App{:02}/f{i:04}.log", i % 8));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        writers.push(writer(src.join("Logs/busy.log"), Arc::clone(&stop)));
        let servers: Vec<String> = (0..SERVERS)
            .map(|k| format!("127.0.0.1:{}", configs[(a + k) % SERVERS].1))
            .collect();
        let id = format!("agent{a:02}");
        let config = write_agent_config(
            d.path(),
            &id,
            &format!("{id}-password"),
            &servers,
            &src,
            "scan_interval = \"1s\"\nmax_backoff = \"1s\"\nfailback_after = \"2s\"\n\
             max_parallel_uploads = 2\n",
        );
        agents.push(spawn_agent(&config));
    }

    // The chaos: random servers killed and started again at random moments; PostgreSQL
    // restarted once half-way.
    for k in 0..SERVER_KILLS {
        // Random moments: the faults being injected, not synchronisation.
        std::thread::sleep(Duration::from_millis(200 + rng.next() % 500));
        let i = rng.next() as usize % SERVERS;
        servers[i].child.kill_now();
        std::thread::sleep(Duration::from_millis(rng.next() % 300));
        servers[i] = start(i);
        if k == SERVER_KILLS / 2 {
            pg.stop().unwrap();
            std::thread::sleep(Duration::from_millis(500 + rng.next() % 1000));
            pg.start_again().unwrap();
        }
        if let Some(w) = weed.as_mut().filter(|_| k == SERVER_KILLS / 4) {
            // One of the two copies of every volume gone for a few seconds: reads go to the
            // other, writes wait (the store's client retries) or fail with a 4xx and are
            // retried by the agents.
            let v = rng.next() as usize % w.volume_servers();
            w.kill_volume_server(v);
            std::thread::sleep(Duration::from_millis(2000 + rng.next() % 2000));
            w.start_volume_server(v).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }

    // Every file equal to its source, in every agent's home (bounded).
    let chaos_over = Instant::now();
    let deadline = chaos_over + Duration::from_secs(180);
    loop {
        let mut behind = 0;
        let mut extra = 0;
        for a in 0..AGENTS {
            let want = sha_tree(&d.path().join(format!("src{a:02}")));
            if weed.is_some() {
                // What the store holds, asked over FTP (extra files: the catalog's count below).
                let paths = want
                    .iter()
                    .map(|(p, h)| (format!("/agent{a:02}/{p}"), h.clone()));
                behind += archived_differently(configs[0].1, paths.collect());
                continue;
            }
            let got = sha_tree(&data.join(format!("archive/agent{a:02}")));
            behind += want.iter().filter(|(p, h)| got.get(*p) != Some(h)).count();
            extra += got.keys().filter(|p| !want.contains_key(*p)).count();
        }
        if behind == 0 && extra == 0 {
            println!(
                "every file archived {:.1} s after the last fault",
                chaos_over.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not converged: {behind} files differ or are missing, {extra} extra"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for mut a in agents {
        a.terminate();
    }

    // The catalog: each file once, no temporary name (bounded: the writers' last events).
    let total = AGENTS * (FILES_PER_AGENT + 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = pg
            .sql_in(
                "chaos",
                "SELECT count(*) || ' ' || count(DISTINCT path) || ' ' || \
                 count(*) FILTER (WHERE path LIKE '%logarchive-tmp%') FROM files",
            )
            .unwrap();
        if counts == format!("{total} {total} 0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "catalog: {counts}, want {total} {total} 0"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // fsck beside the running servers (on the bucket: every object read back and checked).
    let mut fsck = bin();
    fsck.args(["archive", "--config"])
        .arg(&configs[0].0)
        .arg("fsck");
    if weed.is_some() {
        fsck.arg("--full");
    }
    let out = fsck.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(servers);
}

/// How many of `want` (archive path → SHA-256) the server at `port` does not hold with that
/// SHA-256, asked over FTP as `reader`.
fn archived_differently(port: u16, want: Vec<(String, String)>) -> usize {
    use logarchive_ftp::client::{Client, ClientConfig};
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let mut cfg = ClientConfig::new("127.0.0.1", port, "reader", "reader-password");
            cfg.reconnect_attempts = 2;
            let Ok(mut c) = Client::connect(cfg).await else {
                return want.len();
            };
            let mut wrong = 0;
            for (p, h) in &want {
                if c.remote_sha256(p).await.ok().as_ref() != Some(h) {
                    wrong += 1;
                }
            }
            wrong
        })
}
