//! The storage back-end: the archive folder on the local disk, seen through each account's home.
//! It is where homes are enforced, rights are checked, speed limits apply, uploads are hashed and
//! events are emitted. Replaces `unftp-sbe-fs` (see transfer.rs for why).

use super::auth::FtpUser;
use super::events::FtpEvent;
use super::hash_cache::{hash_file, FileVersion};
use super::sessions::Session;
use super::transfer::{self, Bounds};
use super::vpath::{check_on_disk, is_temp_name, PathError, VirtualPath};
use super::Shared;
use crate::rights::Right;
use crate::users::UserRecord;
use async_trait::async_trait;
use sha2::Sha256;
use std::fmt::Debug;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
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
    /// Canonical real folder.
    real: PathBuf,
}

/// A client path resolved inside the home.
#[derive(Debug, Clone)]
struct Target {
    vpath: VirtualPath,
    real: PathBuf,
    home_real: PathBuf,
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

fn denied(why: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::PermissionDenied,
        io::Error::new(io::ErrorKind::PermissionDenied, why.into()),
    )
}

fn path_error(e: PathError) -> Error {
    match e {
        PathError::Escapes => Error::new(ErrorKind::PermanentFileNotAvailable, e),
        PathError::BadCharacter | PathError::TooLong => {
            Error::new(ErrorKind::FileNameNotAllowedError, e)
        }
    }
}

fn blocking_failed(e: tokio::task::JoinError) -> Error {
    Error::new(ErrorKind::LocalError, e)
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(blocking_failed)?
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
        let real = home.real.join(vpath.relative());
        let archive_path = if home.archive_path == "/" {
            vpath.display()
        } else if vpath.is_root() {
            home.archive_path.clone()
        } else {
            format!("{}{}", home.archive_path, vpath.display())
        };
        Ok(Target {
            vpath,
            real,
            home_real: home.real.clone(),
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
        let limiter = if upload { l.upload } else { l.download };
        Bounds {
            limiter: Some(limiter),
            stall: self.shared.config.stall_timeout,
            cancel: self.shared.cancel_transfers.subscribe(),
            progress: self
                .session
                .begin_transfer(archive_path.to_string(), upload),
        }
    }
}

/// How an upload may touch the target, decided from what is on disk and the account's rights.
fn plan_upload(
    rec: &UserRecord,
    existing: Option<&std::fs::Metadata>,
    start: u64,
) -> io::Result<bool> {
    let deny = |m: &str| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            m.to_string(),
        ))
    };
    match existing {
        None if start > 0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "REST offset past the end of a missing file",
        )),
        None if rec.rights.contains(Right::Write) => Ok(false),
        None => deny("no write right"),
        Some(m) if m.is_dir() => Err(io::Error::new(io::ErrorKind::AlreadyExists, "is a folder")),
        Some(m) if start > m.len() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "REST offset past the end of the file",
        )),
        // Extending at the current end (APPE, or REST at the end): the append right.
        Some(m) if start == m.len() && rec.rights.contains(Right::Append) => Ok(true),
        Some(m) if start == m.len() && m.len() == 0 && rec.rights.contains(Right::Write) => {
            Ok(true)
        }
        Some(_) if rec.rights.contains(Right::Overwrite) => Ok(true),
        Some(m) if start == m.len() => deny("no append right"),
        Some(_) => deny("no overwrite right: the file exists"),
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
        self.home = Some(Home {
            archive_path: rec.home.clone(),
            real,
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
        blocking(move || {
            check_on_disk(&t.home_real, &t.real).map_err(path_error)?;
            Ok(Meta(std::fs::symlink_metadata(&t.real)?))
        })
        .await
    }

    async fn list<P>(&self, user: &FtpUser, path: P) -> Result<Vec<Fileinfo<PathBuf, Meta>>>
    where
        P: AsRef<Path> + Send + Debug,
    {
        self.require(user, Right::List)?;
        let t = self.resolve(path.as_ref())?;
        blocking(move || {
            check_on_disk(&t.home_real, &t.real).map_err(path_error)?;
            let meta = std::fs::symlink_metadata(&t.real)?;
            if meta.is_file() {
                let name = t.vpath.file_name().unwrap_or_default().into();
                return Ok(vec![Fileinfo {
                    path: name,
                    metadata: Meta(meta),
                }]);
            }
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&t.real)? {
                let entry = entry?;
                let Ok(meta) = entry.metadata() else { continue };
                // Only plain files and folders are part of the archive.
                if meta.file_type().is_symlink() || !(meta.is_file() || meta.is_dir()) {
                    continue;
                }
                out.push(Fileinfo {
                    path: PathBuf::from(entry.file_name()),
                    metadata: Meta(meta),
                });
            }
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
        // Only reached by libunftp paths we do not use (RETR goes through get_into, which applies
        // the limiter); still checked and throttled-free reads are not offered.
        self.require(user, Right::Read)?;
        let t = self.resolve(path.as_ref())?;
        let f = blocking(move || {
            check_on_disk(&t.home_real, &t.real).map_err(path_error)?;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&t.real)?;
            Ok(f)
        })
        .await?;
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
        let real = t.real.clone();
        let home_real = t.home_real.clone();
        let open: transfer::DownloadOpener = Box::new(move || {
            check_on_disk(&home_real, &real)
                .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&real)?;
            let meta = f.metadata()?;
            if !meta.is_file() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
            }
            Ok((f, meta.len()))
        });
        let result = transfer::send(output, open, start_pos, bounds).await;
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
        let rec = self.record(user)?;
        let t = self.resolve(path.as_ref())?;
        if t.vpath.is_root() {
            return Err(path_error(PathError::BadCharacter));
        }
        let bounds = self.bounds(user, true, &t.archive_path);
        let shared = Arc::clone(&self.shared);
        let (real, home_real) = (t.real.clone(), t.home_real.clone());
        let (appended_tx, appended_rx) = std::sync::mpsc::sync_channel::<bool>(1);
        let open: transfer::UploadOpener = Box::new(move || {
            check_on_disk(&home_real, &real)
                .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
            let existing = match std::fs::symlink_metadata(&real) {
                Ok(m) => Some(m),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            let extend = plan_upload(&rec, existing.as_ref(), start_pos)?;
            let _ = appended_tx.send(extend && start_pos > 0);
            let f = if extend {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&real)?;
                if existing.as_ref().map(|m| m.len()) != Some(start_pos) {
                    f.set_len(start_pos)?; // overwrite from an earlier offset (overwrite right)
                }
                f
            } else {
                // create_new: a name that appeared meanwhile is never clobbered.
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&real)?
            };
            let before = f.metadata()?;
            let state = if start_pos == 0 {
                Some(<Sha256 as sha2::Digest>::new())
            } else {
                shared.hashes.state(&real, FileVersion::of(&before))
            };
            use std::io::Seek;
            let mut f = f;
            f.seek(io::SeekFrom::Start(start_pos))?;
            Ok((f, state))
        });
        let received = transfer::receive(input, open, bounds).await;
        self.session.end_transfer();
        let appended = appended_rx.try_recv().unwrap_or(false);

        // Whatever reached the disk is described in the hash cache, so a resume continues from it.
        let mut digest = None;
        let mut size = start_pos + received.bytes;
        if let Some(f) = &received.file {
            if let Ok(meta) = f.metadata() {
                size = meta.len();
                match received.hasher {
                    Some(h) => {
                        digest = Some(hex::encode(<Sha256 as sha2::Digest>::finalize(h.clone())));
                        self.shared
                            .hashes
                            .record(&t.real, h, FileVersion::of(&meta));
                    }
                    None => self.shared.hashes.forget(&t.real),
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
        let event = if appended {
            FtpEvent::Appended {
                user: user.name.clone(),
                path: t.archive_path,
                offset: start_pos,
                size,
                sha256: digest,
                temp,
            }
        } else {
            FtpEvent::UploadCompleted {
                user: user.name.clone(),
                path: t.archive_path,
                size,
                sha256: digest,
                temp,
            }
        };
        self.emit(event);
        Ok(received.bytes)
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        self.require(user, Right::Delete)?;
        let t = self.resolve(path.as_ref())?;
        let shared = Arc::clone(&self.shared);
        let real = t.real.clone();
        blocking(move || {
            check_on_disk(&t.home_real, &real).map_err(path_error)?;
            let m = std::fs::symlink_metadata(&real)?;
            if !m.is_file() {
                return Err(Error::new(
                    ErrorKind::PermanentFileNotAvailable,
                    io::Error::other("not a file"),
                ));
            }
            std::fs::remove_file(&real)?;
            shared.hashes.forget(&real);
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
            return Err(Error::new(
                ErrorKind::PermanentFileNotAvailable,
                io::Error::other("exists"),
            ));
        }
        let real = t.real.clone();
        blocking(move || {
            check_on_disk(&t.home_real, &real).map_err(path_error)?;
            std::fs::create_dir(&real)?;
            Ok(())
        })
        .await?;
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
        let may_replace = rec.rights.contains(Right::Overwrite);
        let shared = Arc::clone(&self.shared);
        let (fr, tr, home) = (from.real.clone(), to.real.clone(), from.home_real.clone());
        let meta = blocking(move || {
            check_on_disk(&home, &fr).map_err(path_error)?;
            check_on_disk(&home, &tr).map_err(path_error)?;
            std::fs::symlink_metadata(&fr)?;
            if may_replace {
                std::fs::rename(&fr, &tr)?;
            } else {
                rename_noreplace(&fr, &tr).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        denied("target exists and the account has no overwrite right")
                    } else {
                        Error::from(e)
                    }
                })?;
            }
            let meta = std::fs::symlink_metadata(&tr)?;
            shared.hashes.rename(&fr, &tr, FileVersion::of(&meta));
            Ok(meta)
        })
        .await?;
        let sha256 = if meta.is_file() {
            self.shared.hashes.digest(&to.real, FileVersion::of(&meta))
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
        let real = t.real.clone();
        blocking(move || {
            check_on_disk(&t.home_real, &real).map_err(path_error)?;
            std::fs::remove_dir(&real)?;
            Ok(())
        })
        .await?;
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
            check_on_disk(&t.home_real, &t.real).map_err(path_error)?;
            if std::fs::symlink_metadata(&t.real)?.is_dir() {
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
    /// SHA-256 of a file in the home (for `SITE SHA256`): from the hash cache when the file is the
    /// version last written, otherwise read from disk once and remembered.
    pub(crate) async fn sha256(&self, user: &FtpUser, path: &str) -> Result<String> {
        self.require(user, Right::List)
            .or_else(|_| self.require(user, Right::Read))?;
        let t = self.resolve(Path::new(path))?;
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            check_on_disk(&t.home_real, &t.real).map_err(path_error)?;
            let meta = std::fs::symlink_metadata(&t.real)?;
            if !meta.is_file() {
                return Err(Error::new(
                    ErrorKind::PermanentFileNotAvailable,
                    io::Error::other("not a file"),
                ));
            }
            if let Some(d) = shared.hashes.digest(&t.real, FileVersion::of(&meta)) {
                return Ok(d);
            }
            let (h, before) = hash_file(&t.real)?;
            let after = std::fs::symlink_metadata(&t.real)?;
            let digest = hex::encode(<Sha256 as sha2::Digest>::finalize(h.clone()));
            if FileVersion::of(&before) == FileVersion::of(&after) {
                shared.hashes.record(&t.real, h, FileVersion::of(&after));
            }
            Ok(digest)
        })
        .await
    }
}

/// rename(2) that fails with `AlreadyExists` instead of replacing the target, atomically.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let f = CString::new(from.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let t = CString::new(to.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: two valid NUL-terminated paths; renameat2 does not keep the pointers.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
