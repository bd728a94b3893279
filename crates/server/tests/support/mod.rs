//! A real archive server (FTP + web) on OS-chosen ports in a temp data folder, and an HTTP
//! client that keeps a session cookie.
#![allow(dead_code)]

use logarchive_ftp::client::{Client, ClientConfig};
use logarchive_server::config::{Overrides, ServerConfigFile, ServerSettings};
use logarchive_server::users::{NewUser, Role};
use logarchive_server::Running;
use logarchive_store::{whole, VirtualPath, WriteMode};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Server {
    pub running: Running,
    pub data: tempfile::TempDir,
    pub admin_password: String,
    pub base: String,
    pub backend: Backend,
}

pub const PASSWORD: &str = "a long test password";

/// The defaults over `data`, listening on OS-chosen loopback ports.
pub fn settings(data: &Path) -> ServerSettings {
    ServerSettings::resolve(
        ServerConfigFile::default(),
        Overrides {
            data: Some(data.to_path_buf()),
            ftp_listen: Some("127.0.0.1:0".parse().unwrap()),
            web_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Where a test server keeps the archive: the suites that say so run on each, and every other
/// test on the one `LOGARCHIVE_TEST_STORAGE` names (`local`, the default, or `s3`: test.sh runs
/// the web suite a second time so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `DATA/archive/`.
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

pub fn seaweed() -> &'static logarchive_store::s3::seaweed::SeaweedFs {
    static WEED: std::sync::OnceLock<logarchive_store::s3::seaweed::SeaweedFs> =
        std::sync::OnceLock::new();
    WEED.get_or_init(|| logarchive_store::s3::seaweed::SeaweedFs::start().expect("SeaweedFS"))
}

impl Server {
    /// Starts on a fresh data folder; `prepare` may put files in the archive first (they are
    /// reconciled into the catalog at start). The archive is on [`Backend::from_env`]: on S3,
    /// what `prepare` wrote is copied into the store before the server starts.
    pub async fn start_with(
        prepare: impl FnOnce(&Path),
        tune: impl FnOnce(&mut ServerSettings),
    ) -> Server {
        Server::start_prepared(Backend::from_env(), prepare, tune).await
    }

    async fn start_prepared(
        backend: Backend,
        prepare: impl FnOnce(&Path),
        tune: impl FnOnce(&mut ServerSettings),
    ) -> Server {
        let data = tempfile::tempdir().unwrap();
        let archive = data.path().join("archive");
        std::fs::create_dir_all(&archive).unwrap();
        prepare(&archive);
        let mut s = settings(data.path());
        if backend == Backend::S3 {
            use_s3(&mut s);
        }
        tune(&mut s);
        if backend == Backend::S3 {
            import(&s, &archive).await;
        }
        let running = logarchive_server::start(&s).await.unwrap();
        let admin_password = running.initial_admin_password.clone().unwrap();
        let base = format!("http://{}", running.web_addr);
        let srv = Server {
            running,
            data,
            admin_password,
            base,
            backend,
        };
        // The catalog is reconciled in the background: wait until what was prepared is in.
        let files = count_files(&archive, 0);
        srv.eventually("the catalog to hold the prepared files", || {
            (srv.running.catalog.count().unwrap() as usize >= files).then_some(())
        })
        .await;
        srv
    }

    /// An empty archive on `backend` (`[storage]` as an operator would write it: the key in a
    /// credentials file, never in the config).
    pub async fn start_on(backend: Backend) -> Server {
        Server::start_on_tuned(backend, |_| {}).await
    }

    /// [`Server::start_on`], with `tune` applied to the settings after.
    pub async fn start_on_tuned(
        backend: Backend,
        tune: impl FnOnce(&mut ServerSettings),
    ) -> Server {
        Server::start_prepared(backend, |_| {}, tune).await
    }

    pub async fn start(prepare: impl FnOnce(&Path)) -> Server {
        Server::start_with(prepare, |_| {}).await
    }

    /// The archive folder (of the local back-end; on S3 only what `prepare` wrote).
    pub fn archive(&self) -> PathBuf {
        self.data.path().join("archive")
    }

    /// Appends `bytes` to the archive's file `rel` behind the server's back (as a process on the
    /// server would on the local back-end), through the store.
    pub async fn append(&self, rel: &str, bytes: &[u8]) {
        let path = VirtualPath::parse(Path::new(rel)).unwrap();
        let store = &*self.running.store;
        let at = store.stat(&path).await.unwrap().size;
        whole::write(store, &path, WriteMode::Append { at }, bytes)
            .await
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn add_user(&self, name: &str, role: Role) {
        self.running
            .users
            .add(NewUser::with_role(name, PASSWORD, role))
            .unwrap();
    }

    /// Disables an account through the users file API (as the CLI would).
    pub fn disable(&self, name: &str) {
        self.running
            .users
            .update(
                name,
                logarchive_server::users::UserUpdate {
                    enabled: Some(false),
                    ..Default::default()
                },
            )
            .unwrap();
    }

    pub async fn ftp(&self, user: &str, password: &str) -> Result<Client, String> {
        let mut cfg = ClientConfig::new(
            "127.0.0.1",
            self.running.ftp.local_addr().port(),
            user,
            password,
        );
        cfg.reconnect_attempts = 0;
        Client::connect(cfg).await.map_err(|e| e.to_string())
    }

    pub async fn eventually<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let t = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client logged in through the login form, holding the session cookie.
    pub async fn login(&self, user: &str, password: &str) -> Web {
        let w = Web::new(&self.base);
        let r = w.login(user, password).await;
        assert_eq!(r.status(), 303, "login of {user} failed");
        w
    }

    pub async fn admin(&self) -> Web {
        let p = self.admin_password.clone();
        self.login("admin", &p).await
    }
}

/// `[storage]` on the test binary's SeaweedFS, under a prefix of this server's own, the key in a
/// credentials file beside the data.
/// Puts the archive of `c` on the test's SeaweedFS, under a prefix of its own.
pub fn use_s3(c: &mut ServerSettings) {
    let weed = seaweed();
    let creds = weed.credentials();
    let file = c.data.join("s3.env");
    std::fs::write(
        &file,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            creds.access_key_id,
            creds.secret()
        ),
    )
    .unwrap();
    c.storage.backend = logarchive_server::config::StorageBackend::S3;
    c.storage.endpoint = Some(weed.endpoint.clone());
    c.storage.bucket = Some(weed.bucket.clone());
    c.storage.prefix = format!("srv{:016x}", rand_u64());
    c.storage.credentials_file = Some(file);
    c.storage.gc_grace = Duration::from_secs(1);
}

/// Copies the folders and files `prepare` wrote under `archive` into the S3 store of `settings`
/// (symbolic links have no S3 counterpart and are left out).
async fn import(settings: &ServerSettings, archive: &Path) {
    // As `archive` commands look beside a server: no packer or collector of its own (small
    // files wait inline for the server's).
    let store = logarchive_server::store::inspect(settings)
        .expect("the S3 store")
        .store;
    let mut stack = vec![archive.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let t = e.file_type().unwrap();
            let rel = e.path().strip_prefix(archive).unwrap().to_path_buf();
            let path = VirtualPath::parse(&rel).unwrap();
            if t.is_dir() {
                store.mkdir(&path).await.unwrap();
                stack.push(e.path());
            } else if t.is_file() {
                let bytes = std::fs::read(e.path()).unwrap();
                whole::write(&*store, &path, WriteMode::CreateNew, &bytes)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
                // With its time, as a file written then would have it.
                let modified = e.metadata().unwrap().modified().unwrap();
                store.set_modified(&path, modified).await.unwrap();
            }
        }
    }
}

/// Files the catalog will hold: below an agent folder, not temporary, not `.logarchive`.
fn count_files(dir: &Path, depth: usize) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(t) = e.file_type() else { continue };
        let name = e.file_name().to_string_lossy().to_string();
        if t.is_dir() && !(depth == 1 && name == ".logarchive") {
            n += count_files(&e.path(), depth + 1);
        } else if t.is_file() && depth >= 1 && !name.ends_with(".logarchive-tmp") {
            n += 1;
        }
    }
    n
}

/// An HTTP client with one session cookie (set by `login`).
pub struct Web {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: std::sync::Mutex<Option<String>>,
}

impl Web {
    pub fn new(base: &str) -> Web {
        Web {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            cookie: std::sync::Mutex::new(None),
        }
    }

    pub async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        let r = self
            .http
            .post(format!("{}/login", self.base))
            .form(&[("username", user), ("password", password)])
            .send()
            .await
            .unwrap();
        if let Some(c) = r.headers().get("set-cookie") {
            let c = c.to_str().unwrap().to_string();
            *self.cookie.lock().unwrap() = Some(c.split(';').next().unwrap().to_string());
        }
        r
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.with_cookie(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.with_cookie(self.http.post(format!("{}{path}", self.base)))
    }

    pub fn with_cookie(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.cookie.lock().unwrap().as_ref() {
            Some(c) => r.header("cookie", c),
            None => r,
        }
    }

    pub async fn text(&self, path: &str) -> (u16, String) {
        let r = self.get(path).send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.text().await.unwrap())
    }

    /// The CSRF token of the session, from a page's logout form.
    pub async fn csrf(&self) -> String {
        let (_, html) = self.text("/").await;
        let i = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        html[i..i + html[i..].find('"').unwrap()].to_string()
    }
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}
