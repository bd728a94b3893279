//! The default store: a folder on the local disk. Every path is opened beneath the folder's
//! directory descriptor with openat2 (fsops.rs: the kernel refuses `..` above it and symlinks,
//! with no window between check and use). The SHA-256 state of what was uploaded is remembered
//! per file version, so `SITE SHA256` after an upload, a resume or an append reads nothing.

use super::fsops::HomeDir;
use super::hash_cache::{FileVersion, HashCache};
use super::local_pack::{self as pack, Found, PackReport, Writers, Writing};
use super::store::{Download, Kind, Meta, Reader, Storage, Upload, WriteMode};
use super::vpath::VirtualPath;
use crate::sha::Sha256State;
use async_trait::async_trait;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// Counters for tests and metrics.
#[derive(Debug, Default)]
pub struct LocalStats {
    full_hash_reads: AtomicU64,
    upload_writes: AtomicU64,
}

impl LocalStats {
    /// Times a whole file had to be read for its SHA-256 (it was not known from its upload).
    pub fn full_hash_reads(&self) -> u64 {
        self.full_hash_reads.load(Ordering::Relaxed)
    }

    /// write(2) calls made for uploads (shows the chunking).
    pub fn upload_writes(&self) -> u64 {
        self.upload_writes.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) root: HomeDir,
    pub(crate) hashes: HashCache,
    stats: LocalStats,
    pub(crate) writers: Writers,
}

/// A folder as the store (cheap to clone).
#[derive(Debug, Clone)]
pub struct LocalStorage {
    inner: Arc<Inner>,
}

pub(crate) fn meta(m: &std::fs::Metadata) -> Meta {
    let kind = if m.is_dir() { Kind::Dir } else { Kind::File };
    Meta::new(kind, m.len(), m.modified().ok())
}

fn not_a_file() -> io::Error {
    io::Error::new(io::ErrorKind::IsADirectory, "not a file")
}

/// Runs metadata work (stat, open, mkdir, rename: microseconds on a local disk) on the session's
/// own thread, as nginx does: a hop to the blocking pool and back costs more than the call
/// itself, and was most of the cost of a small file. Work whose time grows with the data (a
/// listing, a whole-file hash, bulk transfers) goes to the blocking pool.
async fn inline<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    f()
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

impl LocalStorage {
    /// The folder `root` (created if missing) as a store.
    pub fn open(root: &Path) -> io::Result<LocalStorage> {
        std::fs::create_dir_all(root)?;
        Ok(LocalStorage {
            inner: Arc::new(Inner {
                root: HomeDir::open(root)?,
                hashes: HashCache::default(),
                stats: LocalStats::default(),
                writers: Writers::default(),
            }),
        })
    }

    /// Counters of the store's work (whole-file reads for hashes, writes).
    pub fn stats(&self) -> &LocalStats {
        &self.inner.stats
    }

    fn rel(path: &VirtualPath) -> PathBuf {
        path.relative()
    }

    /// Compresses every file under `dir` unchanged for `quiet` into seekable zstd (`a.log` →
    /// `a.log.zst`, shown as `a.log` with its bytes, size, time and SHA-256 as before). Files
    /// being written, smaller than 4 KiB or compressed already (by their name) stay as they
    /// are; so does what `skip` names. Blocking: call it on a blocking thread.
    pub fn compress_quiet(
        &self,
        dir: &VirtualPath,
        quiet: std::time::Duration,
        skip: &dyn Fn(&Path) -> bool,
    ) -> io::Result<PackReport> {
        self.compress_quiet_claimed(dir, quiet, skip, &|_| Ok(Some(Box::new(()))))
    }

    /// [`LocalStorage::compress_quiet`] where other processes share the folder: before a file
    /// that is due is touched (a twin resolved, a copy written, a swap), `claim` is asked for
    /// it with its path below the root; it answers a guard held until the file is done, or
    /// `None` when someone else holds the file now (it is left for the next pass).
    pub fn compress_quiet_claimed(
        &self,
        dir: &VirtualPath,
        quiet: std::time::Duration,
        skip: &dyn Fn(&Path) -> bool,
        claim: pack::Claim<'_>,
    ) -> io::Result<PackReport> {
        let mut report = PackReport::default();
        pack::compress_tree(
            &self.inner,
            &Self::rel(dir),
            quiet,
            skip,
            claim,
            &mut report,
        )?;
        Ok(report)
    }

    /// Bytes the archive takes on disk under `dir` (compressed files as compressed), and the
    /// bytes its files hold. Blocking.
    pub fn stored_bytes(&self, dir: &VirtualPath) -> io::Result<(u64, u64)> {
        pack::sizes(&self.inner.root, &Self::rel(dir))
    }
}

struct LocalUpload {
    inner: Arc<Inner>,
    _writing: Writing,
    rel: PathBuf,
    file: File,
    offset: u64,
    prefix: Option<Sha256State>,
}

impl LocalUpload {
    fn end(self, hash: Option<Sha256State>) -> io::Result<Meta> {
        let m = self.file.metadata()?;
        let version = FileVersion::of(&m);
        match hash {
            Some(h) if h.len() == m.len() => self.inner.hashes.record(&self.rel, h, version),
            _ => self.inner.hashes.forget(&self.rel),
        }
        Ok(meta(&m))
    }
}

impl Upload for LocalUpload {
    fn offset(&self) -> u64 {
        self.offset
    }
    fn prefix_hash(&self) -> Option<Sha256State> {
        self.prefix.clone()
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner
            .stats
            .upload_writes
            .fetch_add(1, Ordering::Relaxed);
        self.file.write_all(data)
    }
    fn finish(self: Box<Self>, hash: Option<Sha256State>) -> io::Result<Meta> {
        (*self).end(hash)
    }
    fn abandon(self: Box<Self>, hash: Option<Sha256State>) -> io::Result<Meta> {
        (*self).end(hash)
    }
    fn small_writes_inline(&self) -> bool {
        true
    }
}

struct LocalDownload {
    file: File,
    len: u64,
    pos: u64,
}

impl Download for LocalDownload {
    fn len(&self) -> u64 {
        self.len
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = ((self.len.saturating_sub(self.pos)) as usize).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn file(&self) -> Option<(&File, u64)> {
        Some((&self.file, self.pos))
    }
}

struct LocalReader {
    file: File,
    meta: std::fs::Metadata,
}

impl Reader for LocalReader {
    fn len(&self) -> u64 {
        self.meta.len()
    }
    fn modified(&self) -> Option<SystemTime> {
        self.meta.modified().ok()
    }
    fn identity(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.meta.ino() ^ self.meta.dev().rotate_left(32)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
}

#[async_trait]
impl Storage for LocalStorage {
    async fn stat(&self, path: &VirtualPath) -> io::Result<Meta> {
        let (i, rel) = (Arc::clone(&self.inner), Self::rel(path));
        inline(move || Ok(pack::find(&i.root, &rel, libc::O_PATH)?.meta())).await
    }

    async fn list(&self, dir: &VirtualPath) -> io::Result<Vec<(String, Meta)>> {
        let (i, rel) = (Arc::clone(&self.inner), Self::rel(dir));
        blocking(move || pack::list(&i.root, &rel)).await
    }

    async fn mkdir(&self, path: &VirtualPath) -> io::Result<()> {
        let (i, rel) = (Arc::clone(&self.inner), Self::rel(path));
        inline(move || {
            if pack::packed_exists(&i.root, &rel) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file has that name",
                ));
            }
            i.root.mkdir(&rel)
        })
        .await
    }

    async fn remove_file(&self, path: &VirtualPath) -> io::Result<()> {
        let (i, rel) = (Arc::clone(&self.inner), Self::rel(path));
        inline(move || {
            match pack::find(&i.root, &rel, libc::O_PATH)? {
                Found::Raw(..) => i.root.remove(&rel, false)?,
                Found::Packed(..) => i.root.remove(&pack::packed_path(&rel), false)?,
            }
            i.hashes.forget(&rel);
            Ok(())
        })
        .await
    }

    async fn remove_dir(&self, path: &VirtualPath) -> io::Result<()> {
        let (i, rel) = (Arc::clone(&self.inner), Self::rel(path));
        inline(move || i.root.remove(&rel, true)).await
    }

    async fn rename(
        &self,
        from: &VirtualPath,
        to: &VirtualPath,
        replace: bool,
    ) -> io::Result<Meta> {
        let (i, f, t) = (Arc::clone(&self.inner), Self::rel(from), Self::rel(to));
        inline(move || {
            let _from = Writers::enter(&i, &f);
            let _to = Writers::enter(&i, &t);
            let taken = || io::Error::new(io::ErrorKind::AlreadyExists, "the name is taken");
            match pack::find(&i.root, &f, libc::O_PATH)? {
                Found::Raw(..) => {
                    let twin = pack::packed_exists(&i.root, &t);
                    if twin && !replace {
                        return Err(taken());
                    }
                    i.root.rename(&f, &t, replace)?;
                    if twin {
                        // Replaced: the compressed form of the old target goes with it.
                        i.root.remove(&pack::packed_path(&t), false)?;
                    }
                }
                Found::Packed(..) => {
                    match i.root.stat(&t) {
                        Ok(_) if !replace => return Err(taken()),
                        Ok(m) if m.is_dir() => return Err(taken()),
                        Ok(_) => i.root.remove(&t, false)?,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                    i.root
                        .rename(&pack::packed_path(&f), &pack::packed_path(&t), replace)?;
                }
            }
            let found = pack::find(&i.root, &t, libc::O_PATH)?;
            match &found {
                Found::Raw(_, m) if m.is_file() => i.hashes.rename(&f, &t, FileVersion::of(m)),
                Found::Raw(..) => {
                    // A folder moved: the states of the files in it are keyed by their old paths.
                    i.hashes.forget_under(&f);
                }
                Found::Packed(..) => i.hashes.forget(&f),
            }
            Ok(found.meta())
        })
        .await
    }

    async fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> io::Result<()> {
        let (i, rel) = (Arc::clone(&self.inner), Self::rel(path));
        inline(move || {
            let f = match i.root.open_at(&rel, libc::O_WRONLY, 0) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !pack::packed_exists(&i.root, &rel) {
                        return Err(e);
                    }
                    // Compressed: its time is the compressed file's.
                    let z = i
                        .root
                        .open_at(&pack::packed_path(&rel), libc::O_WRONLY, 0)?;
                    return z.set_modified(time);
                }
                other => other?,
            };
            let before = f.metadata()?;
            if !before.is_file() {
                return Err(not_a_file());
            }
            f.set_modified(time)?;
            // The bytes did not change: the remembered hash moves to the new version.
            let after = f.metadata()?;
            if let Some(h) = i.hashes.state(&rel, FileVersion::of(&before)) {
                i.hashes.record(&rel, h, FileVersion::of(&after));
            }
            Ok(())
        })
        .await
    }

    async fn read(&self, path: &VirtualPath, offset: u64) -> io::Result<Box<dyn Download>> {
        let (i, rel) = (Arc::clone(&self.inner), Self::rel(path));
        inline(move || {
            let (file, m) = match pack::find(&i.root, &rel, libc::O_RDONLY)? {
                Found::Raw(f, m) => (f, m),
                Found::Packed(f, m, _) => {
                    let reader = pack::seekable(f, &m)?;
                    let pos = offset.min(reader.index().len());
                    return Ok(Box::new(pack::PackedDownload { reader, pos }) as Box<dyn Download>);
                }
            };
            if !m.is_file() {
                return Err(not_a_file());
            }
            Ok(Box::new(LocalDownload {
                file,
                len: m.len(),
                pos: offset.min(m.len()),
            }) as Box<dyn Download>)
        })
        .await
    }

    async fn write(&self, path: &VirtualPath, mode: WriteMode) -> io::Result<Box<dyn Upload>> {
        let (i, rel) = (Arc::clone(&self.inner), Self::rel(path));
        inline(move || {
            // Claimed before anything is looked at: no compression swaps the file meanwhile.
            let writing = Writers::enter(&i, &rel);
            if pack::packed_exists(&i.root, &rel) {
                if mode == WriteMode::CreateNew {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "the file exists",
                    ));
                }
                if let Found::Packed(f, m, _) = pack::find(&i.root, &rel, libc::O_RDONLY)? {
                    // A compressed file grows again: it becomes a plain file first.
                    let sha = pack::rehydrate(&i.root, &rel, f, &m)?;
                    let now = i.root.stat(&rel)?;
                    i.hashes.record(&rel, sha, FileVersion::of(&now));
                }
            }
            let (file, offset, prefix) = match mode {
                WriteMode::CreateNew => {
                    let f = i.root.open_at(
                        &rel,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                        0o644,
                    )?;
                    (f, 0, Some(Sha256State::new()))
                }
                WriteMode::Append { at } | WriteMode::Replace { at } => {
                    let create = if matches!(mode, WriteMode::Replace { .. }) {
                        libc::O_CREAT
                    } else {
                        0
                    };
                    let f = i.root.open_at(&rel, libc::O_WRONLY | create, 0o644)?;
                    let m = f.metadata()?;
                    if !m.is_file() {
                        return Err(not_a_file());
                    }
                    if matches!(mode, WriteMode::Append { .. }) && m.len() != at {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "the file is not that long",
                        ));
                    }
                    if at > m.len() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "offset past the end of the file",
                        ));
                    }
                    let prefix = if at == 0 {
                        Some(Sha256State::new())
                    } else {
                        i.hashes
                            .state(&rel, FileVersion::of(&m))
                            .filter(|h| h.len() == at)
                    };
                    if m.len() != at {
                        f.set_len(at)?;
                    }
                    (f, at, prefix)
                }
            };
            let mut upload = LocalUpload {
                inner: Arc::clone(&i),
                _writing: writing,
                rel,
                file,
                offset,
                prefix,
            };
            if offset > 0 {
                use std::io::Seek;
                upload.file.seek(io::SeekFrom::Start(offset))?;
            }
            Ok(Box::new(upload) as Box<dyn Upload>)
        })
        .await
    }

    async fn open_reader(&self, path: &VirtualPath) -> io::Result<Box<dyn Reader>> {
        let (i, rel) = (Arc::clone(&self.inner), Self::rel(path));
        inline(move || {
            // O_NONBLOCK: a FIFO planted in the archive cannot hang the open.
            let flags = libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK;
            let (file, meta) = match pack::find(&i.root, &rel, flags)? {
                Found::Raw(f, m) => (f, m),
                Found::Packed(f, m, _) => {
                    let reader = pack::seekable(f, &m)?;
                    return Ok(Box::new(pack::PackedReader { reader, meta: m }) as Box<dyn Reader>);
                }
            };
            if meta.is_dir() {
                return Err(io::Error::new(io::ErrorKind::IsADirectory, "not a file"));
            }
            if !meta.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "not a regular file",
                ));
            }
            Ok(Box::new(LocalReader { file, meta }) as Box<dyn Reader>)
        })
        .await
    }

    async fn known_sha256(&self, path: &VirtualPath) -> Option<Sha256State> {
        let (i, rel) = (Arc::clone(&self.inner), Self::rel(path));
        inline(move || {
            Ok(match pack::find(&i.root, &rel, libc::O_PATH)? {
                Found::Raw(_, m) => i.hashes.state(&rel, FileVersion::of(&m)),
                Found::Packed(_, _, sha) => Some(sha),
            })
        })
        .await
        .ok()
        .flatten()
    }

    async fn sha256(&self, path: &VirtualPath) -> io::Result<Sha256State> {
        let (i, rel) = (Arc::clone(&self.inner), Self::rel(path));
        blocking(move || {
            let (f, m) = match pack::find(&i.root, &rel, libc::O_RDONLY)? {
                Found::Raw(f, m) => (f, m),
                Found::Packed(_, _, sha) => return Ok(sha),
            };
            if !m.is_file() {
                return Err(not_a_file());
            }
            if let Some(h) = i.hashes.state(&rel, FileVersion::of(&m)) {
                return Ok(h);
            }
            i.stats.full_hash_reads.fetch_add(1, Ordering::Relaxed);
            let mut h = Sha256State::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut at = 0u64;
            loop {
                let n = f.read_at(&mut buf, at)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                at += n as u64;
            }
            // Remember it only if the file did not change while it was read.
            if FileVersion::of(&f.metadata()?) == FileVersion::of(&m) && h.len() == m.len() {
                i.hashes.record(&rel, h.clone(), FileVersion::of(&m));
            }
            Ok(h)
        })
        .await
    }
}
