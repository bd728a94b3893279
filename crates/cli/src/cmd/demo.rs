//! `logarchive demo`: the whole system in one process, to see it work. An archive server, N
//! agents (real agents with their own state databases, talking FTP to the server over
//! loopback) and one log writer per agent producing realistic logs in dated folders: files that
//! grow, new files that appear, a service log held open and rotated in each of logrotate's modes
//! in turn, some ERROR lines.

use anyhow::{Context, Result};
use clap::Args;
use logarchive_agent::config::AgentConfig;
use logarchive_agent::Mode;
use logarchive_server::config::{Overrides, ServerConfigFile, ServerSettings};
use logarchive_server::users::{random_password, NewUser, Role};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub struct DemoArgs {
    /// Keep everything in this folder (default: a temporary folder, removed at exit)
    #[arg(long)]
    data: Option<PathBuf>,
    /// How many agents (and log writers) to run
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
    agents: u16,
    /// FTP control address [default: 127.0.0.1:2121]
    #[arg(long)]
    ftp_listen: Option<SocketAddr>,
    /// Web interface address [default: 127.0.0.1:8080]
    #[arg(long)]
    web_listen: Option<SocketAddr>,
}

pub fn run(args: DemoArgs) -> Result<()> {
    // A temporary folder lives as long as this guard.
    let (root, _temp) = match &args.data {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("logarchive-demo-")
                .tempdir()
                .context("creating a temporary folder")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let settings = ServerSettings::resolve(
        ServerConfigFile::default(),
        Overrides {
            data: Some(root.join("server")),
            ftp_listen: args.ftp_listen,
            web_listen: args.web_listen,
            ..Default::default()
        },
    )?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let signals = super::server::Signals::install()?;
        let running = logarchive_server::start(&settings).await?;
        let admin_password = match &running.initial_admin_password {
            Some(p) => p.clone(),
            None => "(unchanged: the data folder already had accounts)".into(),
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for n in 1..=args.agents {
            let id = format!("agent{n:02}");
            let cfg = prepare_agent(&root, &id, &running, running.ftp.local_addr())?;
            let logs = cfg.sources[0].root.clone();
            tasks.push(tokio::spawn(write_logs(logs, n as u64, stop_rx.clone())));
            let stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = logarchive_agent::run(cfg, Mode::Forever, stop).await {
                    tracing::error!(agent = id, "{e}");
                }
            }));
        }
        println!(
            "logarchive demo: open http://{}/ and log in as 'admin' with password '{admin_password}'",
            running.web_addr
        );
        println!(
            "  {} agents are archiving logs written under {} over FTP on {}; data in {}. Ctrl-C stops.",
            args.agents,
            root.join("sources").display(),
            running.ftp.local_addr(),
            root.join("server").display()
        );
        signals.wait().await;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        running.shutdown().await;
        Ok(())
    })
}

/// An agent account (random password, in a 0600 file), its log folder and its configuration.
fn prepare_agent(
    root: &Path,
    id: &str,
    running: &logarchive_server::Running,
    ftp: SocketAddr,
) -> Result<AgentConfig> {
    let dir = root.join("agents").join(id);
    std::fs::create_dir_all(&dir)?;
    let password_file = dir.join("password");
    if running.users.get(id).is_none() {
        let password = random_password();
        running
            .users
            .add(NewUser::with_role(id, &password, Role::Agent))?;
        write_private(&password_file, &password)?;
    }
    let logs = root.join("sources").join(id);
    std::fs::create_dir_all(&logs)?;
    let text = format!(
        r#"agent_id = "{id}"
server = "ftp://{ftp}"
user = "{id}"
password_file = {pw:?}
state_db = {db:?}
scan_interval = "10s"
quiet_period = "2s"
status_interval = "5s"
[[source]]
root = {logs:?}
include = ["**/*.log"]
"#,
        pw = password_file.display().to_string(),
        db = dir.join("state.db").display().to_string(),
        logs = logs.display().to_string(),
    );
    std::fs::write(dir.join("agent.toml"), &text)?;
    AgentConfig::parse(&text).map_err(|e| anyhow::anyhow!("demo agent config: {e}"))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{text}")?;
    Ok(())
}

/// A small deterministic generator (no crate needed for demo noise).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// (`2024-07-23 10:04:05.123`, `20240723`), UTC.
fn now() -> (String, String) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let ts = logarchive_server::web::time::format_ms(ms);
    let day = ts[..10].replace('-', "");
    (format!("{ts}.{:03}", ms % 1000), day)
}

fn line(r: &mut Rng, ts: &str) -> String {
    let level = match r.next() % 100 {
        0..=2 => "ERROR",
        3..=9 => "WARN",
        10..=24 => "DEBUG",
        _ => "INFO",
    };
    let component = r.pick(&["http", "db", "cache", "auth", "queue", "scheduler"]);
    let msg = match level {
        "ERROR" => r.pick(&[
            "request failed: upstream timed out after 30s",
            "could not write to disk: No space left on device",
            "connection reset by peer while reading response",
        ]),
        "WARN" => r.pick(&[
            "slow query (1.8s)",
            "retrying after 503",
            "cache miss storm",
        ]),
        _ => r.pick(&[
            "GET /api/orders 200",
            "POST /api/login 200",
            "query ok",
            "job finished",
            "cache refreshed",
        ]),
    };
    format!(
        "{ts} {level:<5} [{component}] req={:08x} {msg} ({} ms)\n",
        r.next() as u32,
        r.next() % 900 + 3
    )
}

fn append(path: &Path, text: &str) {
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

/// `Logs/Service/service.log` as a daemon writes it: held open, a few lines every tick, each with
/// a sequence number (`seq=N`), and rotated by the demo itself the way logrotate does, in each of
/// its modes in turn; after a rotation that moves the file away the daemon reopens its log about
/// a second later, as after a HUP.
struct Service {
    dir: PathBuf,
    file: Option<std::fs::File>,
    reopen_at: Option<std::time::Instant>,
    rotations: u64,
    seq: u64,
}

/// The rotation modes the demo cycles through.
const MODES: [&str; 4] = [
    "create",
    "copytruncate",
    "compress+delaycompress",
    "dateext",
];

impl Service {
    fn new(dir: PathBuf) -> Service {
        Service {
            dir,
            file: None,
            reopen_at: None,
            rotations: 0,
            seq: 0,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("service.log")
    }

    fn open(&mut self) {
        let _ = std::fs::create_dir_all(&self.dir);
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .ok();
    }

    fn write(&mut self, r: &mut Rng, ts: &str) {
        if self.file.is_none()
            || self
                .reopen_at
                .is_some_and(|t| std::time::Instant::now() >= t)
        {
            self.open();
            self.reopen_at = None;
        }
        let mut text = String::new();
        for _ in 0..(r.next() % 3 + 1) {
            let l = line(r, ts);
            text.push_str(&l.replacen(" req=", &format!(" seq={} req=", self.seq), 1));
            self.seq += 1;
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.write_all(text.as_bytes());
        }
    }

    /// `service.log.N` → `.N+1` (and `.N.gz`), keeping three; like `rotate 3`.
    fn shift(&self) {
        for n in (1..=3).rev() {
            for ext in ["", ".gz"] {
                let from = self.dir.join(format!("service.log.{n}{ext}"));
                if !from.exists() {
                    continue;
                }
                if n == 3 {
                    let _ = std::fs::remove_file(&from);
                } else {
                    let _ = std::fs::rename(
                        &from,
                        self.dir.join(format!("service.log.{}{ext}", n + 1)),
                    );
                }
            }
        }
    }

    fn rotate(&mut self, day: &str) {
        let mode = MODES[(self.rotations % MODES.len() as u64) as usize];
        self.rotations += 1;
        let log = self.log();
        let moved = match mode {
            "create" => {
                self.shift();
                std::fs::rename(&log, self.dir.join("service.log.1")).is_ok()
            }
            "copytruncate" => {
                // The daemon keeps its file: copy it, then empty it in place.
                self.shift();
                if std::fs::copy(&log, self.dir.join("service.log.1")).is_ok() {
                    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&log) {
                        let _ = f.set_len(0);
                    }
                }
                false
            }
            "compress+delaycompress" => {
                self.shift();
                let two = self.dir.join("service.log.2");
                if gzip(&two, &self.dir.join("service.log.2.gz")).is_ok() {
                    let _ = std::fs::remove_file(&two);
                }
                std::fs::rename(&log, self.dir.join("service.log.1")).is_ok()
            }
            _ => {
                let stamp = format!("{day}-{}", self.rotations);
                std::fs::rename(&log, self.dir.join(format!("service.log-{stamp}"))).is_ok()
            }
        };
        if moved {
            // logrotate's `create`: a new empty file, which the daemon reopens a bit later.
            let _ = std::fs::File::create(&log);
            self.reopen_at = Some(std::time::Instant::now() + Duration::from_secs(1));
        }
    }
}

fn gzip(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut input = std::fs::File::open(from)?;
    let out = std::fs::File::create(to)?;
    let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    std::io::copy(&mut input, &mut e)?;
    e.finish()?;
    Ok(())
}

/// Writes logs like a busy little service: `Logs/App/<day>/app.log` and
/// `Logs/Web/<day>/access.log` grow; `Logs/Jobs/<day>/job-N.log` appear whole now and then;
/// `Logs/Service/service.log` is held open and rotated every 15 s ([`Service`]). Two closed days
/// of history first.
async fn write_logs(root: PathBuf, seed: u64, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for back in [2, 1] {
        let ts = logarchive_server::web::time::format_ms(now_ms - back * 86_400_000);
        let day = ts[..10].replace('-', "");
        let mut text = String::new();
        for i in 0..500 {
            let t = format!("{} {:02}:{:02}:00.000", &ts[..10], i / 60 % 24, i % 60);
            text.push_str(&line(&mut r, &t));
        }
        append(&root.join(format!("Logs/App/{day}/app.log")), &text);
    }
    let mut service = Service::new(root.join("Logs/Service"));
    let mut tick = 0u64;
    loop {
        let (ts, day) = now();
        let mut app = String::new();
        for _ in 0..(r.next() % 5 + 1) {
            app.push_str(&line(&mut r, &ts));
        }
        append(&root.join(format!("Logs/App/{day}/app.log")), &app);
        let access = format!(
            "10.0.{}.{} - - [{ts}] \"GET /{} HTTP/1.1\" {} {}\n",
            r.next() % 255,
            r.next() % 255,
            r.pick(&["", "orders", "static/app.js", "login", "api/v1/items"]),
            r.pick(&["200", "200", "200", "304", "404", "500"]),
            r.next() % 50_000
        );
        append(&root.join(format!("Logs/Web/{day}/access.log")), &access);
        service.write(&mut r, &ts);
        if tick % 30 == 29 {
            let mut job = String::new();
            for _ in 0..50 {
                job.push_str(&line(&mut r, &ts));
            }
            append(&root.join(format!("Logs/Jobs/{day}/job-{tick}.log")), &job);
            // Rotation in the next mode: the agent follows the rotated file and archives the
            // new one as the next generation; nothing is lost and nothing stored twice.
            service.rotate(&day);
        }
        tick += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}
