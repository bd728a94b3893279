//! `UserDb`: the one way to read and change accounts. The CLI, the running server's admin API and
//! the web admin page all go through it. Changes are written atomically and published at once to
//! the running server; hand edits of the file are picked up by [`UserDb::watch`].

use super::password::{hash_password, verify_password};
use super::record::{normalize_home, UserRecord, WebRole};
use logarchive_ftp::names::validate_name;
use logarchive_ftp::rate::ByteRate;
use logarchive_ftp::rights::Rights;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Errors of the user database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserDbError {
    /// An account of that name already exists.
    #[error("user {0:?} already exists")]
    Exists(String),
    /// No account of that name.
    #[error("no user {0:?}")]
    NotFound(String),
    /// A bad name, home, password or right (the message says which).
    #[error("{0}")]
    Invalid(String),
    /// The users file could not be read.
    #[error("cannot read users file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The users file is not valid (the message names the line).
    #[error("users file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// The users file could not be written.
    #[error("cannot write users file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The password could not be hashed.
    #[error("cannot hash password: {0}")]
    Hash(String),
    /// The accounts database (PostgreSQL) failed or does not answer.
    #[error("accounts database: {0}")]
    Database(String),
}

/// The contents of `users.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// The accounts by name.
    #[serde(default)]
    pub users: BTreeMap<String, UserRecord>,
}

impl UsersFile {
    /// Parses and validates a users file; the error names the line and the reason.
    pub fn parse(text: &str) -> Result<UsersFile, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, rec) in &file.users {
            validate_name(name)?;
            let home = normalize_home(&rec.home).map_err(|e| format!("user {name:?}: {e}"))?;
            if home != rec.home {
                return Err(format!(
                    "user {name:?}: home {:?} must be written as {home:?}",
                    rec.home
                ));
            }
            if argon2::password_hash::PasswordHash::new(&rec.password).is_err() {
                return Err(format!("user {name:?}: password is not an argon2 PHC string (use `logarchive user passwd`)"));
            }
        }
        Ok(file)
    }

    /// The file's text, checked to read back as exactly these accounts. A text that would not is
    /// never written: a failed serialisation once fell back to an empty text, and writing that
    /// would have removed every account.
    fn render(&self) -> Result<String, String> {
        let body = toml::to_string(self).map_err(|e| format!("cannot write the accounts: {e}"))?;
        let text = format!(
            "# logarchive user record file. Edit with `logarchive user ...`; hand edits are picked up by a\n\
             # running server. Passwords are argon2id hashes, never clear text.\n\n{body}"
        );
        match UsersFile::parse(&text) {
            Ok(back) if back == *self => Ok(text),
            Ok(_) => Err("the accounts would not read back as written; nothing was changed".into()),
            Err(e) => Err(format!(
                "the accounts would not read back ({e}); nothing was changed"
            )),
        }
    }
}

/// A new account. Fields left `None` take the role preset.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login name.
    pub name: String,
    /// The password (stored only as an argon2id hash).
    pub password: String,
    /// The account's folder in the archive.
    pub home: String,
    /// FTP rights in the home.
    pub rights: Rights,
    /// Upload speed limit.
    pub upload_limit: ByteRate,
    /// Download speed limit.
    pub download_limit: ByteRate,
    /// Networks the account may log in from; empty = anywhere.
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// What the account may do on the web UI.
    pub web_role: WebRole,
    /// Refuse logins without TLS.
    pub tls_required: bool,
}

impl NewUser {
    /// An account with `role`'s preset home, rights and web role, no speed limits, from any
    /// address, no TLS requirement of its own.
    pub fn with_role(name: &str, password: &str, role: super::Role) -> NewUser {
        let (home, rights, web_role) = role.preset(name);
        NewUser {
            name: name.to_string(),
            password: password.to_string(),
            home,
            rights,
            upload_limit: ByteRate(0),
            download_limit: ByteRate(0),
            allowed_ips: vec![],
            web_role,
            tls_required: false,
        }
    }
}

/// A change to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    /// A new password.
    pub password: Option<String>,
    /// A new home.
    pub home: Option<String>,
    /// New FTP rights.
    pub rights: Option<Rights>,
    /// A new upload limit.
    pub upload_limit: Option<ByteRate>,
    /// A new download limit.
    pub download_limit: Option<ByteRate>,
    /// New allowed networks.
    pub allowed_ips: Option<Vec<ipnet::IpNet>>,
    /// Enable or disable the account.
    pub enabled: Option<bool>,
    /// A new web role.
    pub web_role: Option<WebRole>,
    /// Require TLS or not.
    pub tls_required: Option<bool>,
}

/// A version stamp of the file on disk, to notice changes made by others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
    })
}

/// Where the accounts are kept, and the version of them last loaded.
#[derive(Debug)]
enum Source {
    /// `users.toml` (the default; shared by servers only through a shared data folder).
    File {
        path: PathBuf,
        loaded: std::sync::Mutex<Option<FileStamp>>,
    },
    /// PostgreSQL (`[catalog] url`), shared by every server of the archive.
    Postgres {
        db: Box<super::pg::PgAccounts>,
        loaded: std::sync::Mutex<Option<i64>>,
    },
}

/// The user database: one TOML file, or rows in PostgreSQL.
#[derive(Debug)]
pub struct UserDb {
    source: Source,
    current: RwLock<Arc<UsersFile>>,
    generation: watch::Sender<u64>,
    verified: super::verified::VerifiedCache,
    /// argon2 verifications run (a metric).
    checks_run: std::sync::atomic::AtomicU64,
}

impl UserDb {
    /// Opens the users file; a missing file is an empty database (created on the first change).
    pub fn open(path: impl Into<PathBuf>) -> Result<Arc<UserDb>, UserDbError> {
        let path = path.into();
        let (file, st) = Self::read_file(&path)?;
        Ok(Self::with_source(
            Source::File {
                path,
                loaded: std::sync::Mutex::new(st),
            },
            file,
        ))
    }

    /// The accounts in PostgreSQL (connecting, and bringing the schema up to date). When the
    /// database holds no account yet and `users_file` exists, its accounts are stored first (a
    /// first start in this mode over an existing data folder). Blocking.
    pub fn open_postgres(
        settings: &crate::catalog::PgSettings,
        users_file: &Path,
    ) -> Result<Arc<UserDb>, UserDbError> {
        let db = super::pg::PgAccounts::connect(settings)?;
        Self::import(&db, users_file)?;
        let (file, version) = db.load()?;
        Ok(Self::with_source(
            Source::Postgres {
                db: Box::new(db),
                loaded: std::sync::Mutex::new(Some(version)),
            },
            file,
        ))
    }

    /// Stores `users_file`'s accounts in PostgreSQL if the database holds none yet (`archive
    /// migrate`); how many it stored.
    pub fn store_in_postgres(
        settings: &crate::catalog::PgSettings,
        users_file: &Path,
    ) -> Result<usize, UserDbError> {
        Self::import(&super::pg::PgAccounts::connect(settings)?, users_file)
    }

    fn import(db: &super::pg::PgAccounts, users_file: &Path) -> Result<usize, UserDbError> {
        if !users_file.exists() {
            return Ok(0);
        }
        let (file, _) = Self::read_file(users_file)?;
        if !db.import_if_empty(&file)? {
            return Ok(0);
        }
        tracing::info!(
            accounts = file.users.len(),
            from = %users_file.display(),
            "accounts stored in PostgreSQL"
        );
        Ok(file.users.len())
    }

    fn with_source(source: Source, file: UsersFile) -> Arc<UserDb> {
        Arc::new(UserDb {
            source,
            current: RwLock::new(Arc::new(file)),
            generation: watch::channel(0).0,
            verified: super::verified::VerifiedCache::new(),
            checks_run: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Where the accounts are: the users file's path, or the PostgreSQL URL.
    pub fn location(&self) -> String {
        match &self.source {
            Source::File { path, .. } => path.display().to_string(),
            Source::Postgres { db, .. } => db.url().to_string(),
        }
    }

    fn read_file(path: &Path) -> Result<(UsersFile, Option<FileStamp>), UserDbError> {
        let st = stamp(path);
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let file = UsersFile::parse(&text).map_err(|message| UserDbError::Parse {
                    path: path.to_path_buf(),
                    message,
                })?;
                Ok((file, st))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((UsersFile::default(), None)),
            Err(source) => Err(UserDbError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The accounts as they are now. Cheap: an `Arc` clone.
    pub fn snapshot(&self) -> Arc<UsersFile> {
        self.current
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The account named `name`, as it is now.
    pub fn get(&self, name: &str) -> Option<UserRecord> {
        self.snapshot().users.get(name).cloned()
    }

    /// Every account, by name.
    pub fn list(&self) -> Vec<(String, UserRecord)> {
        self.snapshot()
            .users
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect()
    }

    /// Whether there is no account.
    pub fn is_empty(&self) -> bool {
        self.snapshot().users.is_empty()
    }

    /// A receiver that changes whenever the accounts change (by us or by a reload).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Verifies a password. Blocking (argon2): call from `spawn_blocking` in async code.
    /// Unknown users cost the same time as known ones. The file is re-read first if it changed
    /// (one stat, small beside argon2), so an account added or edited by hand or by
    /// `logarchive user` logs in at once, not only after the next poll.
    pub fn check_password(&self, name: &str, password: &str) -> Option<UserRecord> {
        self.reload_before_login();
        self.checks_run
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.get(name) {
            Some(rec) if verify_password(&rec.password, password) => Some(rec),
            Some(_) => None,
            None => {
                verify_password(super::password::dummy_hash(), password);
                None
            }
        }
    }

    /// argon2 verifications run so far (FTP and web).
    pub fn password_checks_run(&self) -> u64 {
        self.checks_run.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn reload_before_login(&self) {
        match self.reload_if_changed() {
            Ok(true) => tracing::info!(from = %self.location(), "accounts reloaded"),
            Ok(false) => {}
            Err(e) => tracing::debug!("accounts not re-read before a login: {e}"),
        }
    }

    /// Whether `password` passed [`UserDb::check_password`] for `rec` (the account `name` as it
    /// is now) in the last minute: then it need not pay for argon2 again.
    pub fn recently_verified(&self, name: &str, password: &str, rec: &UserRecord) -> bool {
        self.verified
            .contains(&self.verified.key(name, password, &rec.password))
    }

    /// Remembers that `password` is right for `rec` (see [`UserDb::recently_verified`]).
    pub fn remember_verified(&self, name: &str, password: &str, rec: &UserRecord) {
        self.verified
            .insert(self.verified.key(name, password, &rec.password));
    }

    /// [`UserDb::check_password`], without argon2 when the same password passed it in the last
    /// minute against the account's current password hash.
    pub fn check_password_cached(&self, name: &str, password: &str) -> Option<UserRecord> {
        self.reload_before_login();
        if let Some(rec) = self.get(name) {
            if self.recently_verified(name, password, &rec) {
                return Some(rec);
            }
        }
        let rec = self.check_password(name, password)?;
        self.remember_verified(name, password, &rec);
        Some(rec)
    }

    /// Adds an account and writes the file.
    pub fn add(&self, new: NewUser) -> Result<(), UserDbError> {
        validate_name(&new.name).map_err(UserDbError::Invalid)?;
        let home = normalize_home(&new.home).map_err(UserDbError::Invalid)?;
        validate_password(&new.password)?;
        let password =
            hash_password(&new.password).map_err(|e| UserDbError::Hash(e.to_string()))?;
        self.modify(|file| {
            if file.users.contains_key(&new.name) {
                return Err(UserDbError::Exists(new.name.clone()));
            }
            file.users.insert(
                new.name.clone(),
                UserRecord {
                    password: password.clone(),
                    home: home.clone(),
                    rights: new.rights,
                    upload_limit: new.upload_limit,
                    download_limit: new.download_limit,
                    allowed_ips: new.allowed_ips.clone(),
                    enabled: true,
                    web_role: new.web_role,
                    tls_required: new.tls_required,
                },
            );
            Ok(())
        })
    }

    /// Removes an account and writes the file.
    pub fn remove(&self, name: &str) -> Result<(), UserDbError> {
        self.modify_losing(1, |file| {
            file.users
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| UserDbError::NotFound(name.to_string()))
        })
    }

    /// Changes an account, writes the file and returns the account as it now is.
    pub fn update(&self, name: &str, change: UserUpdate) -> Result<UserRecord, UserDbError> {
        let home = change
            .home
            .as_deref()
            .map(normalize_home)
            .transpose()
            .map_err(UserDbError::Invalid)?;
        let password = match &change.password {
            Some(p) => {
                validate_password(p)?;
                Some(hash_password(p).map_err(|e| UserDbError::Hash(e.to_string()))?)
            }
            None => None,
        };
        let mut updated = None;
        self.modify(|file| {
            let rec = file
                .users
                .get_mut(name)
                .ok_or_else(|| UserDbError::NotFound(name.to_string()))?;
            if let Some(p) = &password {
                rec.password = p.clone();
            }
            if let Some(h) = &home {
                rec.home = h.clone();
            }
            if let Some(r) = change.rights {
                rec.rights = r;
            }
            if let Some(l) = change.upload_limit {
                rec.upload_limit = l;
            }
            if let Some(l) = change.download_limit {
                rec.download_limit = l;
            }
            if let Some(ips) = &change.allowed_ips {
                rec.allowed_ips = ips.clone();
            }
            if let Some(e) = change.enabled {
                rec.enabled = e;
            }
            if let Some(w) = change.web_role {
                rec.web_role = w;
            }
            if let Some(t) = change.tls_required {
                rec.tls_required = t;
            }
            updated = Some(rec.clone());
            Ok(())
        })?;
        updated.ok_or_else(|| UserDbError::NotFound(name.to_string()))
    }

    /// Read-modify-write under an exclusive lock of `users.toml.lock`, so the CLI and a running
    /// server never lose each other's changes. The file is replaced atomically.
    fn modify(
        &self,
        f: impl FnOnce(&mut UsersFile) -> Result<(), UserDbError>,
    ) -> Result<(), UserDbError> {
        self.modify_losing(0, f)
    }

    /// Reads the file, changes it with `f` and writes it back, refusing a result with more than
    /// `may_lose` accounts fewer than the file held.
    fn modify_losing(
        &self,
        may_lose: usize,
        f: impl FnOnce(&mut UsersFile) -> Result<(), UserDbError>,
    ) -> Result<(), UserDbError> {
        let (path, loaded) = match &self.source {
            Source::Postgres { db, loaded } => {
                let (file, version) = db.modify(may_lose, f)?;
                self.install(file);
                *loaded.lock().unwrap_or_else(|p| p.into_inner()) = Some(version);
                return Ok(());
            }
            Source::File { path, loaded } => (path, loaded),
        };
        let _lock = FileLock::acquire(path)?;
        let (mut file, _) = Self::read_file(path)?;
        let before = file.users.len();
        f(&mut file)?;
        if file.users.len() + may_lose < before {
            return Err(UserDbError::Invalid(format!(
                "refusing to write {} accounts over the {before} the users file holds",
                file.users.len()
            )));
        }
        let text = file.render().map_err(UserDbError::Invalid)?;
        write_atomically(path, text.as_bytes()).map_err(|source| UserDbError::Write {
            path: path.clone(),
            source,
        })?;
        self.install(file);
        *loaded.lock().unwrap_or_else(|p| p.into_inner()) = stamp(path);
        Ok(())
    }

    fn install(&self, file: UsersFile) {
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(file),
            Err(p) => *p.into_inner() = Arc::new(file),
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// Re-reads the accounts if they changed (the file on disk, or the rows in PostgreSQL). On a
    /// broken file the last good accounts stay in force and the error (with line and reason)
    /// is returned for logging; so they do while PostgreSQL does not answer.
    pub fn reload_if_changed(&self) -> Result<bool, UserDbError> {
        let (path, loaded) = match &self.source {
            Source::Postgres { db, loaded } => {
                let now = db.version()?;
                let before = *loaded.lock().unwrap_or_else(|p| p.into_inner());
                if Some(now) == before {
                    return Ok(false);
                }
                let (file, version) = db.load()?;
                let changed = *self.snapshot() != file;
                if changed {
                    self.install(file);
                }
                *loaded.lock().unwrap_or_else(|p| p.into_inner()) = Some(version);
                return Ok(changed);
            }
            Source::File { path, loaded } => (path, loaded),
        };
        let now = stamp(path);
        let before = *loaded.lock().unwrap_or_else(|p| p.into_inner());
        if now == before {
            return Ok(false);
        }
        match Self::read_file(path) {
            Ok((file, st)) => {
                let changed = *self.snapshot() != file;
                if changed {
                    self.install(file);
                }
                *loaded.lock().unwrap_or_else(|p| p.into_inner()) = st;
                Ok(changed)
            }
            Err(e) => {
                // Remember the broken version so the same error is not logged on every poll.
                *loaded.lock().unwrap_or_else(|p| p.into_inner()) = now;
                Err(e)
            }
        }
    }

    /// Keeps the accounts in force up to date until [`Watch::stop`]. The users file: a stat
    /// every `poll` (the default second costs nothing measurable; polling rather than inotify
    /// on the folder, which also holds the catalog, whose every write would wake a watcher).
    /// PostgreSQL: a connection of its own LISTENs for changes and re-reads at once, and also
    /// every `poll` (a notification lost with a broken connection). Blocking work runs off the
    /// async threads.
    pub fn watch(self: &Arc<Self>, poll: Duration) -> Watch {
        let db = Arc::clone(self);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Said once when re-reading starts failing (a broken file, the database away), not
        // every `poll`.
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reload = move |db: &UserDb| {
            use std::sync::atomic::Ordering::Relaxed;
            match db.reload_if_changed() {
                Ok(changed) => {
                    failing.store(false, Relaxed);
                    if changed {
                        tracing::info!(from = %db.location(), "accounts reloaded");
                    }
                }
                Err(e) => {
                    if !failing.swap(true, Relaxed) {
                        tracing::error!("{e}; keeping the last good accounts");
                    } else {
                        tracing::debug!("{e}; keeping the last good accounts");
                    }
                }
            }
        };
        if let Source::Postgres { .. } = &self.source {
            let stopped = Arc::clone(&stop);
            let (listening_tx, listening) = tokio::sync::oneshot::channel();
            let mut listening_tx = Some(listening_tx);
            let thread = std::thread::Builder::new()
                .name("accounts-listen".into())
                .spawn(move || {
                    let mut listener = None;
                    while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                        let Source::Postgres { db: pg, .. } = &db.source else {
                            return;
                        };
                        if listener.is_none() {
                            match pg.listener() {
                                Ok(l) => {
                                    listener = Some(l);
                                    // What changed before the LISTEN took effect is read now,
                                    // not at the next `poll`.
                                    reload(&db);
                                    if let Some(tx) = listening_tx.take() {
                                        let _ = tx.send(());
                                    }
                                }
                                Err(e) => tracing::debug!("accounts: cannot listen: {e}"),
                            }
                        }
                        match listener.as_mut() {
                            Some(l) => {
                                if let Err(e) = super::pg::wait(l, poll) {
                                    tracing::debug!("accounts: listening ended: {e}");
                                    listener = None;
                                }
                            }
                            None => std::thread::sleep(poll),
                        }
                        reload(&db);
                    }
                });
            if let Err(e) = thread {
                tracing::error!("accounts: cannot start the listening thread: {e}");
            }
            return Watch {
                task: None,
                stop,
                listening: Some(listening),
            };
        }
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                reload(&db);
            }
        });
        Watch {
            task: Some(task),
            stop,
            listening: None,
        }
    }
}

/// The running [`UserDb::watch`].
pub struct Watch {
    task: Option<tokio::task::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// PostgreSQL: told once the first LISTEN is in place.
    listening: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Watch {
    /// Waits (at most `limit`) until changes made elsewhere reach this server at once: with
    /// PostgreSQL, until the LISTEN is in place (before it, only the `poll` would see them);
    /// with the users file at once. `false` when the limit passed first (the database away:
    /// the `poll` and the retries carry on).
    pub async fn listening(&mut self, limit: std::time::Duration) -> bool {
        match self.listening.take() {
            None => true,
            Some(rx) => matches!(tokio::time::timeout(limit, rx).await, Ok(Ok(()))),
        }
    }

    /// Stops watching (a listening thread ends within one `poll`). Dropping it does the same.
    pub fn stop(self) {}
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn validate_password(p: &str) -> Result<(), UserDbError> {
    if p.chars().count() < 8 {
        return Err(UserDbError::Invalid(
            "password too short: use at least 8 characters".into(),
        ));
    }
    if p.contains(['\r', '\n', '\0']) {
        return Err(UserDbError::Invalid(
            "password must not contain line breaks or NUL".into(),
        ));
    }
    Ok(())
}

/// Writes `bytes` to `path` so that readers see the old or the new file, never a mix:
/// temp file in the same folder, fsync, rename, fsync of the folder. Mode 0600.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    // The file keeps its owner and mode (new: the folder's owner, 0600), whoever writes it.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let old = std::fs::metadata(path).ok();
    let mode = old.as_ref().map_or(0o600, |m| m.mode() & 0o777);
    let root = rustix::process::geteuid().is_root();
    let owner = old.or_else(|| root.then(|| std::fs::metadata(dir).ok()).flatten());
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(o) = &owner {
            keep_owner(&f, path, o.uid(), o.gid())?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Gives a file written for `path` the owner it must have: root writes on behalf of the owner
/// (`logarchive user` run with sudo on a server that runs as its own user); anyone else who is
/// not the owner is refused, since the server could no longer read what they wrote.
fn keep_owner(f: &std::fs::File, path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let me = rustix::process::geteuid().as_raw();
    if me == uid {
        return Ok(());
    }
    if me != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to user id {uid}: run this as that user (e.g. sudo -u '#{uid}' ...)",
                path.display()
            ),
        ));
    }
    std::os::unix::fs::fchown(f, Some(uid), Some(gid))
}

/// An exclusive advisory lock on `<file>.lock`, released on drop.
struct FileLock(std::fs::File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, UserDbError> {
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let err = |source| UserDbError::Write {
            path: lock_path.clone(),
            source,
        };
        if let Some(dir) = lock_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let new = !lock_path.exists();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(err)?;
        if new {
            // Made by root for a server that runs as the folder's owner: it must open it too.
            use std::os::unix::fs::MetadataExt;
            if let Some(dir) = std::fs::metadata(lock_path.parent().unwrap_or(Path::new(".")))
                .ok()
                .filter(|d| d.uid() != 0)
            {
                if rustix::process::geteuid().is_root() {
                    keep_owner(&f, &lock_path, dir.uid(), dir.gid()).map_err(err)?;
                }
            }
        }
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| err(e.into()))?;
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with(names: &[&str]) -> (tempfile::TempDir, Arc<UserDb>) {
        let dir = tempfile::tempdir().unwrap();
        let db = UserDb::open(dir.path().join("users.toml")).unwrap();
        for n in names {
            db.add(NewUser::with_role(
                n,
                "long enough password",
                super::super::Role::Agent,
            ))
            .unwrap();
        }
        (dir, db)
    }

    #[test]
    fn a_text_that_would_not_read_back_is_never_written() {
        let (dir, db) = db_with(&["agent01", "agent02"]);
        let on_disk = std::fs::read_to_string(dir.path().join("users.toml")).unwrap();
        // A record the file format cannot hold (not a password hash): serialising works, reading
        // back does not, so nothing is written and the file keeps its accounts.
        let err = db
            .modify(|f| {
                f.users.get_mut("agent01").unwrap().password = "clear text".into();
                Ok(())
            })
            .unwrap_err();
        assert!(err.to_string().contains("read back"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("users.toml")).unwrap(),
            on_disk
        );
    }

    #[test]
    fn a_change_never_writes_fewer_accounts_than_the_file_held() {
        let (dir, db) = db_with(&["agent01", "agent02", "agent03"]);
        let on_disk = std::fs::read_to_string(dir.path().join("users.toml")).unwrap();
        let err = db
            .modify(|f| {
                f.users.clear();
                Ok(())
            })
            .unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("users.toml")).unwrap(),
            on_disk
        );
        // Removing one account is asked for, and allowed.
        db.remove("agent02").unwrap();
        assert_eq!(db.list().len(), 2);
    }
}
