//! Test harness: a real server on 127.0.0.1 (port chosen by the OS) over a temp archive, accounts,
//! clients, and bounded waits.
#![allow(dead_code)]

use logarchive_ftp::client::{Client, ClientConfig, TlsMode};
use logarchive_ftp::rate::ByteRate;
use logarchive_ftp::rights::Rights;
use logarchive_ftp::server::{self, FtpEvent, FtpServerConfig, ServerHandle};
use logarchive_ftp::server::{Account, Accounts, Storage, VirtualPath, WriteMode};
pub use logarchive_store::s3::seaweed::SeaweedFs;
use logarchive_store::s3::S3Storage;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

pub const PASSWORD: &str = "correct horse battery";

/// The account presets the tests use (logarchive's roles, without the web part).
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Its own folder `/name`; uploads and appends, never overwrites or deletes.
    Agent,
    /// Reads everything.
    Viewer,
    /// Everything.
    Admin,
}

impl Role {
    pub fn preset(self, name: &str) -> (String, Rights) {
        match self {
            Role::Agent => (format!("/{name}"), Rights::agent()),
            Role::Viewer => ("/".into(), Rights::viewer()),
            Role::Admin => ("/".into(), Rights::ALL),
        }
    }
}

/// A change to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub password: Option<String>,
    pub rights: Option<Rights>,
    pub upload_limit: Option<ByteRate>,
    pub download_limit: Option<ByteRate>,
    pub allowed_ips: Option<Vec<ipnet::IpNet>>,
    pub enabled: Option<bool>,
    pub tls_required: Option<bool>,
}

/// Accounts in memory, changed while the server runs (the server asks for an account on every
/// operation, so changes apply at once, also to open sessions).
#[derive(Default)]
pub struct TestAccounts {
    accounts: RwLock<HashMap<String, (String, Account)>>,
    generation: Option<tokio::sync::watch::Sender<u64>>,
    /// Password checks made so far.
    pub verified: std::sync::atomic::AtomicUsize,
}

impl TestAccounts {
    fn new() -> Self {
        TestAccounts {
            accounts: RwLock::default(),
            generation: Some(tokio::sync::watch::channel(0).0),
            verified: Default::default(),
        }
    }

    fn changed(&self) {
        if let Some(g) = &self.generation {
            g.send_modify(|n| *n += 1);
        }
    }

    pub fn add(&self, password: &str, account: Account) {
        self.accounts
            .write()
            .unwrap()
            .insert(account.name.clone(), (password.to_string(), account));
        self.changed();
    }

    pub fn update(&self, name: &str, u: UserUpdate) -> Result<(), String> {
        {
            let mut all = self.accounts.write().unwrap();
            let (pw, a) = all.get_mut(name).ok_or(format!("no user {name}"))?;
            if let Some(p) = u.password {
                *pw = p;
                a.credentials += 1;
            }
            if let Some(r) = u.rights {
                a.rights = r;
            }
            if let Some(l) = u.upload_limit {
                a.upload_limit = l.0;
            }
            if let Some(l) = u.download_limit {
                a.download_limit = l.0;
            }
            if let Some(ips) = u.allowed_ips {
                a.allowed_ips = ips;
            }
            if let Some(e) = u.enabled {
                a.enabled = e;
            }
            if let Some(t) = u.tls_required {
                a.tls_required = t;
            }
        }
        self.changed();
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<(), String> {
        self.accounts
            .write()
            .unwrap()
            .remove(name)
            .ok_or(format!("no user {name}"))?;
        self.changed();
        Ok(())
    }
}

impl Accounts for TestAccounts {
    fn verify(&self, name: &str, password: &str) -> Option<Account> {
        self.verified
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let all = self.accounts.read().ok()?;
        let (pw, a) = all.get(name)?;
        (pw == password).then(|| a.clone())
    }

    fn get(&self, name: &str) -> Option<Account> {
        self.accounts.read().ok()?.get(name).map(|(_, a)| a.clone())
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.generation.as_ref().map(|g| g.subscribe())
    }
}

/// Where a test server keeps its files: the suites that say so run on each, and every other
/// test on the one `LOGARCHIVE_TEST_STORAGE` names (`local`, the default, or `s3`: test.sh runs
/// the FTP suites a second time so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A folder (`archive/` in the test's temp dir).
    Local,
    /// A real SeaweedFS (one per test binary), under a prefix of the test's own.
    S3,
}

impl Backend {
    /// The back-end `LOGARCHIVE_TEST_STORAGE` names.
    pub fn from_env() -> Backend {
        match std::env::var("LOGARCHIVE_TEST_STORAGE").as_deref() {
            Err(_) | Ok("") | Ok("local") => Backend::Local,
            Ok("s3") => Backend::S3,
            Ok(other) => panic!("LOGARCHIVE_TEST_STORAGE={other}: expected local or s3"),
        }
    }
}

/// A server over an S3 store under `prefix` of `weed`, its metadata in `dir`.
async fn serve_s3(
    cfg: FtpServerConfig,
    users: &Arc<TestAccounts>,
    weed: &SeaweedFs,
    prefix: &str,
    dir: &Path,
) -> (ServerHandle, Arc<dyn Storage>) {
    let store: Arc<dyn Storage> =
        Arc::new(S3Storage::open(weed.config(prefix, dir.join("store.db"))).expect("S3 back-end"));
    let h = server::start_with(cfg, Arc::clone(users) as _, Arc::clone(&store))
        .await
        .expect("server starts");
    (h, store)
}

fn seaweed() -> &'static SeaweedFs {
    static WEED: std::sync::OnceLock<SeaweedFs> = std::sync::OnceLock::new();
    WEED.get_or_init(|| SeaweedFs::start().expect("SeaweedFS for the S3 back-end"))
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub handle: ServerHandle,
    pub users: Arc<TestAccounts>,
    pub events: broadcast::Receiver<FtpEvent>,
    pub cert: Option<PathBuf>,
    pub backend: Backend,
    /// The store the server serves (for checks that go around FTP).
    pub store: Arc<dyn Storage>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut FtpServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, tune).await
    }

    /// A server on `backend` with the default configuration.
    pub async fn start_on(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_over(dir, Arc::new(TestAccounts::new()), backend, |_| {}).await
    }

    /// Starts a server over a data folder with new, empty accounts.
    pub async fn start_in(dir: tempfile::TempDir, tune: impl FnOnce(&mut FtpServerConfig)) -> Self {
        Self::start_over(
            dir,
            Arc::new(TestAccounts::new()),
            Backend::from_env(),
            tune,
        )
        .await
    }

    /// Starts a new server over this one's folder and accounts (after its shutdown).
    pub async fn restart(self, tune: impl FnOnce(&mut FtpServerConfig)) -> Self {
        let TestServer {
            dir,
            users,
            backend,
            ..
        } = self;
        Self::start_over(dir, users, backend, tune).await
    }

    /// A server on an S3 store of the test's own (one it may stop).
    pub async fn start_on_store(weed: &SeaweedFs) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let users = Arc::new(TestAccounts::new());
        let cfg = FtpServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("archive"));
        let (handle, store) = serve_s3(cfg, &users, weed, "own/", dir.path()).await;
        Self::assemble(dir, users, handle, store, Backend::S3)
    }

    async fn start_over(
        dir: tempfile::TempDir,
        users: Arc<TestAccounts>,
        backend: Backend,
        tune: impl FnOnce(&mut FtpServerConfig),
    ) -> Self {
        // A secret beside the archive, where logarchive keeps its users file: no path may reach it.
        std::fs::write(dir.path().join("users.toml"), "secret").expect("users file");
        let mut cfg =
            FtpServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("archive"));
        tune(&mut cfg);
        let (handle, store): (ServerHandle, Arc<dyn Storage>) = match backend {
            Backend::Local => {
                let store = server::LocalStorage::open(&cfg.archive_root).expect("archive");
                let h = server::start(cfg, Arc::clone(&users) as _)
                    .await
                    .expect("server starts");
                (h, Arc::new(store))
            }
            Backend::S3 => {
                // The prefix is kept in the folder, so a restart finds the same objects.
                let prefix_file = dir.path().join("s3-prefix");
                let prefix = std::fs::read_to_string(&prefix_file).unwrap_or_else(|_| {
                    let p = format!("t{:016x}/", rand::random::<u64>());
                    std::fs::write(&prefix_file, &p).expect("prefix file");
                    p
                });
                serve_s3(cfg, &users, seaweed(), &prefix, dir.path()).await
            }
        };
        Self::assemble(dir, users, handle, store, backend)
    }

    fn assemble(
        dir: tempfile::TempDir,
        users: Arc<TestAccounts>,
        handle: ServerHandle,
        store: Arc<dyn Storage>,
        backend: Backend,
    ) -> Self {
        let events = handle.subscribe();
        TestServer {
            dir,
            handle,
            users,
            events,
            cert: None,
            backend,
            store,
        }
    }

    /// Puts a file into the store around FTP (folders made as needed, a file there replaced),
    /// e.g. `/agent02/x.txt`.
    pub async fn put(&self, path: &str, data: &[u8]) {
        let vp = VirtualPath::parse(Path::new(path)).expect("path");
        let dir = VirtualPath::parse(Path::new(path).parent().expect("a folder")).expect("path");
        logarchive_store::whole::create_dirs(&*self.store, &dir)
            .await
            .expect("folders in the store");
        logarchive_store::whole::write(&*self.store, &vp, WriteMode::Replace { at: 0 }, data)
            .await
            .expect("a file in the store");
    }

    /// A file's bytes as the store holds them; `None` if there is no such file.
    pub async fn get(&self, path: &str) -> Option<Vec<u8>> {
        let vp = VirtualPath::parse(Path::new(path)).expect("path");
        let d = match self.store.read(&vp, 0).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("read {path}: {e}"),
        };
        tokio::task::spawn_blocking(move || {
            let mut d = d;
            let mut out = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = d.read(&mut buf).expect("read");
                if n == 0 {
                    return Some(out);
                }
                out.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap()
    }

    /// A server with FTPS from a certificate made here (rcgen) for "localhost".
    pub async fn start_tls(tune: impl FnOnce(&mut FtpServerConfig)) -> Self {
        Self::start_tls_on(Backend::from_env(), tune).await
    }

    /// [`TestServer::start_tls`] on `backend`.
    pub async fn start_tls_on(backend: Backend, tune: impl FnOnce(&mut FtpServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ck =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        let tls = server::tls_server_config(&cert, &key).expect("tls config");
        let mut s = Self::start_over(dir, Arc::new(TestAccounts::new()), backend, move |c| {
            c.tls = Some(tls);
            tune(c)
        })
        .await;
        s.cert = Some(cert);
        s
    }

    pub fn port(&self) -> u16 {
        self.handle.local_addr().port()
    }

    /// The archive folder of the local back-end.
    pub fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    /// The content of the archive's file `rel` (a path from the archive's root), read through
    /// the server's store; `None` if there is none.
    pub async fn stored(&self, rel: &str) -> Option<Vec<u8>> {
        let path = VirtualPath::parse(Path::new(rel)).expect("a path");
        match logarchive_store::whole::read(&*self.store, &path).await {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("reading {rel} from the store: {e}"),
        }
    }

    /// Makes the folder `rel` (and its parents) in the archive behind the server's back.
    pub async fn put_dir(&self, rel: &str) {
        let path = VirtualPath::parse(Path::new(rel)).expect("a path");
        logarchive_store::whole::create_dirs(&*self.store, &path)
            .await
            .expect("folders in the store");
    }

    /// The names in the archive's folder `rel`, sorted.
    pub async fn stored_names(&self, rel: &str) -> Vec<String> {
        let path = VirtualPath::parse(Path::new(rel)).expect("a path");
        let mut names: Vec<String> = self
            .store
            .list(&path)
            .await
            .unwrap_or_else(|e| panic!("listing {rel}: {e}"))
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        names.sort();
        names
    }

    pub fn add(&self, name: &str, role: Role) {
        let (home, rights) = role.preset(name);
        self.add_custom(name, &home, rights);
    }

    /// The account `name` requires TLS (control and data) from now on.
    pub fn require_tls(&self, name: &str) {
        self.users
            .update(
                name,
                UserUpdate {
                    tls_required: Some(true),
                    ..Default::default()
                },
            )
            .unwrap();
    }

    pub fn add_custom(&self, name: &str, home: &str, rights: Rights) {
        self.users.add(PASSWORD, Account::new(name, home, rights));
    }

    pub fn config(&self, user: &str) -> ClientConfig {
        let mut c = ClientConfig::new("127.0.0.1", self.port(), user, PASSWORD);
        c.io_timeout = Duration::from_secs(20);
        c.reconnect_attempts = 3;
        c.reconnect_base = Duration::from_millis(20);
        if let Some(cert) = &self.cert {
            c.host = "localhost".into();
            c.tls = TlsMode::Explicit {
                ca_file: Some(cert.clone()),
                insecure_skip_verify: false,
            };
        }
        c
    }

    pub async fn client(&self, user: &str) -> Client {
        Client::connect(self.config(user))
            .await
            .expect("client logs in")
    }

    /// Waits (bounded) for an event matching `pred`, skipping others.
    pub async fn event(&mut self, what: &str, pred: impl Fn(&FtpEvent) -> bool) -> FtpEvent {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Ok(e)) if pred(&e) => return e,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("event stream broke waiting for {what}: {e}"),
                Err(_) => panic!("no {what} event within 10 s"),
            }
        }
    }

    /// Every event received so far, without waiting.
    pub fn drain_events(&mut self) -> Vec<FtpEvent> {
        let mut v = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            v.push(e);
        }
        v
    }
}

/// Polls `cond` until it holds (bounded), with a clear failure message.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `len` pseudo-random bytes (deterministic for a seed).
pub fn random_file(path: &Path, len: usize, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut left = len;
    let mut buf = [0u8; 8192];
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Runs a Python 3 script (stdlib only) with the given environment; returns stdout, panics with
/// the script's stderr on failure.
pub async fn python(script: &str, env: &[(&str, String)]) -> String {
    let script = script.to_string();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    tokio::task::spawn_blocking(move || python_blocking(&script, &env))
        .await
        .expect("python thread")
}

fn python_blocking(script: &str, env: &[(String, String)]) -> String {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c").arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A snapshot of every file under `dir` (path → content hash), to prove nothing changed.
pub fn tree_snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
                out.push((p, "dir".into()));
            } else if m.is_file() {
                out.push((p.clone(), sha256_file(&p)));
            } else {
                out.push((p, "other".into()));
            }
        }
    }
    out.sort();
    out
}
