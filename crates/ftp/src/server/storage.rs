//! The storage back-end: the archive folder on the local disk, seen through each account's home.
//! It is where rights are checked, speed limits apply, uploads are hashed and events are emitted;
//! homes are enforced by the kernel (fsops.rs). Replaces `unftp-sbe-fs` (see transfer.rs for why).

use super::auth::FtpUser;
use super::events::FtpEvent;
use super::fsops::HomeDir;
use super::hash_cache::{hash_reader, FileVersion};
use super::sessions::Session;
use super::transfer::{self, Bounds};
use super::vpath::{is_temp_name, PathError, VirtualPath};
use super::Shared;
use crate::rights::Right;
use crate::users::UserRecord;
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::fmt::Debug;
use std::io::{self, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use unftp_core::storage::{Error, ErrorKind, Fileinfo, Metadata, Result, StorageBackend};

/// File metadata as libunftp wants it.
#[derive(Debug, Clone)]
pub struct Meta(std::fs::Metadata);

impl Metadata for Meta {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn is_dir(&self) -> bool {
        self.0.is_dir()
    }
    fn is_file(&self) -> bool {
        self.0.is_file()
    }
    fn is_symlink(&self) -> bool {
        self.0.file_type().is_symlink()
    }
    fn modified(&self) -> Result<SystemTime> {
        self.0.modified().map_err(Error::from)
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
    fn permissions(&self) -> unftp_core::storage::Permissions {
        unftp_core::storage::Permissions(if self.0.is_dir() { 0o755 } else { 0o644 })
    }
}

/// The home of the logged-in account.
#[derive(Debug, Clone)]
struct Home {
    /// `/agent01`, or `/` for the whole archive.
    archive_path: String,
    /// Canonical real folder (names hash-cache entries).
    real: PathBuf,
    dir: Arc<HomeDir>,
}

/// A client path resolved inside the home.
#[derive(Debug, Clone)]
struct Target {
    vpath: VirtualPath,
    /// Relative to the home folder; empty for the home itself.
    rel: PathBuf,
    /// The real path (hash-cache key).
    key: PathBuf,
    dir: Arc<HomeDir>,
    /// The path in the whole archive, as events report it.
    archive_path: String,
}

/// One per session (libunftp creates it per connection and calls `enter` at login).
#[derive(Debug)]
pub struct ArchiveStorage {
    shared: Arc<Shared>,
    session: Arc<Session>,
    home: Option<Home>,
}

/// The folder of a home that holds the account's own bookkeeping (status document).
pub const SCRATCH_DIR: &str = ".logarchive";

fn denied(why: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::PermissionDenied,
        io::Error::new(io::ErrorKind::PermissionDenied, why.into()),
    )
}

fn path_error(e: PathError) -> Error {
    Error::new(ErrorKind::FileNameNotAllowedError, e)
}

fn not_a(what: &'static str) -> Error {
    Error::new(ErrorKind::PermanentFileNotAvailable, io::Error::other(what))
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::LocalError, e))?
}

impl ArchiveStorage {
    pub(crate) fn new(shared: Arc<Shared>, session: Arc<Session>) -> Self {
        ArchiveStorage {
            shared,
            session,
            home: None,
        }
    }

    /// The live record of `user`: a removed or disabled account can do nothing more, even in a
    /// session that is already open.
    fn record(&self, user: &FtpUser) -> Result<UserRecord> {
        match self.shared.users.get(&user.name) {
            Some(r) if r.enabled => Ok(r),
            Some(_) => Err(denied("account disabled")),
            None => Err(denied("account removed")),
        }
    }

    fn require(&self, user: &FtpUser, right: Right) -> Result<UserRecord> {
        let r = self.record(user)?;
        if r.rights.contains(right) {
            Ok(r)
        } else {
            Err(denied(format!("no {} right", right.as_str())))
        }
    }

    fn resolve(&self, path: &Path) -> Result<Target> {
        let home = self.home.as_ref().ok_or_else(|| denied("not logged in"))?;
        let vpath = VirtualPath::parse(path).map_err(path_error)?;
        let rel = vpath.relative();
        let archive_path = if home.archive_path == "/" {
            vpath.display()
        } else if vpath.is_root() {
            home.archive_path.clone()
        } else {
            format!("{}{}", home.archive_path, vpath.display())
        };
        Ok(Target {
            key: home.real.join(&rel),
            rel,
            vpath,
            dir: Arc::clone(&home.dir),
            archive_path,
        })
    }

    fn emit(&self, e: FtpEvent) {
        self.shared.emit(e);
    }

    fn bounds(&self, user: &FtpUser, upload: bool, archive_path: &str) -> Bounds {
        let l = self
            .shared
            .throttles
            .for_user(&self.shared.users.snapshot(), &user.name);
        Bounds {
            limiter: Some(if upload { l.upload } else { l.download }),
            stall: self.shared.config.stall_timeout,
            cancel: self.session.cancel.subscribe(),
            progress: self
                .session
                .begin_transfer(archive_path.to_string(), upload),
            stats: Arc::clone(&self.shared.stats),
        }
    }
}

/// Whether an upload at offset `start` into the existing file `m` is allowed, by the rights.
fn may_extend(rec: &UserRecord, m: &std::fs::Metadata, start: u64) -> io::Result<()> {
    let deny = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            why.to_string(),
        ))
    };
    if m.is_dir() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "is a folder"));
    }
    if start > m.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "REST offset past the end of the file",
        ));
    }
    let at_end = start == m.len();
    let r = &rec.rights;
    if r.contains(Right::Overwrite)
        || (at_end && r.contains(Right::Append))
        || (at_end && m.len() == 0 && r.contains(Right::Write))
    {
        Ok(())
    } else if at_end {
        deny("no append right")
    } else {
        deny("no overwrite right: the file exists")
    }
}

#[async_trait]
impl StorageBackend<FtpUser> for ArchiveStorage {
    type Metadata = Meta;

    fn enter(&mut self, user: &FtpUser) -> io::Result<()> {
        let rec =
            self.shared.users.get(&user.name).ok_or_else(|| {
                io::Error::new(io::ErrorKind::PermissionDenied, "account removed")
            })?;
        let root = &self.shared.archive_root;
        let real = root.join(rec.home.trim_start_matches('/'));
        std::fs::create_dir_all(&real)?;
        let real = std::fs::canonicalize(&real)?;
        if !real.starts_with(root) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "home leaves the archive",
            ));
        }
        let dir = Arc::new(HomeDir::open(&real)?);
        self.home = Some(Home {
            archive_path: rec.home.clone(),
            real,
            dir,
        });
        Ok(())
    }

    fn supported_features(&self) -> u32 {
        unftp_core::storage::FEATURE_RESTART
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> Result<Meta> {
        let rec = self.record(user)?;
        if ![Right::List, Right::Read, Right::Write, Right::Append]
            .iter()
            .any(|r| rec.rights.contains(*r))
        {
            return Err(denied("no list right"));
        }
        let t = self.resolve(path.as_ref())?;
        self.shared.inflight.settled(&t.key).await;
        blocking(move || Ok(Meta(t.dir.stat(&t.rel)?))).await
    }

    async fn list<P>(&self, user: &FtpUser, path: P) -> Result<Vec<Fileinfo<PathBuf, Meta>>>
    where
        P: AsRef<Path> + Send + Debug,
    {
        self.require(user, Right::List)?;
        let t = self.resolve(path.as_ref())?;
        blocking(move || {
            let meta = t.dir.stat(&t.rel)?;
            if meta.is_file() {
                let name = t.vpath.file_name().unwrap_or_default().into();
                return Ok(vec![Fileinfo {
                    path: name,
                    metadata: Meta(meta),
                }]);
            }
            let mut out: Vec<_> = t
                .dir
                .list(&t.rel)?
                .into_iter()
                .map(|(name, m)| Fileinfo {
                    path: PathBuf::from(name),
                    metadata: Meta(m),
                })
                .collect();
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(out)
        })
        .await
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
        start_pos: u64,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
        // RETR goes through get_into (throttled); this is only for libunftp internals.
        self.require(user, Right::Read)?;
        let t = self.resolve(path.as_ref())?;
        let f = blocking(move || Ok(t.dir.open_at(&t.rel, libc::O_RDONLY, 0)?)).await?;
        let mut f = tokio::fs::File::from_std(f);
        tokio::io::AsyncSeekExt::seek(&mut f, io::SeekFrom::Start(start_pos)).await?;
        Ok(Box::new(f))
    }

    async fn get_into<'a, P, W: ?Sized>(
        &self,
        user: &FtpUser,
        path: P,
        start_pos: u64,
        output: &'a mut W,
    ) -> Result<u64>
    where
        W: tokio::io::AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + Debug,
    {
        self.require(user, Right::Read)?;
        let t = self.resolve(path.as_ref())?;
        let bounds = self.bounds(user, false, &t.archive_path);
        let (dir, rel) = (Arc::clone(&t.dir), t.rel.clone());
        let open: transfer::DownloadOpener = Box::new(move || {
            let f = dir.open_at(&rel, libc::O_RDONLY, 0)?;
            let meta = f.metadata()?;
            if !meta.is_file() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
            }
            Ok((f, meta.len()))
        });
        let result = match self.try_zero_copy(&t, start_pos, &bounds).await {
            Some(r) => r,
            None => transfer::send(output, open, start_pos, bounds).await,
        };
        self.session.end_transfer();
        match result {
            Ok(bytes) => {
                self.emit(FtpEvent::Downloaded {
                    user: user.name.clone(),
                    path: t.archive_path,
                    bytes,
                });
                Ok(bytes)
            }
            Err(e) => {
                self.emit(FtpEvent::TransferFailed {
                    user: user.name.clone(),
                    path: t.archive_path,
                    upload: false,
                    error: e.to_string(),
                });
                Err(Error::from(e))
            }
        }
    }

    async fn put<
        P: AsRef<Path> + Send + Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        user: &FtpUser,
        input: R,
        path: P,
        start_pos: u64,
    ) -> Result<u64> {
        let mut rec = self.record(user)?;
        let t = self.resolve(path.as_ref())?;
        if t.vpath.is_root() {
            return Err(not_a("file"));
        }
        // `/.logarchive/` in a home is the account's own scratch area (the agent's status
        // document is rewritten there): whoever may write may also rewrite there.
        if t.rel.starts_with(SCRATCH_DIR)
            && t.rel.components().count() > 1
            && rec.rights.contains(Right::Write)
        {
            rec.rights = rec.rights.iter().chain([Right::Overwrite]).collect();
        }
        let _writing = self.shared.inflight.write(&t.key).await;
        let bounds = self.bounds(user, true, &t.archive_path);
        let shared = Arc::clone(&self.shared);
        let (dir, rel, key) = (Arc::clone(&t.dir), t.rel.clone(), t.key.clone());
        let (extends_tx, extends_rx) = std::sync::mpsc::sync_channel::<bool>(1);
        let open: transfer::UploadOpener = Box::new(move || {
            // A new name first (create_new: a name that appeared meanwhile is never clobbered).
            if start_pos == 0 && rec.rights.contains(Right::Write) {
                match dir.open_at(&rel, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o644) {
                    Ok(f) => {
                        let _ = extends_tx.send(false);
                        return Ok((f, Some(Sha256::new())));
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            let mut f = match dir.open_at(&rel, libc::O_WRONLY, 0) {
                Ok(f) => f,
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && !rec.rights.contains(Right::Write) =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "no write right",
                    ));
                }
                Err(e) => return Err(e),
            };
            let before = f.metadata()?;
            may_extend(&rec, &before, start_pos)?;
            let _ = extends_tx.send(start_pos > 0);
            let state = if start_pos == 0 {
                Some(Sha256::new())
            } else {
                shared.hashes.state(&key, FileVersion::of(&before))
            };
            if before.len() != start_pos {
                f.set_len(start_pos)?; // rewriting from an earlier offset (overwrite right)
            }
            f.seek(io::SeekFrom::Start(start_pos))?;
            Ok((f, state))
        });
        let received = transfer::receive(input, open, bounds).await;
        self.session.end_transfer();
        let appended = extends_rx.try_recv().unwrap_or(false);

        // Whatever reached the disk is described in the hash cache, so a resume continues from it.
        let mut digest = None;
        let mut size = start_pos + received.bytes;
        if let Some(f) = &received.file {
            if let Ok(meta) = f.metadata() {
                size = meta.len();
                match received.hasher {
                    Some(h) => {
                        digest = Some(hex::encode(h.clone().finalize()));
                        self.shared.hashes.record(&t.key, h, FileVersion::of(&meta));
                    }
                    None => self.shared.hashes.forget(&t.key),
                }
            }
        }
        let temp = t.vpath.file_name().is_some_and(is_temp_name);
        if let Some(e) = received.error {
            self.emit(FtpEvent::TransferFailed {
                user: user.name.clone(),
                path: t.archive_path,
                upload: true,
                error: e.to_string(),
            });
            return Err(match e.kind() {
                io::ErrorKind::TimedOut => Error::new(ErrorKind::ConnectionClosed, e),
                _ => Error::from(e),
            });
        }
        let (user, path) = (user.name.clone(), t.archive_path);
        self.emit(if appended {
            FtpEvent::Appended {
                user,
                path,
                offset: start_pos,
                size,
                sha256: digest,
                temp,
            }
        } else {
            FtpEvent::UploadCompleted {
                user,
                path,
                size,
                sha256: digest,
                temp,
            }
        });
        Ok(received.bytes)
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        self.require(user, Right::Delete)?;
        let t = self.resolve(path.as_ref())?;
        let shared = Arc::clone(&self.shared);
        let (dir, rel, key) = (Arc::clone(&t.dir), t.rel.clone(), t.key.clone());
        blocking(move || {
            dir.remove(&rel, false)?;
            shared.hashes.forget(&key);
            Ok(())
        })
        .await?;
        self.emit(FtpEvent::Deleted {
            user: user.name.clone(),
            path: t.archive_path,
        });
        Ok(())
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        self.require(user, Right::Mkdir)?;
        let t = self.resolve(path.as_ref())?;
        if t.vpath.is_root() {
            return Err(not_a("new folder"));
        }
        let (dir, rel) = (Arc::clone(&t.dir), t.rel.clone());
        blocking(move || Ok(dir.mkdir(&rel)?)).await?;
        self.emit(FtpEvent::DirCreated {
            user: user.name.clone(),
            path: t.archive_path,
        });
        Ok(())
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        from: P,
        to: P,
    ) -> Result<()> {
        let rec = self.require(user, Right::Rename)?;
        let from = self.resolve(from.as_ref())?;
        let to = self.resolve(to.as_ref())?;
        if from.vpath.is_root() || to.vpath.is_root() {
            return Err(denied("cannot rename the home folder"));
        }
        let from_temp = from.vpath.file_name().is_some_and(is_temp_name);
        // Renaming a final name away removes it from the archive: that is deleting.
        if !from_temp && !rec.rights.contains(Right::Delete) {
            return Err(denied(
                "only temporary upload names may be renamed without the delete right",
            ));
        }
        let replace = rec.rights.contains(Right::Overwrite);
        let shared = Arc::clone(&self.shared);
        let (dir, fr, tr, fk, tk) = (
            Arc::clone(&from.dir),
            from.rel.clone(),
            to.rel.clone(),
            from.key.clone(),
            to.key.clone(),
        );
        let meta = blocking(move || {
            dir.rename(&fr, &tr, replace).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    denied("the target exists and the account has no overwrite right")
                } else {
                    Error::from(e)
                }
            })?;
            let meta = dir.stat(&tr)?;
            shared.hashes.rename(&fk, &tk, FileVersion::of(&meta));
            Ok(meta)
        })
        .await?;
        let sha256 = if meta.is_file() {
            self.shared.hashes.digest(&to.key, FileVersion::of(&meta))
        } else {
            None
        };
        self.emit(FtpEvent::Renamed {
            user: user.name.clone(),
            from: from.archive_path,
            to: to.archive_path,
            size: meta.len(),
            sha256,
            from_temp,
        });
        Ok(())
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        self.require(user, Right::Delete)?;
        let t = self.resolve(path.as_ref())?;
        if t.vpath.is_root() {
            return Err(denied("cannot remove the home folder"));
        }
        let (dir, rel) = (Arc::clone(&t.dir), t.rel.clone());
        blocking(move || Ok(dir.remove(&rel, true)?)).await?;
        self.emit(FtpEvent::DirRemoved {
            user: user.name.clone(),
            path: t.archive_path,
        });
        Ok(())
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        self.record(user)?;
        let t = self.resolve(path.as_ref())?;
        blocking(move || {
            if t.dir.stat(&t.rel)?.is_dir() {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::PermanentDirectoryNotAvailable,
                    io::Error::other("not a folder"),
                ))
            }
        })
        .await
    }
}

impl ArchiveStorage {
    /// A download through sendfile(2) when that is possible and worth it; `None` = use the
    /// ordinary path (nothing has been sent then).
    async fn try_zero_copy(
        &self,
        t: &Target,
        start: u64,
        bounds: &Bounds,
    ) -> Option<io::Result<u64>> {
        use std::sync::atomic::Ordering;
        if self.shared.config.tls.is_some() {
            return None;
        }
        let port = self.session.passive_port.load(Ordering::Relaxed);
        let (dir, rel) = (Arc::clone(&t.dir), t.rel.clone());
        let peer = self.session.addr.ip();
        let prepared = tokio::task::spawn_blocking(move || {
            let f = dir.open_at(&rel, libc::O_RDONLY, 0).ok()?;
            let meta = f.metadata().ok()?;
            // Small files gain nothing; they take the one-step path.
            if !meta.is_file() || meta.len().saturating_sub(start) < transfer::SMALL as u64 {
                return None;
            }
            let sock = super::zerocopy::find_data_socket(port, peer)?;
            Some((f, meta.len(), sock))
        })
        .await
        .ok()??;
        let (file, len, sock) = prepared;
        self.shared
            .stats
            .zero_copy_downloads
            .fetch_add(1, Ordering::Relaxed);
        let limiter = bounds.limiter.clone();
        let progress = Arc::clone(&bounds.progress);
        let cancel = bounds.cancel.clone();
        let stall = bounds.stall;
        let step = bounds.step();
        let r = tokio::task::spawn_blocking(move || {
            super::zerocopy::sendfile_all(&sock, &file, start, len, step, stall, |n| {
                if *cancel.borrow() {
                    return false;
                }
                if let Some(l) = &limiter {
                    if l.speed_limit().is_finite() {
                        l.blocking_consume(n);
                    }
                }
                progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
                true
            })
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        Some(r)
    }

    /// SHA-256 of a file in the home (for `SITE SHA256`): from the hash cache when the file is the
    /// version last written, otherwise read from disk once and remembered.
    /// `SITE ALIAS`: records that the file at `path` was also known as `name`. Only an account
    /// that may add to the file (write or append) may name it.
    pub(crate) async fn alias(&self, user: &FtpUser, path: &str, name: &str) -> Result<()> {
        self.require(user, Right::Append)
            .or_else(|_| self.require(user, Right::Write))?;
        let t = self.resolve(Path::new(path))?;
        let (dir, rel) = (Arc::clone(&t.dir), t.rel.clone());
        let meta = blocking(move || Ok(dir.stat(&rel)?)).await?;
        if !meta.is_file() {
            return Err(not_a("file"));
        }
        self.emit(FtpEvent::Alias {
            user: user.name.clone(),
            path: t.archive_path,
            name: name.to_string(),
        });
        Ok(())
    }

    pub(crate) async fn sha256(&self, user: &FtpUser, path: &str) -> Result<String> {
        self.require(user, Right::List)
            .or_else(|_| self.require(user, Right::Read))?;
        let t = self.resolve(Path::new(path))?;
        self.shared.inflight.settled(&t.key).await;
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            let f = t.dir.open_at(&t.rel, libc::O_RDONLY, 0)?;
            let meta = f.metadata()?;
            if !meta.is_file() {
                return Err(not_a("file"));
            }
            if let Some(d) = shared.hashes.digest(&t.key, FileVersion::of(&meta)) {
                return Ok(d);
            }
            shared
                .stats
                .full_hash_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let h = hash_reader(f)?;
            let after = t.dir.stat(&t.rel)?;
            let digest = hex::encode(h.clone().finalize());
            if FileVersion::of(&meta) == FileVersion::of(&after) {
                shared.hashes.record(&t.key, h, FileVersion::of(&after));
            }
            Ok(digest)
        })
        .await
    }
}
