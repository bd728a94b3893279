//! Uploads and downloads: resume after a cut, a speed limit, SHA-256 of the whole resulting
//! file computed on the way (continuing from a kept state for appends).

use super::*;

impl Client {
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
        let file = local.into().open()?;
        let local_len = file
            .metadata()
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
                hash_prefix(&file, remote_at, &mut h)?;
                h
            }
        };
        let mut sent = 0u64;
        let mut failures = 0;
        loop {
            match self
                .send_from(
                    &file,
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
                    hash_prefix(&file, remote_at, &mut hasher)?;
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

    pub(super) async fn remote_size_or_zero(&mut self, remote: &str) -> Result<u64> {
        match self.size(remote).await {
            Ok(n) => Ok(n),
            Err(ClientError::NotFound(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// One data connection: sends local bytes `[from, end)` to `remote` (REST+STOR, or APPE).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_from(
        &mut self,
        file: &std::fs::File,
        remote: &str,
        from: u64,
        end: u64,
        append: bool,
        hasher: &mut Sha256,
        sent: &mut u64,
        opts: &UploadOptions,
    ) -> Result<()> {
        let t = self.cfg.io_timeout;
        let s = self.connected().await?;
        let mut stream = if append {
            bounded(t, &format!("APPE {remote}"), s.append_with_stream(remote)).await?
        } else {
            if from > 0 {
                bounded(t, "REST", s.resume_transfer(from as usize)).await?;
            }
            bounded(t, &format!("STOR {remote}"), s.put_with_stream(remote)).await?
        };
        // Sized to what is sent: a fresh 256 KiB buffer per small file is an mmap, page faults
        // and an munmap each time.
        let mut buf = vec![0u8; ((end - from) as usize).clamp(1, BUF)];
        let mut pos = from;
        while pos < end {
            let want = ((end - pos) as usize).min(buf.len());
            let n = read_at(file, &mut buf[..want], pos)
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

    /// What a data connection failing mid-upload means. Some servers (libunftp-based ones, and
    /// ours before its own engine) check rights only once the data connection is open, and close
    /// it unread on a refusal: the client then sees a reset while the reason waits on the control
    /// connection.
    /// A refusal is final and must never be retried as a network failure: resuming "from the
    /// server's size" would then append to somebody else's file.
    pub(super) async fn upload_failure(
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
        hash_prefix(&reader(local)?, have, &mut hasher)?;
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
                    hash_prefix(&reader(local)?, have, &mut hasher)?;
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

    pub(super) async fn receive_from(
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
}

/// A second handle on a download's local file, to hash what it holds.
fn reader(local: &Path) -> Result<std::fs::File> {
    std::fs::File::open(local)
        .map_err(|e| ClientError::io(format!("opening {}", local.display()), e))
}

/// One positional read, retried on EINTR.
fn read_at(file: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    loop {
        match file.read_at(buf, at) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Hashes the first `len` bytes of `file` into `hasher` (on the caller's thread; see
/// [`Local::open`]).
pub(super) fn hash_prefix(file: &std::fs::File, len: u64, hasher: &mut Sha256) -> Result<()> {
    let mut left = len;
    let mut buf = vec![0u8; (len as usize).clamp(1, BUF)];
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = read_at(file, &mut buf[..want], len - left)
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
    let f = local.into().open()?;
    let len = f
        .metadata()
        .map_err(|e| ClientError::io("reading local size", e))?
        .len();
    let n = length.unwrap_or(len).min(len);
    let mut hasher = Sha256::new();
    hash_prefix(&f, n, &mut hasher)?;
    Ok(HashState { len: n, hasher })
}
