//! The archive on an S3-compatible object store (AWS S3, MinIO, Ceph RGW, Garage, SeaweedFS).
//!
//! A file is an ordered list of immutable objects (segments), each holding a byte range of it;
//! the tree, the segment lists and each file's SHA-256 state live in a metadata database
//! (`meta.rs`), so a listing, a rename (temporary name → final name) or `SITE SHA256` never
//! touch the store, and an append hashes only its new bytes. An upload streams into segments of
//! a few MiB (bounded memory whatever the file's size); an append adds segments. Objects that
//! are replaced, removed or left by a killed upload are deleted a grace period later
//! ([`S3Config::gc_grace`]), so a reader in flight always finds what it listed. Conditional
//! PUTs are not relied on (not every store honours them): keys are random and never reused,
//! and the metadata database decides what exists.

mod compact;
mod credentials;
mod meta;
#[cfg(feature = "seaweedfs")]
pub mod seaweed;
mod transfer;

pub use compact::CompactReport;
pub use credentials::{Credentials, CredentialsError};
#[cfg(feature = "postgres")]
pub use meta::{MetadataCopied, POSTGRES_SCHEMA};

/// Moves an archive's metadata from its SQLite file (`DATA/store.db`; no server may be using
/// it) into the PostgreSQL database `postgres` ([`POSTGRES_SCHEMA`]) unless that holds some
/// already: `archive migrate` to a PostgreSQL catalog over the same bucket. One transaction.
/// Blocking, and not on an async thread.
#[cfg(feature = "postgres")]
pub fn copy_metadata_to_postgres(
    sqlite: &std::path::Path,
    postgres: &PgConnection,
) -> io::Result<MetadataCopied> {
    meta::copy_metadata(sqlite, postgres)
}

/// Makes a PostgreSQL connection from its settings; see [`PgConnection::new`].
#[cfg(feature = "postgres")]
type Connect = dyn Fn(&postgres::Config) -> Result<postgres::Client, postgres::Error> + Send + Sync;

/// How the metadata's PostgreSQL connections are made: the settings (address, database,
/// login), and how a connection is opened with them — plain TCP or a Unix socket by default
/// ([`PgConnection::plain`]), or through the TLS the embedding program sets up.
#[cfg(feature = "postgres")]
#[derive(Clone)]
pub struct PgConnection {
    config: postgres::Config,
    connect: std::sync::Arc<Connect>,
}

#[cfg(feature = "postgres")]
impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnection")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish()
    }
}

#[cfg(feature = "postgres")]
impl PgConnection {
    /// Connections without TLS.
    pub fn plain(config: postgres::Config) -> PgConnection {
        PgConnection::new(config, |c| c.connect(postgres::NoTls))
    }

    /// Connections made by `connect` (e.g. `|c| c.connect(my_tls.clone())`), which is given
    /// `config` or a copy with options added.
    pub fn new(
        config: postgres::Config,
        connect: impl Fn(&postgres::Config) -> Result<postgres::Client, postgres::Error>
            + Send
            + Sync
            + 'static,
    ) -> PgConnection {
        PgConnection {
            config,
            connect: std::sync::Arc::new(connect),
        }
    }

    /// The settings.
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    /// A connection with the settings.
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        (self.connect)(&self.config)
    }

    /// A connection with other settings (the same made with more options).
    pub(crate) fn connect_with(
        &self,
        config: &postgres::Config,
    ) -> Result<postgres::Client, postgres::Error> {
        (self.connect)(config)
    }
}

use crate::sha::Sha256State;
use crate::store::{Download, Meta, Reader, Storage, Upload, WriteMode};
use crate::vpath::VirtualPath;
use async_trait::async_trait;
use bytes::Bytes;
use meta::MetaStore;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use std::collections::HashSet;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// Where the archive's objects go and how long replaced ones are kept.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct S3Config {
    /// The service's URL, e.g. `http://127.0.0.1:8333`; `None`: AWS.
    pub endpoint: Option<String>,
    /// The region (any value for most other stores).
    pub region: String,
    /// The bucket (it must exist).
    pub bucket: String,
    /// A key prefix inside the bucket (`""`: the whole bucket).
    pub prefix: String,
    /// Path-style requests (`http://host/bucket/key`: MinIO, SeaweedFS, Garage, Ceph) rather
    /// than virtual-hosted style (`http://bucket.host/key`: AWS).
    pub path_style: bool,
    /// The access key.
    pub credentials: Credentials,
    /// Objects replaced, removed or left by a killed upload are deleted this long after, so a
    /// reader that opened a file before finishes (objects of uploads still under way are never
    /// deleted, whatever their age).
    pub gc_grace: Duration,
    /// The metadata database (SQLite), e.g. `DATA/store.db`, unless `postgres` names one.
    pub metadata: PathBuf,
    /// The metadata in this PostgreSQL database instead, shared by every server of the archive
    /// (its tables made by [`POSTGRES_SCHEMA`]).
    #[cfg(feature = "postgres")]
    pub postgres: Option<PgConnection>,
    /// Small uploads and appends wait inline at most this long for others to share an object
    /// with (longer: fewer objects, more bytes in the metadata meanwhile).
    pub pack_after: Duration,
    /// A file unchanged this long is rewritten as one seekable-zstd object; `None`: never.
    pub compress_after: Option<Duration>,
    /// Names of files never to compress (uploads in progress).
    pub skip_compress: fn(&str) -> bool,
}

impl S3Config {
    /// A configuration with the defaults: region `us-east-1`, no prefix, path-style requests,
    /// a 10-minute grace period, no compression.
    pub fn new(
        endpoint: Option<String>,
        bucket: impl Into<String>,
        credentials: Credentials,
        metadata: PathBuf,
    ) -> S3Config {
        S3Config {
            endpoint,
            region: "us-east-1".into(),
            bucket: bucket.into(),
            prefix: String::new(),
            path_style: true,
            credentials,
            gc_grace: Duration::from_secs(600),
            metadata,
            #[cfg(feature = "postgres")]
            postgres: None,
            pack_after: PACK_AFTER,
            compress_after: None,
            skip_compress: |_| false,
        }
    }
}

/// Counters of the back-end's requests (for `/metrics`).
#[derive(Debug, Default)]
pub struct S3Stats {
    puts: AtomicU64,
    gets: AtomicU64,
    deletes: AtomicU64,
    errors: AtomicU64,
    /// Sum of request times, microseconds.
    busy_us: AtomicU64,
    compacted: AtomicU64,
}

impl S3Stats {
    /// PUT requests made.
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }
    /// GET requests made.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }
    /// DELETE requests made.
    pub fn deletes(&self) -> u64 {
        self.deletes.load(Ordering::Relaxed)
    }
    /// Requests that failed (after the client's retries).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    /// Microseconds spent waiting for the store, all requests together.
    pub fn busy_micros(&self) -> u64 {
        self.busy_us.load(Ordering::Relaxed)
    }
    /// Files compressed into one object.
    pub fn compacted(&self) -> u64 {
        self.compacted.load(Ordering::Relaxed)
    }
}

pub(crate) struct Inner {
    store: AmazonS3,
    prefix: String,
    pub(crate) meta: Box<dyn MetaStore>,
    /// The runtime the back-end was opened on: every request runs there, whichever thread
    /// (a session's runtime, a blocking thread) asked for it.
    pub(crate) rt: tokio::runtime::Handle,
    grace: Duration,
    pack_after: Duration,
    stats: S3Stats,
    /// Keys of PUTs under way or not yet recorded (see [`LiveKey`]).
    live: Mutex<HashSet<String>>,
    packing: tokio::sync::Mutex<()>,
    compress_after: Option<Duration>,
    skip_compress: fn(&str) -> bool,
    /// One compaction pass at a time; files whose bytes did not verify (not tried again).
    compacting: tokio::sync::Mutex<()>,
    bad_compactions: Mutex<HashSet<i64>>,
    /// Tables of compressed objects.
    indexes: compact::Indexes,
}

/// A key the collector must not delete although it is listed as garbage: its PUT is under way,
/// or its segment not yet recorded. Removed from the live set when the last holder drops it.
pub(crate) struct LiveKey {
    inner: Weak<Inner>,
    pub(crate) key: String,
}

impl LiveKey {
    pub(crate) fn new(inner: &Arc<Inner>, key: String) -> Arc<LiveKey> {
        inner.live().insert(key.clone());
        Arc::new(LiveKey {
            inner: Arc::downgrade(inner),
            key,
        })
    }
}

impl Drop for LiveKey {
    fn drop(&mut self) {
        if let Some(i) = self.inner.upgrade() {
            i.live().remove(&self.key);
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn store_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(format!("object store: {e}")),
    }
}

impl Inner {
    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{key}", self.prefix))
    }

    /// A key no object ever had.
    pub(crate) fn new_key(&self) -> String {
        format!("objects/{:032x}", rand::random::<u128>())
    }

    async fn timed<T>(
        &self,
        counter: &AtomicU64,
        f: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> io::Result<T> {
        let t0 = std::time::Instant::now();
        counter.fetch_add(1, Ordering::Relaxed);
        let r = f.await;
        self.stats
            .busy_us
            .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        r.map_err(|e| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            store_error(e)
        })
    }

    pub(crate) async fn put_object(&self, key: &str, data: Bytes) -> io::Result<()> {
        let path = self.path(key);
        self.timed(&self.stats.puts, self.store.put(&path, data.into()))
            .await
            .map(|_| ())
    }

    pub(crate) async fn get_range(&self, key: &str, range: Range<u64>) -> io::Result<Bytes> {
        let path = self.path(key);
        self.timed(&self.stats.gets, self.store.get_range(&path, range))
            .await
    }

    async fn delete_object(&self, key: &str) -> io::Result<()> {
        let path = self.path(key);
        match self
            .timed(&self.stats.deletes, self.store.delete(&path))
            .await
        {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Packs inline segments (small uploads and appends) into shared objects of up to a
    /// segment's size, once the oldest has waited [`PACK_AFTER`] or they fill one. Returns
    /// how many segments now live in objects.
    async fn pack(self: &Arc<Self>) -> io::Result<usize> {
        // One packer at a time (the background one and `pack_now`): two would PUT the same
        // segments twice.
        let _one = self.packing.lock().await;
        let mut done = 0;
        // Bounded per call: segments that change while being packed are taken next time.
        for _ in 0..64 {
            let before = meta::now_ms() - self.pack_after.as_millis() as i64;
            let batch = self.meta.inline_batch(before, transfer::SEGMENT as u64)?;
            if batch.is_empty() {
                break;
            }
            let mut body = Vec::with_capacity(batch.iter().map(|b| b.2 as usize).sum());
            let mut placed = Vec::with_capacity(batch.len());
            for (node, start, len, data) in &batch {
                placed.push((*node, *start, *len, body.len() as u64));
                body.extend_from_slice(&data[..(*len as usize).min(data.len())]);
            }
            let key = LiveKey::new(self, self.new_key());
            self.meta.pending(&key.key)?;
            self.put_object(&key.key, Bytes::from(body)).await?;
            done += self.meta.packed(&key.key, &placed)?;
        }
        Ok(done)
    }

    /// Deletes the objects whose grace period is over, but those of uploads still under way.
    /// Returns how many.
    async fn collect_garbage(&self) -> io::Result<usize> {
        let now = meta::now_ms();
        let before = now - self.grace.as_millis() as i64;
        // A request a killed process had sent may still land after the first delete: each
        // object is deleted twice, at least a minute apart, before its row goes.
        let again = now - self.grace.max(Duration::from_secs(60)).as_millis() as i64;
        let mut done = 0;
        let mut skip = 0;
        loop {
            let due = self.meta.due_garbage(before, again, skip, 256)?;
            if due.is_empty() {
                return Ok(done);
            }
            let (live, keys): (Vec<_>, Vec<_>) = {
                let l = self.live();
                due.into_iter().partition(|(k, _)| l.contains(k))
            };
            skip += live.len();
            for (k, _) in &keys {
                self.delete_object(k).await?;
            }
            self.meta.forget_garbage(&keys)?;
            done += keys.iter().filter(|(_, second)| !second).count();
        }
    }
}

/// The S3 client for a configuration (nothing sent yet).
fn client(config: &S3Config) -> io::Result<AmazonS3> {
    let mut b = AmazonS3Builder::new()
        .with_region(&config.region)
        .with_bucket_name(&config.bucket)
        .with_access_key_id(&config.credentials.access_key_id)
        .with_secret_access_key(config.credentials.secret())
        .with_virtual_hosted_style_request(!config.path_style)
        // Over TLS the body is protected already: not hashing it for the signature saves a
        // pass over every byte. Over plain HTTP the signature covers the body too.
        .with_unsigned_payload(
            config
                .endpoint
                .as_deref()
                .is_none_or(|e| e.starts_with("https://")),
        )
        .with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
            ..RetryConfig::default()
        })
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(60))
                .with_allow_http(true),
        );
    if let Some(token) = &config.credentials.session_token {
        b = b.with_token(token);
    }
    if let Some(e) = &config.endpoint {
        b = b.with_endpoint(e);
    }
    b.build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

/// `prefix` as keys start with it: `""` or `"p/"`.
fn key_prefix(prefix: &str) -> String {
    match prefix.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    }
}

/// Whether the bucket answers to these credentials: one listing under the prefix, nothing
/// written (for `logarchive server --check`).
pub async fn probe(config: &S3Config) -> io::Result<()> {
    let store = client(config)?;
    let prefix = key_prefix(&config.prefix);
    let at = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
    store
        .list_with_delimiter(at.as_ref())
        .await
        .map(|_| ())
        .map_err(store_error)
}

/// What [`S3Storage::check_objects`] found: the bucket against the metadata.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectCheck {
    /// Objects under the prefix.
    pub objects: u64,
    /// Their bytes.
    pub object_bytes: u64,
    /// Segments recorded by the metadata.
    pub segments: u64,
    /// Segments whose object is missing or shorter than recorded: (file path, key).
    pub missing: Vec<(String, String)>,
    /// Objects under the prefix that no segment and no pending collection names (a crash
    /// before the collector knew them, or another program's).
    pub orphans: Vec<String>,
}

/// The archive in an S3 bucket (cheap to clone).
#[derive(Debug, Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

impl S3Storage {
    /// Opens the bucket and the metadata database, and starts the packer and the garbage
    /// collector. Must be called inside a tokio runtime, which then carries every request.
    pub fn open(config: S3Config) -> io::Result<S3Storage> {
        let s = Self::inspect(config)?;
        s.inner
            .rt
            .spawn(collect_now_and_then(Arc::downgrade(&s.inner)));
        if s.inner.meta.shared() {
            s.inner.rt.spawn(touch_live_keys(Arc::downgrade(&s.inner)));
        }
        Ok(s)
    }

    /// Opens the bucket and the metadata database to look, beside a server that has them
    /// open: no packer, no collector (`archive fsck`, `du`). Inside a tokio runtime.
    pub fn inspect(config: S3Config) -> io::Result<S3Storage> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("the S3 back-end must be opened in a tokio runtime"))?;
        let store = client(&config)?;
        let prefix = key_prefix(&config.prefix);
        let inner = Arc::new(Inner {
            store,
            prefix,
            meta: open_meta(&config)?,
            rt: rt.clone(),
            grace: config.gc_grace,
            pack_after: config.pack_after,
            stats: S3Stats::default(),
            live: Mutex::new(HashSet::new()),
            packing: tokio::sync::Mutex::new(()),
            compress_after: config.compress_after,
            skip_compress: config.skip_compress,
            compacting: tokio::sync::Mutex::new(()),
            bad_compactions: Mutex::new(HashSet::new()),
            indexes: compact::Indexes::default(),
        });
        Ok(S3Storage { inner })
    }

    /// Request counters.
    pub fn stats(&self) -> &S3Stats {
        &self.inner.stats
    }

    /// Bytes waiting inline for the packer.
    pub fn inline_bytes(&self) -> io::Result<u64> {
        self.inner.meta.inline_bytes()
    }

    /// Compresses files unchanged for `quiet` into one seekable-zstd object each (at most 64
    /// per call; the background pass does this by itself with `compress_after`).
    pub async fn compact_now(&self, quiet: Duration) -> io::Result<compact::CompactReport> {
        let inner = Arc::clone(&self.inner);
        let skip = self.inner.skip_compress;
        self.inner
            .rt
            .spawn(async move { inner.compact(quiet, skip).await })
            .await
            .map_err(io::Error::other)?
    }

    /// Packs the inline segments that are due now (the packer also runs by itself, every
    /// second). Returns how many segments were packed.
    pub async fn pack_now(&self) -> io::Result<usize> {
        let inner = Arc::clone(&self.inner);
        self.inner
            .rt
            .spawn(async move { inner.pack().await })
            .await
            .map_err(io::Error::other)?
    }

    /// Deletes the objects whose grace period is over now (the collector also runs by itself).
    pub async fn collect_garbage(&self) -> io::Result<usize> {
        let inner = Arc::clone(&self.inner);
        self.inner
            .rt
            .spawn(async move { inner.collect_garbage().await })
            .await
            .map_err(io::Error::other)?
    }

    /// Whether the bucket answers now: one listing under the prefix, nothing written (the
    /// server's readiness). The caller bounds the wait; the client's retries stop with it.
    pub async fn reachable(&self) -> io::Result<()> {
        let at =
            (!self.inner.prefix.is_empty()).then(|| ObjectPath::from(self.inner.prefix.as_str()));
        self.inner
            .store
            .list_with_delimiter(at.as_ref())
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    /// Lists the bucket under the prefix and compares it with the metadata: objects missing
    /// or short, and objects nothing names. Reads only.
    pub async fn check_objects(&self) -> io::Result<ObjectCheck> {
        use futures_util::TryStreamExt;
        let inner = Arc::clone(&self.inner);
        self.inner
            .rt
            .spawn(async move {
                // The metadata is read before and after the listing, so that a server working
                // meanwhile can make neither a false "missing" (a segment recorded after the
                // listing) nor a false orphan (garbage collected after the listing).
                let (segments, garbage_before) =
                    (inner.meta.all_segments()?, inner.meta.all_garbage()?);
                let base = format!("{}objects", inner.prefix);
                let listed: Vec<object_store::ObjectMeta> = inner
                    .store
                    .list(Some(&ObjectPath::from(base.as_str())))
                    .try_collect()
                    .await
                    .map_err(store_error)?;
                let mut sizes = std::collections::HashMap::new();
                let mut check = ObjectCheck::default();
                for o in &listed {
                    let key = o
                        .location
                        .as_ref()
                        .strip_prefix(inner.prefix.as_str())
                        .unwrap_or(o.location.as_ref())
                        .to_string();
                    check.objects += 1;
                    check.object_bytes += o.size;
                    sizes.insert(key, o.size);
                }
                let mut named: HashSet<String> = HashSet::new();
                for (path, key, len) in segments {
                    check.segments += 1;
                    if sizes.get(&key).is_none_or(|s| *s < len) {
                        check.missing.push((path, key.clone()));
                    }
                    // Named before the listing: an object that stopped being a segment during
                    // it may be collected (garbage row and all) before the second read.
                    named.insert(key);
                }
                named.extend(
                    inner
                        .meta
                        .all_segments()?
                        .into_iter()
                        .map(|(_, key, _)| key)
                        .chain(garbage_before)
                        .chain(inner.meta.all_garbage()?),
                );
                let candidates: Vec<String> = sizes
                    .into_keys()
                    .filter(|k| !named.contains(k) && !inner.live().contains(k))
                    .collect();
                // A key made garbage after the first read and collected before the second
                // (object deleted, then its row) is named by neither: it is an orphan only if
                // its object is still there.
                for key in candidates {
                    match inner.store.head(&inner.path(&key)).await {
                        Err(object_store::Error::NotFound { .. }) => {}
                        _ => check.orphans.push(key),
                    }
                }
                check.orphans.sort();
                Ok(check)
            })
            .await
            .map_err(io::Error::other)?
    }

    /// Bytes the bucket holds for each file (its segments), by path.
    pub fn stored_bytes(&self) -> io::Result<std::collections::HashMap<String, u64>> {
        self.inner.meta.stored_by_path()
    }

    /// Runs a blocking job on the current runtime's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<Inner>) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(inner))
            .await
            .map_err(io::Error::other)?
    }
}

/// The metadata store `config` names.
fn open_meta(config: &S3Config) -> io::Result<Box<dyn MetaStore>> {
    #[cfg(feature = "postgres")]
    if let Some(pg) = &config.postgres {
        return Ok(Box::new(meta::PgMeta::open(pg)?));
    }
    Ok(Box::new(meta::SqliteMeta::open(&config.metadata)?))
}

/// By default, inline bytes wait at most this long for others to share an object with.
pub const PACK_AFTER: Duration = Duration::from_secs(5);

/// Ten times per grace period (at least every second), the garbage rows of this process's
/// PUTs under way start their age again, so the collector of another server sharing the
/// metadata leaves them (its own it knows). Apart from the packer's loop, which a long
/// compaction pass may hold up.
async fn touch_live_keys(inner: Weak<Inner>) {
    loop {
        let every = match inner.upgrade() {
            Some(i) => (i.grace / 10).clamp(Duration::from_millis(50), Duration::from_secs(1)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(i) = inner.upgrade() else { return };
        let keys: Vec<String> = i.live().iter().cloned().collect();
        if keys.is_empty() {
            continue;
        }
        let r = tokio::task::spawn_blocking(move || i.meta.touch_garbage(&keys)).await;
        if let Ok(Err(e)) = r {
            tracing::debug!("object store: keeping uploads under way: {e}");
        }
    }
}

/// The packer, every second, and the collector: at the start, then every grace period / 4 (at
/// least 1 s, at most 5 min).
async fn collect_now_and_then(inner: Weak<Inner>) {
    let mut next_collect = tokio::time::Instant::now();
    let mut next_compact = tokio::time::Instant::now();
    loop {
        let Some(i) = inner.upgrade() else { return };
        // The store unreachable shows in the request error counter and in failed uploads;
        // both simply try again later.
        if let Err(e) = i.pack().await {
            tracing::debug!("object store packing: {e}");
        }
        if tokio::time::Instant::now() >= next_collect {
            if let Err(e) = i.collect_garbage().await {
                tracing::debug!("object store garbage collection: {e}");
            }
            next_collect = tokio::time::Instant::now()
                + (i.grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(300));
        }
        if let Some(quiet) = i.compress_after {
            if tokio::time::Instant::now() >= next_compact {
                let started = std::time::Instant::now();
                match i.compact(quiet, i.skip_compress).await {
                    Ok(r) => {
                        if r.files > 0 {
                            tracing::info!(
                                files = r.files,
                                raw_bytes = r.raw_bytes,
                                stored_bytes = r.stored_bytes,
                                seconds = started.elapsed().as_secs_f64(),
                                "compressed quiet files"
                            );
                        }
                        if r.corrupt > 0 {
                            tracing::warn!(
                                "{} files do not give back their SHA-256 and stay uncompressed \
                                 (run archive fsck --full): {}",
                                r.corrupt,
                                r.errors.join("; ")
                            );
                        } else if r.failed > 0 {
                            tracing::debug!(
                                "{} files not compressed yet: {}",
                                r.failed,
                                r.errors.join("; ")
                            );
                        }
                    }
                    Err(e) => tracing::debug!("object store compaction: {e}"),
                }
                next_compact = tokio::time::Instant::now()
                    + (quiet / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
            }
        }
        drop(i);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn stat(&self, path: &VirtualPath) -> io::Result<Meta> {
        Ok(self.inner.meta.lookup(path)?.meta())
    }

    async fn list(&self, dir: &VirtualPath) -> io::Result<Vec<(String, Meta)>> {
        let path = dir.clone();
        self.blocking(move |i| {
            Ok(i.meta
                .list(&path)?
                .into_iter()
                .map(|(name, n)| (name, n.meta()))
                .collect())
        })
        .await
    }

    async fn mkdir(&self, path: &VirtualPath) -> io::Result<()> {
        self.inner.meta.mkdir(path)
    }

    async fn remove_file(&self, path: &VirtualPath) -> io::Result<()> {
        self.inner.meta.remove_file(path)
    }

    async fn remove_dir(&self, path: &VirtualPath) -> io::Result<()> {
        self.inner.meta.remove_dir(path)
    }

    async fn rename(
        &self,
        from: &VirtualPath,
        to: &VirtualPath,
        replace: bool,
    ) -> io::Result<Meta> {
        Ok(self.inner.meta.rename(from, to, replace)?.meta())
    }

    async fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> io::Result<()> {
        self.inner.meta.set_modified(path, time)
    }

    async fn read(&self, path: &VirtualPath, offset: u64) -> io::Result<Box<dyn Download>> {
        let n = self.inner.meta.lookup(path)?;
        if n.dir {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, "not a file"));
        }
        let segments = self.inner.meta.segments(n.id)?;
        Ok(Box::new(transfer::S3Download::new(
            Arc::clone(&self.inner),
            segments,
            n.size,
            offset,
        )))
    }

    async fn write(&self, path: &VirtualPath, mode: WriteMode) -> io::Result<Box<dyn Upload>> {
        let meta = &self.inner.meta;
        let (id, offset, prefix) = match mode {
            WriteMode::CreateNew => (meta.create_file(path)?, 0, Some(Sha256State::new())),
            WriteMode::Append { at } => {
                let (id, prefix) = meta.open_append(path, at)?;
                (id, at, prefix)
            }
            WriteMode::Replace { at } => {
                let (id, prefix) = meta.open_replace(path, at)?;
                (id, at, prefix)
            }
        };
        Ok(Box::new(transfer::S3Upload::new(
            Arc::clone(&self.inner),
            id,
            offset,
            prefix,
        )))
    }

    async fn open_reader(&self, path: &VirtualPath) -> io::Result<Box<dyn Reader>> {
        let n = self.inner.meta.lookup(path)?;
        if n.dir {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, "not a file"));
        }
        let segments = self.inner.meta.segments(n.id)?;
        Ok(Box::new(transfer::S3Reader::new(
            Arc::clone(&self.inner),
            segments,
            n.size,
            n.meta().modified,
            n.id,
        )))
    }

    async fn known_sha256(&self, path: &VirtualPath) -> Option<Sha256State> {
        self.inner.meta.lookup(path).ok()?.sha
    }

    async fn sha256(&self, path: &VirtualPath) -> io::Result<Sha256State> {
        let n = self.inner.meta.lookup(path)?;
        if n.dir {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, "not a file"));
        }
        if let Some(h) = n.sha {
            return Ok(h);
        }
        // Not kept (a rewrite from an offset): read it once and keep it.
        let mut d = self.read(path, 0).await?;
        let id = n.id;
        self.blocking(move |i| {
            let mut h = Sha256State::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let k = d.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
            }
            i.meta.remember_sha(id, &h)?;
            Ok(h)
        })
        .await
    }
}
