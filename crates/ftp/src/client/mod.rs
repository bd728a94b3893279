//! The FTP(S) client: logs in, sets binary mode, reconnects by itself, bounds every call with a
//! timeout, and uploads/downloads with resume and SHA-256. Built on suppaftp.
//!
//! Every operation goes through [`Client::run`]: on an I/O error, a timeout or a 421 it drops the
//! connection, reconnects with exponential, jittered backoff, logs in again, returns to the
//! working directory and retries once (only where a retry cannot do harm).

mod config;
mod error;
mod paths;
mod url;

pub use config::{ClientConfig, TlsMode};
pub use error::ClientError;
pub use paths::{join_remote, split_remote};
pub use url::FtpUrl;
pub use Local as LocalFile;

use crate::server::temp_name_for;
use async_speed_limit::Limiter;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use suppaftp::tokio::{
    AsyncRustlsConnector, AsyncRustlsStream, ImplAsyncFtpStream, TransferStream,
};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

type Stream = ImplAsyncFtpStream<AsyncRustlsStream>;
type Op<'a, T> = Pin<Box<dyn Future<Output = std::result::Result<T, FtpError>> + Send + 'a>>;
pub type Result<T> = std::result::Result<T, ClientError>;

/// Copy buffer size: memory per transfer stays at this, whatever the file size.
const BUF: usize = 256 * 1024;
/// How long a failed upload waits for the server's reason on the control connection.
const REFUSAL_PROBE: Duration = Duration::from_secs(3);

/// Called with the number of bytes transferred so far (of this call).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A remote directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Other,
}

/// Where an upload starts on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// STOR from the first byte (a new file).
    Create,
    /// Continue a partial remote file: REST at its SIZE (0 if missing), send the rest.
    Resume,
    /// APPE the local bytes from `local_offset` on (the remote holds the bytes before it).
    Append { local_offset: u64 },
}

#[derive(Clone)]
pub struct UploadOptions {
    pub mode: UploadMode,
    /// Send only the first `length` bytes of the local file (a snapshot of a growing log).
    pub length: Option<u64>,
    pub progress: Option<Progress>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            mode: UploadMode::Create,
            length: None,
            progress: None,
        }
    }
}

#[derive(Clone, Default)]
pub struct DownloadOptions {
    /// Continue into an existing local file from its length.
    pub resume: bool,
    pub progress: Option<Progress>,
}

/// What a transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOutcome {
    /// Bytes that crossed the network in this call (resumed parts not counted twice).
    pub bytes: u64,
    /// SHA-256 (hex) of the whole file as it now stands on the receiving side.
    pub sha256: String,
    /// Size of the whole file on the receiving side.
    pub size: u64,
}

/// What [`Client::upload_verified`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUpload {
    pub bytes: u64,
    pub sha256: String,
    pub size: u64,
    /// The final name already held exactly these bytes; nothing was sent.
    pub already_present: bool,
}

/// The SHA-256 state of a local file's first [`HashState::size`] bytes. Kept between transfers, it
/// lets the next append to a large, growing file hash only the new bytes instead of reading the
/// whole file again ([`Client::upload_hashed`]).
#[derive(Clone)]
pub struct HashState {
    len: u64,
    hasher: Sha256,
}

impl HashState {
    /// How many bytes from the start of the file the state covers.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// The SHA-256 (hex) of those bytes.
    pub fn sha256(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

impl std::fmt::Debug for HashState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashState").field("len", &self.len).finish()
    }
}

/// The local side of an upload: a path, or a file the caller already holds open. A log that is
/// renamed or removed while it is sent still reads the same bytes through an open file.
#[derive(Debug, Clone, Copy)]
pub enum Local<'a> {
    Path(&'a Path),
    Open {
        file: &'a std::fs::File,
        /// Where the file was last seen (for messages only).
        name: &'a Path,
    },
}

impl<'a> From<&'a Path> for Local<'a> {
    fn from(p: &'a Path) -> Self {
        Local::Path(p)
    }
}

impl<'a> From<&'a std::path::PathBuf> for Local<'a> {
    fn from(p: &'a std::path::PathBuf) -> Self {
        Local::Path(p)
    }
}

impl Local<'_> {
    fn name(&self) -> &Path {
        match self {
            Local::Path(p) => p,
            Local::Open { name, .. } => name,
        }
    }

    /// A handle of its own (reads through it do not move anybody else's file position).
    async fn open(&self) -> Result<tokio::fs::File> {
        match self {
            Local::Path(p) => tokio::fs::File::open(p)
                .await
                .map_err(|e| ClientError::io(format!("opening {}", p.display()), e)),
            Local::Open { file, name } => {
                let dup = file
                    .try_clone()
                    .map_err(|e| ClientError::io(format!("opening {}", name.display()), e))?;
                Ok(tokio::fs::File::from_std(dup))
            }
        }
    }

    async fn len(&self) -> Result<u64> {
        let m = match self {
            Local::Path(p) => tokio::fs::metadata(p).await,
            Local::Open { file, .. } => file.metadata(),
        };
        m.map(|m| m.len())
            .map_err(|e| ClientError::io(format!("reading {}", self.name().display()), e))
    }
}

/// A connection to one server and account.
pub struct Client {
    cfg: ClientConfig,
    conn: Option<Stream>,
    cwd: String,
    tls: Option<tokio_rustls::TlsConnector>,
    limiter: Option<Limiter>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cfg", &self.cfg)
            .field("cwd", &self.cwd)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects and logs in. Refused credentials fail at once; an unreachable server is retried
    /// with backoff up to `reconnect_attempts` times.
    pub async fn connect(cfg: ClientConfig) -> Result<Client> {
        let tls = match &cfg.tls {
            TlsMode::None => None,
            TlsMode::Explicit {
                ca_file,
                insecure_skip_verify,
            } => Some(paths::tls_connector(
                ca_file.as_deref(),
                *insecure_skip_verify,
            )?),
        };
        let limiter = (cfg.speed_limit > 0).then(|| Limiter::new(cfg.speed_limit as f64));
        let mut c = Client {
            cfg,
            conn: None,
            cwd: "/".to_string(),
            tls,
            limiter,
        };
        c.reconnect().await?;
        c.cwd = c.pwd().await?;
        Ok(c)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// One attempt to connect, secure, log in and switch to binary.
    async fn open(&self) -> Result<Stream> {
        let server = self.cfg.server();
        let addr = tokio::time::timeout(self.cfg.connect_timeout, tokio::net::lookup_host(&server))
            .await
            .map_err(|_| ClientError::Timeout(format!("resolving {server}")))?
            .map_err(|e| ClientError::io(format!("resolving {server}"), e))?
            .next()
            .ok_or_else(|| ClientError::Invalid(format!("{server} has no address")))?;
        let t = self.cfg.io_timeout;
        let mut s = Stream::connect_timeout(addr, self.cfg.connect_timeout)
            .await
            .map_err(|e| ClientError::from_ftp(e, &format!("connecting to {server}")))?;
        if let Some(tls) = &self.tls {
            let domain = self.cfg.host.clone();
            s = bounded(
                t,
                "AUTH TLS",
                s.into_secure(AsyncRustlsConnector::from(tls.clone()), &domain),
            )
            .await?;
        }
        s.set_mode(if self.cfg.extended_passive {
            Mode::ExtendedPassive
        } else {
            Mode::Passive
        });
        match tokio::time::timeout(t, s.login(&self.cfg.user, &self.cfg.password)).await {
            Err(_) => return Err(ClientError::Timeout(format!("login at {server}"))),
            Ok(Err(FtpError::UnexpectedResponse(r)))
                if r.status.code() == 530 || r.status.code() == 430 =>
            {
                return Err(ClientError::Auth {
                    user: self.cfg.user.clone(),
                    server,
                });
            }
            Ok(Err(e)) => return Err(ClientError::from_ftp(e, &format!("login at {server}"))),
            Ok(Ok(())) => {}
        }
        // suppaftp starts in ASCII mode, which would turn LF into CRLF: binary, always.
        bounded(t, "TYPE I", s.transfer_type(FileType::Binary)).await?;
        Ok(s)
    }

    /// Reconnects with exponential, jittered backoff, then returns to the working directory.
    async fn reconnect(&mut self) -> Result<()> {
        self.conn = None;
        let mut delay = self.cfg.reconnect_base;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.open().await {
                Ok(mut s) => {
                    if self.cwd != "/" {
                        let cwd = self.cwd.clone();
                        bounded(self.cfg.io_timeout, "CWD", s.cwd(&cwd)).await?;
                    }
                    self.conn = Some(s);
                    return Ok(());
                }
                Err(e) if e.is_transient() && attempt < self.cfg.reconnect_attempts.max(1) => {
                    let jitter = delay.mul_f64(rand::random::<f64>() * 0.5);
                    tracing::debug!(
                        "reconnecting to {} in {:?}: {e}",
                        self.cfg.server(),
                        delay + jitter
                    );
                    tokio::time::sleep(delay + jitter).await;
                    delay = (delay * 2).min(self.cfg.reconnect_max);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs one command, reconnecting and retrying once (if `retry`) after a transient failure.
    async fn run<T, F>(&mut self, what: &str, retry: bool, mut op: F) -> Result<T>
    where
        F: for<'a> FnMut(&'a mut Stream) -> Op<'a, T>,
    {
        let mut retried = false;
        loop {
            if self.conn.is_none() {
                self.reconnect().await?;
            }
            let Some(s) = self.conn.as_mut() else {
                continue;
            };
            let err = match tokio::time::timeout(self.cfg.io_timeout, op(s)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => ClientError::from_ftp(e, what),
                Err(_) => ClientError::Timeout(what.to_string()),
            };
            if err.is_transient() {
                self.conn = None;
                if retry && !retried {
                    retried = true;
                    continue;
                }
            }
            return Err(err);
        }
    }

    /// The connection, reconnecting first if it was dropped.
    async fn connected(&mut self) -> Result<&mut Stream> {
        if self.conn.is_none() {
            self.reconnect().await?;
        }
        self.conn
            .as_mut()
            .ok_or_else(|| ClientError::Invalid("not connected".into()))
    }

    /// Runs `op` with the absolute form of `path` (through [`Client::run`]); `verb` names the
    /// command in errors.
    async fn on_path<T, F>(&mut self, verb: &str, path: &str, retry: bool, op: F) -> Result<T>
    where
        F: for<'a> Fn(&'a mut Stream, String) -> Op<'a, T>,
    {
        let p = self.absolute(path);
        self.run(&format!("{verb} {p}"), retry, |s| op(s, p.clone()))
            .await
    }

    /// Absolute form of a remote path, from the working directory.
    pub fn absolute(&self, path: &str) -> String {
        paths::absolute(&self.cwd, path)
    }

    pub async fn pwd(&mut self) -> Result<String> {
        self.run("PWD", true, |s| Box::pin(s.pwd())).await
    }

    pub async fn cwd(&mut self, path: &str) -> Result<()> {
        let p = self.absolute(path);
        self.on_path("CWD", &p, true, |s, q| {
            Box::pin(async move { s.cwd(&q).await })
        })
        .await?;
        self.cwd = p;
        Ok(())
    }

    /// Makes sure `/a/b/c` exists (creating the missing parts) and switches to it.
    pub async fn ensure_dir(&mut self, path: &str) -> Result<()> {
        let target = self.absolute(path);
        if self.cwd == target {
            return Ok(());
        }
        if self.cwd(&target).await.is_ok() {
            return Ok(());
        }
        let mut so_far = String::new();
        for part in target.split('/').filter(|p| !p.is_empty()) {
            so_far = format!("{so_far}/{part}");
            if self.is_dir(&so_far).await? {
                continue;
            }
            let made = self
                .on_path("MKD", &so_far, true, |s, q| {
                    Box::pin(async move { s.mkdir(&q).await })
                })
                .await;
            // Someone else may have made it meanwhile (or our retried MKD did): check again.
            if let Err(e) = made {
                if !self.is_dir(&so_far).await? {
                    return Err(e);
                }
            }
        }
        self.cwd(&target).await
    }

    async fn is_dir(&mut self, path: &str) -> Result<bool> {
        Ok(matches!(
            self.stat(path).await?,
            Some(Entry {
                kind: EntryKind::Dir,
                ..
            })
        ))
    }

    /// MLST of one path; `None` if it does not exist.
    pub async fn stat(&mut self, path: &str) -> Result<Option<Entry>> {
        let p = self.absolute(path);
        let r = self
            .on_path("MLST", &p, true, |s, q| {
                Box::pin(async move { s.mlst(Some(&q)).await })
            })
            .await;
        match r {
            Ok(line) => Ok(paths::parse_entry(line.trim()).map(|mut e| {
                e.name = split_remote(&p).1.to_string();
                e
            })),
            Err(ClientError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn exists(&mut self, path: &str) -> Result<bool> {
        Ok(self.stat(path).await?.is_some())
    }

    pub async fn size(&mut self, path: &str) -> Result<u64> {
        self.on_path("SIZE", path, true, |s, q| {
            Box::pin(async move { s.size(&q).await })
        })
        .await
        .map(|n| n as u64)
    }

    pub async fn mtime(&mut self, path: &str) -> Result<SystemTime> {
        let t = self
            .on_path("MDTM", path, true, |s, q| {
                Box::pin(async move { s.mdtm(&q).await })
            })
            .await?;
        let secs = t.and_utc().timestamp();
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
    }

    /// Lists a folder: MLSD, or LIST where the server has no MLSD.
    pub async fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        let lines = self
            .on_path("MLSD", path, true, |s, q| {
                Box::pin(async move { s.mlsd(Some(&q)).await })
            })
            .await;
        let (lines, mlsd) = match lines {
            Ok(l) => (l, true),
            Err(ClientError::Protocol {
                code: 500..=502, ..
            }) => {
                let l = self
                    .on_path("LIST", path, true, |s, q| {
                        Box::pin(async move { s.list(Some(&q)).await })
                    })
                    .await?;
                (l, false)
            }
            Err(e) => return Err(e),
        };
        let mut out: Vec<Entry> = lines
            .iter()
            .filter_map(|l| {
                if mlsd {
                    paths::parse_entry(l)
                } else {
                    paths::parse_list_line(l)
                }
            })
            .filter(|e| e.name != "." && e.name != "..")
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn mkdir(&mut self, path: &str) -> Result<()> {
        self.on_path("MKD", path, false, |s, q| {
            Box::pin(async move { s.mkdir(&q).await })
        })
        .await
    }

    pub async fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (self.absolute(from), self.absolute(to));
        let (f2, t2) = (f.clone(), t.clone());
        self.run(&format!("rename {f} to {t}"), false, move |s| {
            let (f, t) = (f2.clone(), t2.clone());
            Box::pin(async move { s.rename(&f, &t).await })
        })
        .await
    }

    pub async fn delete(&mut self, path: &str) -> Result<()> {
        self.on_path("DELE", path, false, |s, q| {
            Box::pin(async move { s.rm(&q).await })
        })
        .await
    }

    pub async fn rmdir(&mut self, path: &str) -> Result<()> {
        self.on_path("RMD", path, false, |s, q| {
            Box::pin(async move { s.rmdir(&q).await })
        })
        .await
    }

    /// The server's SHA-256 of a file (logarchive's `SITE SHA256`).
    pub async fn remote_sha256(&mut self, path: &str) -> Result<String> {
        let p = self.absolute(path);
        let cmd = format!("SITE SHA256 {p}");
        let what = cmd.clone();
        let r = self
            .run(&what, true, move |s| {
                let cmd = cmd.clone();
                Box::pin(async move { s.custom_command(cmd, &[Status::File]).await })
            })
            .await?;
        let text = String::from_utf8_lossy(&r.body);
        text.split_whitespace()
            .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|w| w.to_ascii_lowercase())
            .ok_or_else(|| ClientError::Protocol {
                code: 213,
                text: format!("no SHA-256 in {text:?}"),
            })
    }

    /// Tells the server that `remote` was also known as `name` where it came from (logarchive's
    /// `SITE ALIAS`). Servers without it answer 500-502: [`ClientError::Protocol`].
    pub async fn alias(&mut self, remote: &str, name: &str) -> Result<()> {
        let p = self.absolute(remote);
        let cmd = format!(
            "SITE ALIAS {} {}",
            crate::site::encode(&p),
            crate::site::encode(name)
        );
        let what = format!("SITE ALIAS {p}");
        self.run(&what, true, move |s| {
            let cmd = cmd.clone();
            Box::pin(async move { s.custom_command(cmd, &[Status::CommandOk]).await })
        })
        .await?;
        Ok(())
    }

    /// Uploads `local` to `remote`, resuming after failures. See [`UploadOptions`].
    pub async fn upload<'a>(
        &mut self,
        local: impl Into<Local<'a>>,
        remote: &str,
        opts: UploadOptions,
    ) -> Result<TransferOutcome> {
        Ok(self.upload_hashed(local, remote, opts, None).await?.0)
    }

    /// [`Client::upload`] that takes the hash of the local bytes before the upload's start from
    /// `prefix` (kept from an earlier transfer of this file) when it covers exactly those bytes,
    /// instead of reading them again, and returns the state after the whole file for the next
    /// append. The caller vouches that those bytes did not change since.
    pub async fn upload_hashed<'a>(
        &mut self,
        local: impl Into<Local<'a>>,
        remote: &str,
        opts: UploadOptions,
        prefix: Option<HashState>,
    ) -> Result<(TransferOutcome, HashState)> {
        let remote = self.absolute(remote);
        let mut file = local.into().open().await?;
        let local_len = file
            .metadata()
            .await
            .map_err(|e| ClientError::io("reading local size", e))?
            .len();
        let end = opts.length.unwrap_or(local_len).min(local_len);
        // Where the remote file starts being written by this call, and how.
        let (mut remote_at, append) = match opts.mode {
            UploadMode::Create => (0, false),
            UploadMode::Resume => (self.remote_size_or_zero(&remote).await?, false),
            UploadMode::Append { local_offset } => (local_offset, true),
        };
        if remote_at > end {
            return Err(ClientError::Invalid(format!(
                "{remote} already holds {remote_at} bytes, more than the {end} bytes to send"
            )));
        }
        // The hash covers the whole resulting file: hash the part that is already there (or take
        // it from the caller).
        let mut hasher = match prefix {
            Some(p) if p.len == remote_at => p.hasher,
            _ => {
                let mut h = Sha256::new();
                hash_prefix(&mut file, remote_at, &mut h).await?;
                h
            }
        };
        let mut sent = 0u64;
        let mut failures = 0;
        loop {
            match self
                .send_from(
                    &mut file,
                    &remote,
                    remote_at,
                    end,
                    append,
                    &mut hasher,
                    &mut sent,
                    &opts,
                )
                .await
            {
                Ok(()) => break,
                Err(e) if e.is_transient() && failures < self.cfg.reconnect_attempts => {
                    failures += 1;
                    tracing::debug!("upload of {remote} interrupted ({e}); resuming");
                    self.conn = None;
                    self.reconnect().await?;
                    // The server holds what it holds: continue from there (append or REST).
                    remote_at = self.remote_size_or_zero(&remote).await?;
                    if remote_at > end {
                        return Err(ClientError::Invalid(format!(
                            "{remote} grew beyond the local file during upload"
                        )));
                    }
                    hasher = Sha256::new();
                    hash_prefix(&mut file, remote_at, &mut hasher).await?;
                }
                Err(e) => return Err(e),
            }
        }
        let state = HashState {
            len: end,
            hasher: hasher.clone(),
        };
        let outcome = TransferOutcome {
            bytes: sent,
            sha256: hex::encode(hasher.finalize()),
            size: end,
        };
        Ok((outcome, state))
    }

    async fn remote_size_or_zero(&mut self, remote: &str) -> Result<u64> {
        match self.size(remote).await {
            Ok(n) => Ok(n),
            Err(ClientError::NotFound(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// One data connection: sends local bytes `[from, end)` to `remote` (REST+STOR, or APPE).
    #[allow(clippy::too_many_arguments)]
    async fn send_from(
        &mut self,
        file: &mut tokio::fs::File,
        remote: &str,
        from: u64,
        end: u64,
        append: bool,
        hasher: &mut Sha256,
        sent: &mut u64,
        opts: &UploadOptions,
    ) -> Result<()> {
        let t = self.cfg.io_timeout;
        file.seek(std::io::SeekFrom::Start(from))
            .await
            .map_err(|e| ClientError::io("seeking the local file", e))?;
        let s = self.connected().await?;
        let mut stream = if append {
            bounded(t, &format!("APPE {remote}"), s.append_with_stream(remote)).await?
        } else {
            if from > 0 {
                bounded(t, "REST", s.resume_transfer(from as usize)).await?;
            }
            bounded(t, &format!("STOR {remote}"), s.put_with_stream(remote)).await?
        };
        let mut buf = vec![0u8; BUF];
        let mut pos = from;
        while pos < end {
            let want = ((end - pos) as usize).min(BUF);
            let n = file
                .read(&mut buf[..want])
                .await
                .map_err(|e| ClientError::io("reading the local file", e))?;
            if n == 0 {
                return Err(ClientError::Invalid(
                    "the local file shrank during upload".into(),
                ));
            }
            if let Some(l) = &self.limiter {
                l.consume(n).await;
            }
            match tokio::time::timeout(t, stream.write_all(&buf[..n])).await {
                Err(_) => return Err(ClientError::Timeout(format!("sending {remote}"))),
                Ok(Err(e)) => {
                    let e = ClientError::io(format!("sending {remote}"), e);
                    return Err(self.upload_failure(stream, remote, e).await);
                }
                Ok(Ok(())) => {}
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
            *sent += n as u64;
            if let Some(p) = &opts.progress {
                p(*sent);
            }
        }
        // A data connection the peer already closed (reset by a middlebox, or never handed to
        // the server) still took our bytes into the local send buffer. The server will never
        // answer for it: fail now instead of waiting out the reply timeout. A healthy server
        // sends nothing and keeps the connection open until it has read our end of data.
        let mut probe = [0u8; 1];
        if let Some(r) = futures_util::FutureExt::now_or_never(stream.read(&mut probe)) {
            if matches!(r, Ok(0) | Err(_)) {
                let e = ClientError::io(
                    format!("sending {remote}"),
                    std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the data connection was closed before the upload ended",
                    ),
                );
                return Err(self.upload_failure(stream, remote, e).await);
            }
        }
        // Shut the data connection down ourselves first: `finish` reads the server's reply but
        // reports a failed shutdown instead of it, and a refusal must be told from a network
        // failure (see `upload_failure`).
        match tokio::time::timeout(t, stream.shutdown()).await {
            Err(_) => Err(ClientError::Timeout(format!("completing {remote}"))),
            Ok(Err(e)) => {
                let e = ClientError::io(format!("completing {remote}"), e);
                Err(self.upload_failure(stream, remote, e).await)
            }
            Ok(Ok(())) => bounded(t, &format!("completing {remote}"), stream.finish()).await,
        }
    }

    /// What a data connection failing mid-upload means. Some servers (libunftp, so ours among
    /// them) check rights only once the data connection is open, and close it unread on a
    /// refusal: the client then sees a reset while the reason waits on the control connection.
    /// A refusal is final and must never be retried as a network failure: resuming "from the
    /// server's size" would then append to somebody else's file.
    async fn upload_failure(
        &mut self,
        stream: TransferStream<AsyncRustlsStream>,
        remote: &str,
        failure: ClientError,
    ) -> ClientError {
        // Read while the stream is alive: once dropped, the client would swallow that reply.
        let reply = match self.conn.as_mut() {
            Some(s) => {
                let expect = [Status::ClosingDataConnection, Status::RequestedFileActionOk];
                tokio::time::timeout(REFUSAL_PROBE, s.read_response_in(&expect))
                    .await
                    .ok()
            }
            None => None,
        };
        drop(stream);
        // Whatever was read, the control connection is out of step now: start afresh.
        self.conn = None;
        match reply {
            Some(Err(e)) => {
                let refusal = ClientError::from_ftp(e, &format!("STOR {remote}"));
                if refusal.is_transient() {
                    failure
                } else {
                    refusal
                }
            }
            _ => failure,
        }
    }

    /// Downloads `remote` to `local`, resuming after failures (and from an existing local file
    /// with `resume`).
    pub async fn download(
        &mut self,
        remote: &str,
        local: &Path,
        opts: DownloadOptions,
    ) -> Result<TransferOutcome> {
        let remote = self.absolute(remote);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(!opts.resume)
            .read(true)
            .write(true)
            .open(local)
            .await
            .map_err(|e| ClientError::io(format!("opening {}", local.display()), e))?;
        let mut hasher = Sha256::new();
        let mut have = file
            .metadata()
            .await
            .map_err(|e| ClientError::io("reading local size", e))?
            .len();
        hash_prefix(&mut file, have, &mut hasher).await?;
        let mut got = 0u64;
        let mut failures = 0;
        loop {
            match self
                .receive_from(&mut file, &remote, have, &mut hasher, &mut got, &opts)
                .await
            {
                Ok(()) => break,
                Err(e) if e.is_transient() && failures < self.cfg.reconnect_attempts => {
                    failures += 1;
                    tracing::debug!("download of {remote} interrupted ({e}); resuming");
                    self.conn = None;
                    self.reconnect().await?;
                    file.flush()
                        .await
                        .map_err(|e| ClientError::io("writing the local file", e))?;
                    have = file
                        .metadata()
                        .await
                        .map_err(|e| ClientError::io("reading local size", e))?
                        .len();
                    hasher = Sha256::new();
                    hash_prefix(&mut file, have, &mut hasher).await?;
                }
                Err(e) => return Err(e),
            }
        }
        file.flush()
            .await
            .map_err(|e| ClientError::io("writing the local file", e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| ClientError::io("reading local size", e))?
            .len();
        Ok(TransferOutcome {
            bytes: got,
            sha256: hex::encode(hasher.finalize()),
            size,
        })
    }

    async fn receive_from(
        &mut self,
        file: &mut tokio::fs::File,
        remote: &str,
        from: u64,
        hasher: &mut Sha256,
        got: &mut u64,
        opts: &DownloadOptions,
    ) -> Result<()> {
        let t = self.cfg.io_timeout;
        file.seek(std::io::SeekFrom::Start(from))
            .await
            .map_err(|e| ClientError::io("seeking the local file", e))?;
        let s = self.connected().await?;
        file.set_len(from)
            .await
            .map_err(|e| ClientError::io("truncating the local file", e))?;
        if from > 0 {
            bounded(t, "REST", s.resume_transfer(from as usize)).await?;
        }
        let mut stream = bounded(t, &format!("RETR {remote}"), s.retr_as_stream(remote)).await?;
        let mut buf = vec![0u8; BUF];
        loop {
            let n = tokio::time::timeout(t, stream.read(&mut buf))
                .await
                .map_err(|_| ClientError::Timeout(format!("receiving {remote}")))?
                .map_err(|e| ClientError::io(format!("receiving {remote}"), e))?;
            if n == 0 {
                break;
            }
            if let Some(l) = &self.limiter {
                l.consume(n).await;
            }
            file.write_all(&buf[..n])
                .await
                .map_err(|e| ClientError::io("writing the local file", e))?;
            hasher.update(&buf[..n]);
            *got += n as u64;
            if let Some(p) = &opts.progress {
                p(*got);
            }
        }
        // The server may send 150 and fail afterwards: only its 226 means the file is complete.
        bounded(t, &format!("completing {remote}"), stream.finish()).await
    }

    /// The agent's upload protocol: upload to a temporary name beside `remote` (resuming what an
    /// earlier attempt left there), compare the server's SHA-256 with ours, and only then rename
    /// to the final name. A final name that already holds the same bytes counts as done.
    pub async fn upload_verified<'a>(
        &mut self,
        local: impl Into<Local<'a>>,
        remote: &str,
        length: Option<u64>,
    ) -> Result<VerifiedUpload> {
        self.upload_verified_with(local, remote, length, None).await
    }

    pub async fn upload_verified_with<'a>(
        &mut self,
        local: impl Into<Local<'a>>,
        remote: &str,
        length: Option<u64>,
        progress: Option<Progress>,
    ) -> Result<VerifiedUpload> {
        Ok(self
            .verified_upload(local.into(), remote, length, progress)
            .await?
            .0)
    }

    /// [`Client::upload_verified`] that also returns the hash state of what it sent (`None` when
    /// the final name already held the bytes), for a later [`Client::upload_hashed`] append.
    pub async fn upload_verified_hashed<'a>(
        &mut self,
        local: impl Into<Local<'a>>,
        remote: &str,
        length: Option<u64>,
    ) -> Result<(VerifiedUpload, Option<HashState>)> {
        self.verified_upload(local.into(), remote, length, None)
            .await
    }

    async fn verified_upload(
        &mut self,
        local: Local<'_>,
        remote: &str,
        length: Option<u64>,
        progress: Option<Progress>,
    ) -> Result<(VerifiedUpload, Option<HashState>)> {
        let remote = self.absolute(remote);
        let (dir, name) = split_remote(&remote);
        if name.is_empty() {
            return Err(ClientError::Invalid(format!("{remote} has no file name")));
        }
        let temp = join_remote(dir, &temp_name_for(name));
        // Never replace a final name, whatever the account may do: same bytes = done.
        if let Some(done) = self.already_there(local, &remote, length).await? {
            return Ok((done, None));
        }
        // Most uploads are fresh: STOR straight away (a round trip less than asking for the
        // temporary file's size first). If an earlier attempt left a temporary file, that STOR is
        // refused (an agent may not overwrite) and we resume it instead.
        let fresh = UploadOptions {
            mode: UploadMode::Create,
            length,
            progress: progress.clone(),
        };
        let (out, state) = match self.upload_hashed(local, &temp, fresh, None).await {
            Ok(done) => done,
            Err(ClientError::Permission(_)) => {
                let resume = UploadOptions {
                    mode: UploadMode::Resume,
                    length,
                    progress,
                };
                self.upload_hashed(local, &temp, resume, None).await?
            }
            Err(e) => return Err(e),
        };
        let server = self.remote_sha256(&temp).await?;
        if server != out.sha256 {
            return Err(ClientError::HashMismatch {
                remote: temp,
                local: out.sha256,
                server,
            });
        }
        if let Err(e) = self.rename(&temp, &remote).await {
            // A retried RNTO after a lost reply, or a concurrent upload: the final may be ours.
            if let Some(done) = self.already_there(local, &remote, length).await? {
                let done = VerifiedUpload {
                    bytes: out.bytes,
                    ..done
                };
                return Ok((done, Some(state)));
            }
            return Err(e);
        }
        let done = VerifiedUpload {
            bytes: out.bytes,
            sha256: out.sha256,
            size: out.size,
            already_present: false,
        };
        Ok((done, Some(state)))
    }

    /// `Some` if `remote` exists with exactly the local bytes (the first `length` of them).
    async fn already_there(
        &mut self,
        local: Local<'_>,
        remote: &str,
        length: Option<u64>,
    ) -> Result<Option<VerifiedUpload>> {
        let Some(entry) = self.stat(remote).await? else {
            return Ok(None);
        };
        if entry.kind != EntryKind::File {
            return Err(ClientError::Invalid(format!(
                "{remote} exists and is not a file"
            )));
        }
        let other = || ClientError::Exists {
            remote: remote.to_string(),
            size: entry.size,
        };
        // Sizes first: a final of another size is told without reading the local file at all.
        let local_len = local.len().await?;
        if entry.size != length.unwrap_or(local_len).min(local_len) {
            return Err(other());
        }
        let (sha, size) = local_sha256(local, Some(entry.size)).await?;
        if self.remote_sha256(remote).await? != sha {
            return Err(other());
        }
        Ok(Some(VerifiedUpload {
            bytes: 0,
            sha256: sha,
            size,
            already_present: true,
        }))
    }

    /// Says goodbye (best effort) and closes the connection.
    pub async fn quit(mut self) -> Result<()> {
        if let Some(mut s) = self.conn.take() {
            bounded(self.cfg.io_timeout, "QUIT", s.quit()).await?;
        }
        Ok(())
    }
}

async fn bounded<T>(
    t: Duration,
    what: &str,
    fut: impl Future<Output = std::result::Result<T, FtpError>>,
) -> Result<T> {
    match tokio::time::timeout(t, fut).await {
        Ok(r) => r.map_err(|e| ClientError::from_ftp(e, what)),
        Err(_) => Err(ClientError::Timeout(what.to_string())),
    }
}

async fn hash_prefix(file: &mut tokio::fs::File, len: u64, hasher: &mut Sha256) -> Result<()> {
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(|e| ClientError::io("seeking the local file", e))?;
    let mut left = len;
    let mut buf = vec![0u8; BUF];
    while left > 0 {
        let want = (left as usize).min(BUF);
        let n = file
            .read(&mut buf[..want])
            .await
            .map_err(|e| ClientError::io("reading the local file", e))?;
        if n == 0 {
            return Err(ClientError::Invalid(
                "the local file is shorter than the remote part".into(),
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// SHA-256 and length of the first `length` bytes (or all) of a local file.
pub async fn local_sha256<'a>(
    local: impl Into<Local<'a>>,
    length: Option<u64>,
) -> Result<(String, u64)> {
    let state = local_hash_state(local, length).await?;
    Ok((state.sha256(), state.size()))
}

/// The hash state of the first `length` bytes (or all) of a local file.
pub async fn local_hash_state<'a>(
    local: impl Into<Local<'a>>,
    length: Option<u64>,
) -> Result<HashState> {
    let mut f = local.into().open().await?;
    let len = f
        .metadata()
        .await
        .map_err(|e| ClientError::io("reading local size", e))?
        .len();
    let n = length.unwrap_or(len).min(len);
    let mut hasher = Sha256::new();
    hash_prefix(&mut f, n, &mut hasher).await?;
    Ok(HashState { len: n, hasher })
}
