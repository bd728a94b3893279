//! The agent against the real FTP server (in-process, real sockets, real SQLite files), its
//! archive on the back-end `LOGARCHIVE_TEST_STORAGE` names: `local` (a folder, the default) or
//! `s3` (a real SeaweedFS; test.sh runs this suite a second time so).

use logarchive_agent::config::AgentConfig;
use logarchive_agent::{run, AgentError, Mode};
use logarchive_ftp::rights::Rights;
use logarchive_ftp::server::{self, FtpServerConfig, ServerHandle, Storage, VirtualPath};
use logarchive_server::users::{NewUser, Role, UserDb, UserUpdate};
use logarchive_store::s3::{seaweed::SeaweedFs, S3Storage};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const PW: &str = "agent password 1";

/// Tests that measure latency or this process's memory hold this while they run, so the 1 GiB
/// test beside them cannot skew what they measure.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether the archive is on S3 (`LOGARCHIVE_TEST_STORAGE=s3`) rather than in a folder.
fn on_s3() -> bool {
    match std::env::var("LOGARCHIVE_TEST_STORAGE").as_deref() {
        Err(_) | Ok("") | Ok("local") => false,
        Ok("s3") => true,
        Ok(other) => panic!("LOGARCHIVE_TEST_STORAGE={other}: expected local or s3"),
    }
}

fn seaweed() -> &'static SeaweedFs {
    static WEED: std::sync::OnceLock<SeaweedFs> = std::sync::OnceLock::new();
    WEED.get_or_init(|| SeaweedFs::start().expect("SeaweedFS for the S3 back-end"))
}

struct World {
    dir: tempfile::TempDir,
    users: Arc<UserDb>,
    server: Option<ServerHandle>,
    /// The store the server serves (kept across its restarts).
    store: Arc<dyn Storage>,
    port: u16,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        let users = UserDb::open(dir.path().join("users.toml")).unwrap();
        users
            .add(NewUser::with_role("agent01", PW, Role::Agent))
            .unwrap();
        let store: Arc<dyn Storage> = if on_s3() {
            let prefix = format!("agent{:016x}/", rand::random::<u64>());
            let cfg = seaweed().config(&prefix, dir.path().join("store.db"));
            Arc::new(S3Storage::open(cfg).expect("the S3 back-end"))
        } else {
            Arc::new(server::LocalStorage::open(&dir.path().join("archive")).expect("archive"))
        };
        let mut w = World {
            dir,
            users,
            server: None,
            store,
            port: 0,
        };
        w.start_server().await;
        w
    }

    async fn start_server(&mut self) {
        let cfg = FtpServerConfig::new(
            ([127, 0, 0, 1], self.port).into(),
            self.dir.path().join("archive"),
        );
        let h = server::start_with(cfg, Arc::clone(&self.users) as _, Arc::clone(&self.store))
            .await
            .unwrap();
        self.port = h.local_addr().port();
        self.server = Some(h);
    }

    /// The archived file `rel` of agent01 (through the store), if there is one.
    async fn stored(&self, rel: &str) -> Option<Vec<u8>> {
        let path = VirtualPath::parse(&Path::new("agent01").join(rel)).unwrap();
        match logarchive_store::whole::read(&*self.store, &path).await {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("reading {rel} from the store: {e}"),
        }
    }

    /// The size of agent01's archived file `rel`, if there is one.
    async fn stored_size(&self, rel: &str) -> Option<u64> {
        let path = VirtualPath::parse(&Path::new("agent01").join(rel)).unwrap();
        self.store.stat(&path).await.ok().map(|m| m.size)
    }

    /// Puts `bytes` at agent01's `rel` behind the server's back (as an earlier upload would).
    async fn put(&self, rel: &str, bytes: &[u8]) {
        let path = VirtualPath::parse(&Path::new("agent01").join(rel)).unwrap();
        let dir = VirtualPath::parse(Path::new("agent01").join(rel).parent().unwrap()).unwrap();
        logarchive_store::whole::create_dirs(&*self.store, &dir)
            .await
            .unwrap();
        logarchive_store::whole::write(
            &*self.store,
            &path,
            logarchive_ftp::server::WriteMode::CreateNew,
            bytes,
        )
        .await
        .unwrap();
    }

    /// Every archived file of agent01 (relative path → bytes), skipping `.logarchive`.
    async fn archived(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(d) = stack.pop() {
            let dir = VirtualPath::parse(&Path::new("agent01").join(&d)).unwrap();
            let entries = match self.store.list(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("listing {d}: {e}"),
            };
            for (name, meta) in entries {
                let rel = if d.is_empty() {
                    name
                } else {
                    format!("{d}/{name}")
                };
                if rel.starts_with(".logarchive") {
                    continue;
                }
                if meta.is_dir() {
                    stack.push(rel);
                } else {
                    let bytes = self.stored(&rel).await.unwrap();
                    out.push((rel, bytes));
                }
            }
        }
        out.sort();
        out
    }

    async fn stop_server(&mut self) {
        if let Some(h) = self.server.take() {
            h.shutdown().await;
        }
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn config(&self, extra: &str) -> AgentConfig {
        std::fs::write(self.dir.path().join("pw"), PW).unwrap();
        let text = format!(
            r#"
agent_id = "agent01"
server = "ftp://127.0.0.1:{port}"
user = "agent01"
password_file = "{pw}"
state_db = "{db}"
quiet_period = "0s"
scan_interval = "1s"
max_backoff = "1s"
status_interval = "1s"
{extra}
[[source]]
root = "{src}"
include = ["**/*.log", "**/*.txt"]
exclude = ["**/tmp/**"]
"#,
            port = self.port,
            pw = self.dir.path().join("pw").display(),
            db = self.dir.path().join("state/agent.db").display(),
            src = self.src().display(),
        );
        AgentConfig::parse(&text).unwrap()
    }

    async fn once(&self) -> Result<logarchive_agent::RunSummary, AgentError> {
        let (_tx, rx) = watch::channel(false);
        tokio::time::timeout(
            Duration::from_secs(120),
            run(self.config(""), Mode::Once, rx),
        )
        .await
        .expect("--once finishes")
    }
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn append(p: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// Every file under `dir` (relative path → bytes), skipping the agent's own `.logarchive`.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
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

#[tokio::test]
async fn initial_sync_then_restart_sends_nothing() {
    let w = World::new().await;
    write(
        &w.src().join("Logs/App/20240723/a.txt"),
        b"hello\nworld\r\n",
    );
    write(&w.src().join("Logs/App/20240723/empty.log"), b"");
    write(
        &w.src().join("Logs/Ünïcødé dir/with space.log"),
        "línea ✓\n".as_bytes(),
    );
    write(&w.src().join("deep/a/b/c/d/e/f.log"), &vec![b'x'; 200_000]);
    write(&w.src().join("Logs/tmp/skip.log"), b"excluded");
    write(&w.src().join("Logs/other.bin"), b"not matched");
    let s = w.once().await.unwrap();
    assert_eq!(s.files_archived, 4);
    let mut expect = tree(&w.src());
    expect.retain(|(p, _)| !p.contains("tmp/") && !p.ends_with(".bin"));
    assert_eq!(w.archived().await, expect, "the archive mirrors the source");
    assert_eq!(
        w.stored("Logs/App/20240723/a.txt").await.unwrap(),
        b"hello\nworld\r\n"
    );
    // No temporary upload left behind.
    assert!(!w
        .archived()
        .await
        .iter()
        .any(|(p, _)| p.contains("logarchive-tmp")));
    // The status document is there.
    let status: serde_json::Value =
        serde_json::from_slice(&w.stored(".logarchive/status.json").await.unwrap()).unwrap();
    assert_eq!(status["agent_id"], "agent01");
    assert_eq!(status["files_archived"], 4);
    assert_eq!(status["backlog_files"], 0);

    let again = w.once().await.unwrap();
    assert_eq!(
        (again.files_archived, again.bytes_sent),
        (0, 0),
        "a restart re-sends nothing"
    );
}

#[tokio::test]
async fn growing_files_are_appended_and_reverified() {
    let w = World::new().await;
    let f = w.src().join("app.log");
    write(&f, b"line 1\n");
    w.once().await.unwrap();
    append(&f, b"line 2\nline 3\n");
    let s = w.once().await.unwrap();
    assert_eq!(s.bytes_sent, 14, "only the new bytes");
    assert_eq!(
        w.stored("app.log").await.unwrap(),
        b"line 1\nline 2\nline 3\n"
    );
}

/// A kill between the rename to the final name and the state DB's commit, while the file kept
/// growing: the server holds the start of the file under its final name and the agent's row is
/// still pending. The agent must continue that file, not fail on it forever or copy it twice.
#[tokio::test]
async fn a_final_name_holding_the_start_of_the_file_is_continued() {
    let w = World::new().await;
    w.put("app.log", b"line 1\n").await;
    write(&w.src().join("app.log"), b"line 1\nline 2\n");
    let s = w.once().await.unwrap();
    assert_eq!(s.bytes_sent, 7, "only the bytes the server lacks");
    assert_eq!(w.stored("app.log").await.unwrap(), b"line 1\nline 2\n");
    assert!(w.stored("app.log.~2~").await.is_none(), "nothing twice");
    let again = w.once().await.unwrap();
    assert_eq!((again.files_archived, again.bytes_sent), (0, 0));
}

/// A final name holding bytes that are not the start of the local file is never replaced nor
/// appended to: the run fails naming it and both sides stay as they were.
#[tokio::test]
async fn a_final_name_holding_other_bytes_is_reported_and_left_alone() {
    let w = World::new().await;
    w.put("app.log", b"other\n").await;
    write(&w.src().join("app.log"), b"line 1\nline 2\n");
    let err = w.once().await.unwrap_err().to_string();
    assert!(
        err.contains("/app.log exists with other content (6 bytes)"),
        "{err}"
    );
    assert_eq!(w.stored("app.log").await.unwrap(), b"other\n");
    assert_eq!(
        std::fs::read(w.src().join("app.log")).unwrap(),
        b"line 1\nline 2\n"
    );
}

#[tokio::test]
async fn rotation_and_truncation_make_new_generations() {
    let w = World::new().await;
    let f = w.src().join("app.log");
    write(&f, b"first generation\n");
    w.once().await.unwrap();
    // logrotate: app.log -> app.log.1 (same file), a new app.log.
    std::fs::rename(&f, w.src().join("app.log.1")).unwrap();
    write(&f, b"second generation\n");
    // app.log.1 is not matched by *.log; add a txt to check the mapping of rotated files too.
    w.once().await.unwrap();
    assert_eq!(
        w.stored("app.log").await.unwrap(),
        b"first generation\n",
        "never overwritten"
    );
    assert_eq!(
        w.stored("app.log.~2~").await.unwrap(),
        b"second generation\n"
    );
    // Truncation in place: a third generation.
    std::fs::write(&f, b"3rd\n").unwrap();
    w.once().await.unwrap();
    assert_eq!(w.stored("app.log.~3~").await.unwrap(), b"3rd\n");
    assert_eq!(w.stored("app.log").await.unwrap(), b"first generation\n");
}

#[tokio::test]
async fn permission_errors_are_reported_and_retried_later() {
    let w = World::new().await;
    w.users
        .update(
            "agent01",
            UserUpdate {
                rights: Some(Rights::parse_list("list,read").unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
    write(&w.src().join("a.log"), b"data\n");
    match w.once().await {
        Err(AgentError::Incomplete { failed, last_error }) => {
            assert_eq!(failed, 1);
            assert!(
                last_error.to_lowercase().contains("permission"),
                "{last_error}"
            );
        }
        other => panic!("expected a reported failure, got {other:?}"),
    }
    assert!(w.stored("a.log").await.is_none());
    w.users
        .update(
            "agent01",
            UserUpdate {
                rights: Some(Rights::agent()),
                ..Default::default()
            },
        )
        .unwrap();
    w.once().await.unwrap();
    assert_eq!(w.stored("a.log").await.unwrap(), b"data\n");
}

/// Asks a running agent to stop and waits (bounded) for its clean exit.
async fn stop_agent(
    stop: watch::Sender<bool>,
    agent: tokio::task::JoinHandle<Result<logarchive_agent::RunSummary, AgentError>>,
) {
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .expect("clean stop within 30 s")
        .unwrap()
        .unwrap();
}

async fn wait_for_file(w: &World, rel: &str, content: &[u8], within: Duration) -> Duration {
    let t = Instant::now();
    while w.stored(rel).await.as_deref() != Some(content) {
        assert!(t.elapsed() < within, "{rel} not archived within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_file_is_archived_within_two_seconds_and_the_server_may_come_later() {
    let _alone = MEASURING.lock().await;
    let mut w = World::new().await;
    // The server is down when the agent starts.
    w.stop_server().await;
    write(
        &w.src().join("early.log"),
        b"written while the server was down\n",
    );
    std::fs::create_dir_all(w.src().join("Logs")).unwrap();
    let (stop, rx) = watch::channel(false);
    let mut cfg = w.config("");
    cfg.quiet_period = Duration::from_secs(30); // only the close event makes a file ready early
    cfg.scan_interval = Duration::from_secs(1);
    let db = cfg.state_db.clone();
    let agent = tokio::spawn(run(cfg, Mode::Forever, rx));
    // The server comes only once the agent runs and holds the file as waiting to be archived:
    // the path under test, whatever the machine's speed.
    let t = Instant::now();
    loop {
        let waiting = logarchive_agent::state::StateDb::open(&db)
            .and_then(|db| db.totals(0))
            .is_ok_and(|t| t.backlog_files >= 1);
        if waiting {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the agent did not find the file while the server was down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.start_server().await;
    wait_for_file(
        &w,
        "early.log",
        b"written while the server was down\n",
        Duration::from_secs(60),
    )
    .await;

    // A new file, written and closed: archived within 2 s (inotify close-write, no quiet wait).
    let t = Instant::now();
    write(&w.src().join("Logs/new.log"), b"fresh\n");
    wait_for_file(&w, "Logs/new.log", b"fresh\n", Duration::from_secs(2)).await;
    eprintln!("closed file archived after {:?}", t.elapsed());

    // The server restarts mid-run: the agent carries on.
    w.stop_server().await;
    write(&w.src().join("Logs/during.log"), b"during the outage\n");
    w.start_server().await;
    wait_for_file(
        &w,
        "Logs/during.log",
        b"during the outage\n",
        Duration::from_secs(60),
    )
    .await;

    stop_agent(stop, agent).await;
}

#[test]
fn bad_config_names_the_key() {
    let e = AgentConfig::parse("agent_id = \"a\"\nserver = \"ftp://h\"\nuser = \"u\"\nstate_db = \"/x\"\nscan_intervall = \"1s\"\n[[source]]\nroot = \"/r\"\n").unwrap_err();
    assert!(e.contains("scan_intervall"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_progress() {
    let w = World::new().await;
    write(&w.src().join("a.log"), b"0123456789\n");
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let (stop, rx) = watch::channel(false);
    let cfg = w.config(&format!("metrics_listen = \"{addr}\""));
    let agent = tokio::spawn(run(cfg, Mode::Forever, rx));
    wait_for_file(&w, "a.log", b"0123456789\n", Duration::from_secs(30)).await;
    let t = Instant::now();
    let body = loop {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        if out.contains("logarchive_agent_files_archived_total{agent=\"agent01\"} 1")
            || t.elapsed() > Duration::from_secs(10)
        {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains("logarchive_agent_files_archived_total{agent=\"agent01\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("logarchive_agent_bytes_sent_total{agent=\"agent01\"} 11"),
        "{body}"
    );
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

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
async fn a_gibibyte_log_is_archived_in_constant_memory() {
    let _alone = MEASURING.lock().await;
    let w = World::new().await;
    {
        use std::io::Write;
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(w.src().join("huge.log")).unwrap());
        let line = b"2024-07-23T10:11:12Z INFO something happened in a rather long log line\n";
        for _ in 0..(1 << 30) / line.len() {
            f.write_all(line).unwrap();
        }
    }
    let base = rss_kib();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(base));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p, d) = (peak.clone(), done.clone());
    let sampler = std::thread::spawn(move || {
        while !d.load(std::sync::atomic::Ordering::Relaxed) {
            p.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let s = w.once().await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(s.files_archived, 1);
    let src_len = std::fs::metadata(w.src().join("huge.log")).unwrap().len();
    assert_eq!(w.stored_size("huge.log").await.unwrap(), src_len);
    let growth = (peak.load(std::sync::atomic::Ordering::Relaxed) - base) / 1024;
    assert!(
        growth < 64,
        "agent + server grew by {growth} MiB for a 1 GiB file"
    );
}

#[tokio::test]
async fn files_unchanged_for_the_quiet_period_before_the_agent_started_are_ready_at_once() {
    let w = World::new().await;
    let f = w.src().join("old.log");
    write(&f, b"written an hour ago\n");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let mut cfg = w.config("");
    cfg.quiet_period = Duration::from_secs(60);
    let (_tx, rx) = watch::channel(false);
    let t = Instant::now();
    let s = tokio::time::timeout(Duration::from_secs(120), run(cfg, Mode::Once, rx))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.files_archived, 1);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "waited {:?} for a file quiet for an hour",
        t.elapsed()
    );
}

#[tokio::test]
async fn several_sources_map_under_their_prefixes() {
    let w = World::new().await;
    let other = w.dir.path().join("other-src");
    write(&other.join("sys/kern.log"), b"kernel\n");
    write(&w.src().join("app.log"), b"app\n");
    let mut cfg = w.config("");
    let mut second = cfg.sources[0].clone();
    second.root = other.clone();
    second.prefix = "system/".into();
    cfg.sources.push(second);
    let (_tx, rx) = watch::channel(false);
    let s = tokio::time::timeout(Duration::from_secs(120), run(cfg, Mode::Once, rx))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.files_archived, 2);
    assert_eq!(w.stored("app.log").await.unwrap(), b"app\n");
    assert_eq!(w.stored("system/sys/kern.log").await.unwrap(), b"kernel\n");
}

/// Sources are remembered by root and prefix, not by their place in the config: reordering them
/// and adding one in front re-sends nothing and names nothing as a new generation.
#[tokio::test]
async fn reordering_and_adding_sources_resends_nothing() {
    let w = World::new().await;
    let other = w.dir.path().join("other-src");
    let third = w.dir.path().join("third-src");
    write(&w.src().join("app.log"), b"app\n");
    write(&other.join("sys/kern.log"), b"kernel\n");
    write(&third.join("app.log"), b"a different app.log\n");
    let first = w.config("");
    let mut second = first.sources[0].clone();
    second.root = other.clone();
    second.prefix = "system".into();
    let mut cfg = first.clone();
    cfg.sources.push(second.clone());
    let (_tx, rx) = watch::channel(false);
    let s = run(cfg, Mode::Once, rx).await.unwrap();
    assert_eq!(s.files_archived, 2);

    let mut added = first.sources[0].clone();
    added.root = third.clone();
    added.prefix = "third".into();
    let mut cfg = first.clone();
    cfg.sources = vec![added, second, first.sources[0].clone()];
    let (_tx, rx) = watch::channel(false);
    let s = run(cfg, Mode::Once, rx).await.unwrap();
    assert_eq!(
        (s.files_archived, s.bytes_sent),
        (1, 20),
        "only the new source's file"
    );
    assert_eq!(
        w.stored("third/app.log").await.unwrap(),
        b"a different app.log\n"
    );
    assert_eq!(w.stored("app.log").await.unwrap(), b"app\n");
    assert!(
        !w.archived().await.iter().any(|(p, _)| p.contains(".~")),
        "{:?}",
        w.archived()
            .await
            .iter()
            .map(|(p, _)| p)
            .collect::<Vec<_>>()
    );
}

/// Bytes this process has read so far (files and sockets), from /proc/self/io.
fn bytes_read() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/self/io")
}

async fn wait_for_size(w: &World, rel: &str, size: u64, within: Duration) {
    let t = Instant::now();
    while w.stored_size(rel).await != Some(size) {
        assert!(
            t.elapsed() < within,
            "{rel} did not reach {size} bytes within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appending to a big log hashes only the new bytes: neither the agent nor the server reads the
/// 64 MiB already archived again (the agent keeps its hash state, the server its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_a_big_file_do_not_read_it_again() {
    let _alone = MEASURING.lock().await;
    let w = World::new().await;
    let f = w.src().join("big.log");
    write(&f, &vec![b'x'; 64 << 20]);
    let (stop, rx) = watch::channel(false);
    let agent = tokio::spawn(run(w.config(""), Mode::Forever, rx));
    let mut size = 64u64 << 20;
    wait_for_size(&w, "big.log", size, Duration::from_secs(60)).await;
    let before = bytes_read();
    for i in 0..3 {
        let line = format!("appended line {i}\n");
        append(&f, line.as_bytes());
        size += line.len() as u64;
        wait_for_size(&w, "big.log", size, Duration::from_secs(30)).await;
    }
    // Wait for the verification of the last append (the row is archived at that size).
    let t = Instant::now();
    loop {
        let doc = w
            .stored(".logarchive/status.json")
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap_or_default();
        if v["bytes_archived"] == size && v["backlog_files"] == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "not verified: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = bytes_read() - before;
    eprintln!("three appends to a 64 MiB file read {read} bytes");
    assert!(
        read < 8 << 20,
        "three appends of a few bytes read {read} bytes (the file is 64 MiB)"
    );
    assert_eq!(
        w.stored("big.log").await.unwrap(),
        std::fs::read(&f).unwrap()
    );
    stop_agent(stop, agent).await;
}

/// Waits (bounded) until agent01's published status names `url` as the server in use.
async fn status_says(w: &World, url: &str) {
    let t = Instant::now();
    loop {
        let doc: serde_json::Value = w
            .stored(".logarchive/status.json")
            .await
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if doc["server"] == url {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the status never said {url}: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `server` as a list: the first server is down, so the agent uploads to the second and says so
/// in its status; once the first answers again, after `failback_after` it is back on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_servers_fails_over_and_comes_back() {
    let mut w = World::new().await;
    let first = format!("ftp://127.0.0.1:{}", w.port);
    w.stop_server().await;
    // A second server over the same archive, as servers sharing one store do.
    let second_server = server::start_with(
        FtpServerConfig::new("127.0.0.1:0".parse().unwrap(), w.dir.path().join("archive")),
        Arc::clone(&w.users) as _,
        Arc::clone(&w.store),
    )
    .await
    .unwrap();
    let second = format!("ftp://127.0.0.1:{}", second_server.local_addr().port());
    let mut cfg = w.config("");
    cfg.server = logarchive_agent::config::ServerList::Many(vec![first.clone(), second.clone()]);
    cfg.failback_after = Duration::from_secs(1);
    cfg.status_interval = Duration::from_millis(200);
    let (stop, rx) = watch::channel(false);
    let agent = tokio::spawn(run(cfg, Mode::Forever, rx));

    write(&w.src().join("one.log"), b"while the first is down\n");
    wait_for_file(
        &w,
        "one.log",
        b"while the first is down\n",
        Duration::from_secs(30),
    )
    .await;
    status_says(&w, &second).await;

    // The first answers again: the agent comes back to it, and uploads there.
    w.start_server().await;
    let mut events = w.server.as_ref().unwrap().subscribe();
    status_says(&w, &first).await;
    write(&w.src().join("two.log"), b"after the first came back\n");
    wait_for_file(
        &w,
        "two.log",
        b"after the first came back\n",
        Duration::from_secs(30),
    )
    .await;
    let mut through_first = false;
    while let Ok(e) = events.try_recv() {
        through_first |= format!("{e:?}").contains("two.log");
    }
    assert!(
        through_first,
        "two.log did not arrive through the first server"
    );
    stop_agent(stop, agent).await;
    second_server.shutdown().await;
}
