//! The archive's store as the server opens it from `[storage]` (a folder, or an S3 bucket with
//! its metadata in `DATA/store.db`, or in the PostgreSQL of `[catalog] url`, where every server
//! of the archive shares it), and as the catalog's writer thread sees it
//! ([`StoreView`]: blocking stat and listing through the store, never around it).

use crate::catalog::ArchiveView;
use crate::config::{ServerSettings, StorageBackend};
use logarchive_ftp::server::{LocalStorage, Meta, Storage, VirtualPath};
use logarchive_store::s3::{Credentials, S3Config, S3Storage};
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("archive folder {path}: {source}")]
    Local {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("[storage] backend = \"s3\" needs a bucket")]
    NoBucket,
    #[error("[storage]: {0}")]
    Credentials(#[from] logarchive_store::s3::CredentialsError),
    #[error("[storage] S3 bucket {bucket}: {source}")]
    S3 { bucket: String, source: io::Error },
    #[error("{0}")]
    Catalog(String),
}

/// An opened store: as the FTP service and the web see it, and the back-end itself.
#[derive(Debug, Clone)]
pub struct Opened {
    pub store: Arc<dyn Storage>,
    /// The S3 back-end (its request counters, its object checks).
    pub s3: Option<S3Storage>,
    /// The local back-end (its compactor).
    pub local: Option<LocalStorage>,
}

/// The store `[storage]` names. Call inside the server's runtime (an S3 store sends its
/// requests there).
pub fn open(settings: &ServerSettings) -> Result<Opened, StoreError> {
    open_as(settings, S3Storage::open)
}

/// [`open`] to look beside a running server (`archive fsck`, `du`): an S3 store starts no
/// packer and no collector of its own.
pub fn inspect(settings: &ServerSettings) -> Result<Opened, StoreError> {
    open_as(settings, S3Storage::inspect)
}

fn open_as(
    settings: &ServerSettings,
    open_s3: fn(S3Config) -> io::Result<S3Storage>,
) -> Result<Opened, StoreError> {
    let st = &settings.storage;
    match st.backend {
        StorageBackend::Local => {
            let path = settings.archive_dir();
            let local = LocalStorage::open(&path).map_err(|source| StoreError::Local {
                path: path.clone(),
                source,
            })?;
            Ok(Opened {
                store: Arc::new(local.clone()),
                s3: None,
                local: Some(local),
            })
        }
        StorageBackend::S3 => {
            let c = s3_config(settings)?;
            let bucket = c.bucket.clone();
            let s3 = open_s3(c).map_err(|source| StoreError::S3 { bucket, source })?;
            Ok(Opened {
                store: Arc::new(s3.clone()),
                s3: Some(s3),
                local: None,
            })
        }
    }
}

/// Bytes the store holds per agent (compressed files as compressed), measured in the
/// background: the dashboard shows them beside the bytes the files hold.
#[derive(Debug, Default)]
pub struct StoredBytes {
    by_agent: std::sync::Mutex<HashMap<String, u64>>,
    /// Wakes the measuring task early (a compaction pass changed the numbers).
    changed: tokio::sync::Notify,
}

impl StoredBytes {
    /// The bytes stored for `agent`'s files, once measured.
    pub fn of(&self, agent: &str) -> Option<u64> {
        self.lock().get(agent).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.by_agent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Measures at the start, every [`MEASURE_EVERY`], and after a compaction pass (the
    /// folder's compactor says so; an S3 store's count of compacted files is looked at every
    /// second).
    pub fn spawn_measuring(self: &Arc<Self>, store: Opened) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        let compacted = |s: &Opened| s.s3.as_ref().map_or(0, |s3| s3.stats().compacted());
        tokio::spawn(async move {
            loop {
                let seen = compacted(&store);
                let s = store.clone();
                if let Ok(Ok(m)) = tokio::task::spawn_blocking(move || stored_by_agent(&s)).await {
                    *me.lock() = m;
                }
                let next = tokio::time::Instant::now() + MEASURE_EVERY;
                while tokio::time::Instant::now() < next && compacted(&store) == seen {
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        _ = me.changed.notified() => break,
                    }
                }
            }
        })
    }
}

/// How often the stored bytes per agent are measured (a walk of a folder archive, one query on
/// S3).
pub const MEASURE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Bytes stored per agent (the first part of each path). Blocking.
fn stored_by_agent(store: &Opened) -> io::Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    if let Some(s3) = &store.s3 {
        for (path, bytes) in s3.stored_bytes()? {
            let agent = path.trim_start_matches('/').split('/').next().unwrap_or("");
            *out.entry(agent.to_string()).or_default() += bytes;
        }
    } else if let Some(local) = &store.local {
        let root = VirtualPath::default();
        let agents = tokio::runtime::Handle::current().block_on(local.list(&root))?;
        for (name, meta) in agents {
            if meta.is_dir() {
                let dir = VirtualPath::parse(Path::new(&name))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                out.insert(name, local.stored_bytes(&dir)?.0);
            }
        }
    }
    Ok(out)
}

/// Compresses quiet files in the background (`[storage] compress_after`): a pass over the
/// archive on a blocking thread every quarter of `quiet` (at least a second, at most ten
/// minutes apart). Temporary upload names and the accounts' scratch folders are left alone.
pub fn spawn_compactor(
    local: LocalStorage,
    quiet: std::time::Duration,
    stored: Arc<StoredBytes>,
    locks: Option<Arc<crate::path_locks::PathLocks>>,
) -> tokio::task::JoinHandle<()> {
    use std::time::Duration;
    let every = (quiet / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let root = VirtualPath::default();
        loop {
            tick.tick().await;
            let (l, r, locks) = (local.clone(), root.clone(), locks.clone());
            let started = std::time::Instant::now();
            let pass = tokio::task::spawn_blocking(move || {
                // Servers sharing the folder: each file under its path lock.
                let claim = |rel: &Path| -> std::io::Result<Option<Box<dyn Send>>> {
                    match &locks {
                        Some(locks) => match VirtualPath::parse(rel) {
                            Ok(p) => locks.lock_blocking(&p),
                            Err(_) => Ok(None),
                        },
                        None => Ok(Some(Box::new(()))),
                    }
                };
                l.compress_quiet_claimed(&r, quiet, &skip, &claim)
            })
            .await;
            match pass {
                Ok(Ok(report)) => {
                    if report.files > 0 {
                        stored.changed.notify_one();
                        tracing::info!(
                            files = report.files,
                            raw_bytes = report.raw_bytes,
                            stored_bytes = report.stored_bytes,
                            seconds = started.elapsed().as_secs_f64(),
                            "compressed quiet files"
                        );
                    }
                    if report.skipped > 0 {
                        tracing::warn!(
                            "{} quiet files could not be compressed (they stay as they are): {}",
                            report.skipped,
                            report.errors.join("; ")
                        );
                    }
                }
                Ok(Err(e)) => tracing::warn!("compressing quiet files: {e}; trying again later"),
                Err(_) => return,
            }
        }
    })
}

/// What the compactor leaves alone: uploads in progress and the accounts' scratch folders.
fn skip(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    logarchive_ftp::names::is_temp_name(name)
        || path
            .components()
            .any(|c| c.as_os_str() == logarchive_ftp::names::SCRATCH_DIR)
}

fn s3_config(settings: &ServerSettings) -> Result<S3Config, StoreError> {
    let st = &settings.storage;
    let bucket = st.bucket.clone().ok_or(StoreError::NoBucket)?;
    let credentials = Credentials::load(st.credentials_file.as_deref())?;
    let mut c = S3Config::new(
        st.endpoint.clone(),
        bucket,
        credentials,
        settings.store_db(),
    );
    c.region = st.region.clone();
    c.prefix = st.prefix.clone();
    c.compress_after = st.compress_after.0;
    c.skip_compress = logarchive_ftp::names::is_temp_name;
    c.path_style = st.path_style;
    c.gc_grace = st.gc_grace;
    // Servers sharing a catalog share the bucket: the segment maps go where the catalog is.
    if let crate::catalog::Location::Postgres(pg) = settings
        .catalog_location()
        .map_err(|e| StoreError::Catalog(e.to_string()))?
    {
        c.postgres = Some(pg.store_connection());
    }
    Ok(c)
}

/// For `--check`: whether the store `[storage]` names can be used, changing nothing (an S3
/// bucket is listed, not written). `None`: fine.
pub fn check(settings: &ServerSettings) -> Option<String> {
    if settings.storage.backend != StorageBackend::S3 {
        return None;
    }
    let c = match s3_config(settings) {
        Ok(c) => c,
        Err(e) => return Some(e.to_string()),
    };
    // A runtime of its own, on a thread of its own: --check may run inside another.
    let probed = std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(logarchive_store::s3::probe(&c))
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the check panicked")))
    });
    probed.err().map(|e| {
        format!(
            "[storage] bucket {} at {}: {e}",
            c.bucket,
            c.endpoint.as_deref().unwrap_or("AWS")
        )
    })
}

/// The store seen from a blocking thread (the catalog's writer).
pub struct StoreView {
    store: Arc<dyn Storage>,
    rt: tokio::runtime::Handle,
}

impl StoreView {
    /// Must be called inside the server's runtime.
    pub fn new(store: Arc<dyn Storage>) -> StoreView {
        StoreView {
            store,
            rt: tokio::runtime::Handle::current(),
        }
    }
}

fn vpath(path: &str) -> Option<VirtualPath> {
    VirtualPath::parse(Path::new(path)).ok()
}

impl ArchiveView for StoreView {
    fn stat(&self, path: &str) -> Option<Meta> {
        let v = vpath(path)?;
        self.rt.block_on(self.store.stat(&v)).ok()
    }

    fn files(&self) -> io::Result<HashMap<String, (u64, i64)>> {
        let mut out = HashMap::new();
        let mut stack = vec![VirtualPath::default()];
        while let Some(dir) = stack.pop() {
            let entries = match self.rt.block_on(self.store.list(&dir)) {
                Ok(e) => e,
                // A folder removed while we walk: nothing to list.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.is_root() => continue,
                Err(e) => return Err(e),
            };
            for (name, m) in entries {
                let p = dir.child(&name);
                if m.is_dir() {
                    stack.push(p);
                } else {
                    let ms = m
                        .modified
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_millis() as i64);
                    out.insert(p.display(), (m.size, ms));
                }
            }
        }
        Ok(out)
    }
}

/// Whether the store answers, for `/healthz` (which needs no login): probed at most once a
/// second however often it is asked, each probe bounded to 3 s. A local folder is always ready
/// (the catalog's check beside it covers its disk).
pub struct Readiness {
    s3: Option<S3Storage>,
    last: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

impl Readiness {
    pub fn new(s3: Option<S3Storage>) -> Readiness {
        Readiness {
            s3,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// `Err` names why the store is not ready.
    pub async fn check(&self) -> Result<(), String> {
        use std::time::{Duration, Instant};
        let Some(s3) = &self.s3 else {
            return Ok(());
        };
        // Callers meanwhile wait for this probe's answer instead of sending their own.
        let mut last = self.last.lock().await;
        if let Some((at, result)) = &*last {
            if at.elapsed() < Duration::from_secs(1) {
                return result.clone();
            }
        }
        let result = match tokio::time::timeout(Duration::from_secs(3), s3.reachable()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the object store: {e}")),
            Err(_) => Err("the object store does not answer within 3 s".to_string()),
        };
        *last = Some((Instant::now(), result.clone()));
        result
    }
}
