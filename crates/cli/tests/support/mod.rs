//! What the tests that run the `logarchive` binary as processes share: the binary, children that
//! cannot outlive a failing test, a started server, tree snapshots. Each test binary uses a part.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test, with warnings-only logging and no password from the environment.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logarchive"));
    c.env_remove("LOGARCHIVE_PASSWORD")
        .env("LOGARCHIVE_LOG", "warn");
    c
}

/// A child process that is killed and reaped when dropped, so a failing test leaves nothing
/// running (a leftover server would hold its ports and files for the tests after it).
pub struct Killed(pub Child);

impl Killed {
    pub fn spawn(cmd: &mut Command) -> Killed {
        Killed(cmd.spawn().expect("starting a child process"))
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill_now(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then its exit status (bounded: 30 s).
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with(SIGTERM)
    }

    /// Sends `signal`, then returns the exit status (bounded: 30 s).
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        send_signal(self.0.id(), signal);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.0.try_wait().expect("waiting for a child") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not stop within 30 s of signal {signal}",
                self.0.id()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Deref for Killed {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill_now();
    }
}

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

fn send_signal(pid: u32, signal: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) takes plain integers; a stale pid only makes it fail.
    let rc = unsafe { kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// `logarchive user --data DATA add NAME --password-stdin EXTRA…`, which must succeed.
pub fn add_user(data: &Path, name: &str, password: &str, extra: &[&str]) {
    let mut child = Killed::spawn(
        bin()
            .args(["user", "--data"])
            .arg(data)
            .args(["add", name, "--password-stdin"])
            .args(extra)
            .stdin(Stdio::piped()),
    );
    let mut stdin = child.stdin.take().expect("piped stdin");
    writeln!(stdin, "{password}").expect("writing the password");
    drop(stdin);
    let status = child.wait().expect("waiting for user add");
    assert!(status.success(), "user add {name} failed: {status}");
}

/// `logarchive user --config CONFIG add NAME --role ROLE --password-stdin`: whether it
/// succeeded, and what it said on stderr.
pub fn user_add_to(config: &Path, name: &str, password: &str, role: &str) -> (bool, String) {
    let mut child = bin()
        .args(["user", "--config"])
        .arg(config)
        .args(["add", name, "--role", role, "--password-stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting user add");
    let mut stdin = child.stdin.take().expect("piped stdin");
    writeln!(stdin, "{password}").expect("writing the password");
    drop(stdin);
    let out = child.wait_with_output().expect("waiting for user add");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `DIR/ID.toml`: agent `ID` logging in as itself (its password in `DIR/ID.pw`, written
/// here too) to the servers `servers` (`host:port`, in the order the agent tries them), its
/// state in `DIR/ID.db`, archiving `src` with no quiet period; `extra` adds keys (whole lines).
/// Returns the config's path.
pub fn write_agent_config(
    dir: &Path,
    id: &str,
    password: &str,
    servers: &[String],
    src: &Path,
    extra: &str,
) -> PathBuf {
    let pw = dir.join(format!("{id}.pw"));
    std::fs::write(&pw, format!("{password}\n")).expect("writing the agent's password");
    let list: Vec<String> = servers.iter().map(|s| format!("\"ftp://{s}\"")).collect();
    let config = dir.join(format!("{id}.toml"));
    std::fs::write(
        &config,
        format!(
            "agent_id = \"{id}\"\nserver = [{}]\nuser = \"{id}\"\npassword_file = \"{}\"\n\
             state_db = \"{}\"\nquiet_period = \"0s\"\n{extra}[[source]]\nroot = \"{}\"\n",
            list.join(", "),
            pw.display(),
            dir.join(format!("{id}.db")).display(),
            src.display()
        ),
    )
    .expect("writing the agent's config");
    config
}

/// `logarchive agent --once --config CONFIG`, which must succeed.
pub fn agent_once(config: &Path) {
    let out = bin()
        .args(["agent", "--once", "--config"])
        .arg(config)
        .output()
        .expect("running agent --once");
    assert!(
        out.status.success(),
        "agent --once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `logarchive agent --config CONFIG` in the background, output discarded.
pub fn spawn_agent(config: &Path) -> Killed {
    Killed::spawn(
        bin()
            .args(["agent", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// `logarchive server --data DATA --ftp-listen FTP --web-listen 127.0.0.1:0`.
pub fn server_command(data: &Path, ftp: &str) -> Command {
    let mut c = bin();
    c.args(["server", "--data"]).arg(data).args([
        "--ftp-listen",
        ftp,
        "--web-listen",
        "127.0.0.1:0",
    ]);
    c
}

/// A started `logarchive server`, killed when dropped.
pub struct Server {
    pub child: Killed,
    pub ftp: SocketAddr,
    /// host:port of the web interface.
    pub web: String,
    /// The first start's generated admin password, if this start printed one.
    pub admin_password: Option<String>,
}

/// Starts `cmd` (a `logarchive server` command line, possibly behind `ip netns exec`) and reads
/// its addresses from the line it prints once it listens.
pub fn start_server(mut cmd: Command) -> Server {
    let mut child = Killed::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::null()));
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut admin_password = None;
    loop {
        let line = match lines.next() {
            Some(Ok(l)) => l,
            other => panic!("the server exited before it listened: {other:?}"),
        };
        if let Some(rest) = line.split("password '").nth(1) {
            admin_password = rest.split('\'').next().map(str::to_string);
        }
        let Some(rest) = line.split("web on ").nth(1) else {
            continue;
        };
        let web = rest
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_string();
        let ftp = rest
            .split(", FTP on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no FTP address in {line:?}"));
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        return Server {
            child,
            ftp,
            web,
            admin_password,
        };
    }
}

/// Every file under `dir` (relative path, bytes), sorted; the agent's `.logarchive/` scratch
/// folder is left out. A folder that does not exist (yet) is empty.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .into_owned();
            if rel.starts_with(".logarchive") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((rel, bytes));
            }
        }
    }
    out.sort();
    out
}

/// Like [`tree`], with each file's SHA-256 instead of its bytes.
pub fn sha_tree(dir: &Path) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    tree(dir)
        .into_iter()
        .map(|(p, b)| (p, hex::encode(Sha256::digest(b))))
        .collect()
}

/// A small deterministic generator (an LCG): the same seed gives the same files and moments.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// GET `path` from the web interface at `web` (host:port) with basic auth `auth` (base64 of
/// `name:password`); the body.
pub fn http_get(web: &str, path: &str, auth: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(web).expect("connecting to the web interface");
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {web}\r\nAuthorization: Basic {auth}\r\n\r\n"
    )
    .expect("sending a request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("reading the answer");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Standard base64 with padding, for HTTP basic auth headers.
pub fn base64(input: &[u8]) -> String {
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

/// Asserts that every file of `want` (path below `/agent01` → SHA-256, as [`sha_tree`] gives)
/// is on the server at `port` with that SHA-256, asked over FTP as `reader`/`reader-password`:
/// what the store holds, whatever the back-end.
pub fn assert_archived_over_ftp(port: u16, want: &BTreeMap<String, String>) {
    use logarchive_ftp::client::{Client, ClientConfig};
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let mut cfg = ClientConfig::new("127.0.0.1", port, "reader", "reader-password");
            cfg.reconnect_attempts = 2;
            let mut c = Client::connect(cfg).await.expect("reader logs in");
            let mut wrong = Vec::new();
            for (p, h) in want {
                match c.remote_sha256(&format!("/agent01/{p}")).await {
                    Ok(got) if &got == h => {}
                    other => wrong.push(format!("{p}: {other:?}")),
                }
            }
            assert!(
                wrong.is_empty(),
                "{} lost or different: {wrong:?}",
                wrong.len()
            );
        });
}

/// `logarchive archive --config CONFIG --data DATA ARGS...`: success, stdout, stderr.
pub fn archive_command(config: &Path, data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = bin()
        .arg("archive")
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `[storage]` section for an archive under `prefix` in `weed`'s bucket, as an operator
/// writes it: the access key in `DIR/s3.env` (written here), never in the config.
pub fn s3_storage(
    weed: &logarchive_store::s3::seaweed::SeaweedFs,
    dir: &Path,
    prefix: &str,
) -> String {
    let creds = weed.credentials();
    let file = dir.join("s3.env");
    std::fs::write(
        &file,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            creds.access_key_id,
            creds.secret()
        ),
    )
    .expect("writing the credentials file");
    format!(
        "[storage]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"{prefix}\"\n\
         credentials_file = \"{}\"\n",
        weed.endpoint,
        weed.bucket,
        file.display()
    )
}
