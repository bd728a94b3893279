//! The commands that move bytes over a data connection: STOR, APPE, RETR, LIST, NLST, MLSD.
//! Every check — the path, the rights, whether the file exists, opening it — happens before the
//! `150` that announces the data connection: a refused upload never reads a byte of its data
//! connection, and a client always gets its 550/553/452 as the first reply. While bytes move,
//! the control connection is watched: ABOR ends the transfer (426, then 226), other commands
//! wait for it. An upload's bytes are hashed on the way in; the store keeps the state, so the
//! SHA-256 of a file is known without reading it again.

use super::command::Command;
use super::control::{refuse, Control, Flow};
use super::data::DataStream;
use super::events::FtpEvent;
use super::files::{store_error, store_failed};
use super::listing::{kind_fact, list_line, mlst_facts};
use super::pipeline::{self, Bounds};
use super::reply::{clean, Reply};
use super::store::WriteMode;
use super::vpath::VirtualPath;
use crate::names::{is_temp_name, SCRATCH_DIR};
use crate::rights::Right;
use std::io;
use std::time::{Duration, Instant, SystemTime};

/// How long the client has to open the data connection after a transfer command.
const DATA_ACCEPT: Duration = Duration::from_secs(30);
/// How long a command waits for another session's upload of the same file to end.
pub(crate) const BUSY_WAIT: Duration = Duration::from_secs(30);

/// What a download came to.
enum Done {
    Ok(u64),
    Aborted,
    Failed(io::Error),
}

/// A transfer's result, and what happened on the control connection meanwhile.
struct Watched<T> {
    out: T,
    /// The client sent ABOR.
    aborted: bool,
    /// The control connection closed (or broke) during the transfer.
    control_gone: bool,
}

impl Control {
    /// The bounds of a transfer of this session, and the switch that aborts it (ABOR).
    fn bounds(&self, upload: bool, path: &str) -> (Bounds, tokio::sync::watch::Sender<bool>) {
        let name = self.user_name();
        let l = self
            .shared
            .throttles
            .for_user(&*self.shared.accounts, &name);
        let (abort, aborted) = tokio::sync::watch::channel(false);
        let b = Bounds {
            limiter: Some(if upload { l.upload } else { l.download }),
            stall: self.shared.config.stall_timeout,
            cancel: self.session.cancel.subscribe(),
            abort: aborted,
            progress: self.session.begin_transfer(path.to_string(), upload),
        };
        (b, abort)
    }

    /// Checks before any transfer: a passive listener, and TLS where it is required.
    fn ready_for_data(&self, a: &crate::server::accounts::Account) -> Result<(), Reply> {
        if self.data_needs_tls(a) {
            return Err(refuse(
                521,
                "Permission denied: data connections must be encrypted (PROT P)",
            ));
        }
        if self.st.passive.is_none() {
            return Err(refuse(425, "Use PASV or EPSV first"));
        }
        Ok(())
    }

    /// Sends `150`, then waits for the data connection (from the client's address) and opens
    /// it. On failure the reply is sent and `None` returned.
    async fn open_data(&mut self, what: &str) -> Result<DataStream, Flow> {
        if self
            .reply(Reply::new(
                150,
                format!("Opening data connection for {}", clean(what)),
            ))
            .await
            == Flow::Close
        {
            return Err(Flow::Close);
        }
        let Some(passive) = self.st.passive.take() else {
            return Err(self.reply(refuse(425, "Use PASV or EPSV first")).await);
        };
        // While the data connection is awaited, the control connection is watched: a client
        // that gave up (its data connection failed on its side) or sent ABOR ends the wait
        // at once instead of after the timeout.
        let accepted = {
            let accept = passive.accept(
                self.conn.peer.ip(),
                self.shared.config.data_from_any_address,
                DATA_ACCEPT,
            );
            tokio::pin!(accept);
            loop {
                tokio::select! {
                    r = &mut accept => break Ok(r),
                    line = self.conn.read_line() => match line {
                        Ok(super::control::Line::Got(l)) => {
                            if matches!(super::command::parse(&l), Ok(Command::Abor)) {
                                break Err(true);
                            }
                            self.queued.push_back(l);
                        }
                        _ => break Err(false),
                    },
                }
            }
        };
        let tcp = match accepted {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.conn.peer, "data connection: {e}");
                return Err(self
                    .reply(refuse(425, "Cannot open the data connection"))
                    .await);
            }
            Err(true) => {
                self.reply(refuse(426, "Transfer aborted")).await;
                return Err(self.reply(Reply::new(226, "ABOR successful")).await);
            }
            Err(false) => {
                tracing::debug!(peer = %self.conn.peer, "the client left while its data connection was awaited");
                return Err(Flow::Close);
            }
        };
        let tls = self
            .st
            .prot_private
            .then_some(&self.shared.data_tls)
            .and_then(|t| t.as_ref());
        match DataStream::open(tcp, tls, Duration::from_secs(10)).await {
            Ok(d) => Ok(d),
            Err(e) => {
                tracing::debug!(peer = %self.conn.peer, "data connection: {e}");
                Err(self
                    .reply(refuse(425, "Cannot open the data connection"))
                    .await)
            }
        }
    }

    /// Runs a transfer while watching the control connection: ABOR ends it (through `abort`),
    /// other commands wait until it is over; a control connection that goes away ends it too.
    async fn watched<T>(
        &mut self,
        abort: &tokio::sync::watch::Sender<bool>,
        transfer: impl std::future::Future<Output = T>,
    ) -> Watched<T> {
        tokio::pin!(transfer);
        let (mut aborted, mut control_gone) = (false, false);
        let out = loop {
            tokio::select! {
                out = &mut transfer => break out,
                line = self.conn.read_line(), if !aborted && !control_gone => match line {
                    Ok(super::control::Line::Got(l)) => {
                        if matches!(super::command::parse(&l), Ok(Command::Abor)) {
                            aborted = true;
                            let _ = abort.send(true);
                        } else {
                            self.queued.push_back(l);
                        }
                    }
                    _ => {
                        control_gone = true;
                        let _ = abort.send(true);
                    }
                },
            }
        };
        Watched {
            out,
            aborted,
            control_gone,
        }
    }

    pub(crate) async fn store(&mut self, arg: &str, append: bool) -> Flow {
        let mut a = match self.account() {
            Ok(a) => a,
            Err(r) => return self.reply(r).await,
        };
        let (inside, store) = match self.resolve(arg) {
            Ok(x) => x,
            Err(r) => return self.reply(r).await,
        };
        if inside.is_root() {
            return self.reply(refuse(550, "Not a plain file")).await;
        }
        let rest = std::mem::take(&mut self.st.rest);
        // The account's own scratch folder: whoever may write may also rewrite there.
        if inside.parts().len() > 1
            && inside.parts()[0] == SCRATCH_DIR
            && a.rights.contains(Right::Write)
        {
            a.rights = a.rights.iter().chain([Right::Overwrite]).collect();
        }
        if let Err(r) = self.ready_for_data(&a) {
            return self.reply(r).await;
        }
        let shared = std::sync::Arc::clone(&self.shared);
        let Some(_writing) = shared.inflight.write_within(&store, BUSY_WAIT).await else {
            return self
                .reply(refuse(
                    450,
                    "The file is being written by another session; try again",
                ))
                .await;
        };
        // The common case first: a new file, created in one step (no stat before).
        let fresh = if rest == 0 && !append && a.rights.contains(Right::Write) {
            match self.shared.store.write(&store, WriteMode::CreateNew).await {
                Ok(u) => Some(u),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                Err(e) => return self.reply(store_error(&e)).await,
            }
        } else {
            None
        };
        let written = match fresh {
            Some(u) => Ok(u),
            None => {
                let mode = match self.write_mode(&a, &store, rest, append).await {
                    Ok(m) => m,
                    Err(r) => return self.reply(r).await,
                };
                self.shared.store.write(&store, mode).await
            }
        };
        let upload = match written {
            Ok(u) => u,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return self
                    .reply(refuse(
                        550,
                        "Permission denied: the file exists and the account may not overwrite",
                    ))
                    .await
            }
            Err(e) => return self.reply(store_error(&e)).await,
        };
        let offset = upload.offset();
        let path = store.display();
        let mut data = match self.open_data(&inside.display()).await {
            Ok(d) => d,
            Err(flow) => {
                // Nothing arrived: the file stays as it was (a new one stays empty).
                let _ = tokio::task::spawn_blocking(move || upload.abandon(None)).await;
                self.session.end_transfer();
                return flow;
            }
        };
        let started = Instant::now();
        let (bounds, abort) = self.bounds(true, &path);
        let w = self
            .watched(&abort, pipeline::receive(&mut data, upload, bounds))
            .await;
        self.session.end_transfer();
        let (received, aborted, control_gone) = (w.out, w.aborted, w.control_gone);
        let temp = inside.file_name().is_some_and(is_temp_name);
        let user = self.user_name();
        if let Some(e) = received.error.as_ref().filter(|_| !aborted) {
            self.emit(FtpEvent::TransferFailed {
                user,
                path,
                upload: true,
                error: e.to_string(),
            });
            let r = match e.kind() {
                _ if pipeline::is_from_store(e) => store_failed(e),
                io::ErrorKind::TimedOut => refuse(426, "Data connection stalled; transfer aborted"),
                io::ErrorKind::Interrupted => refuse(426, "Transfer cancelled"),
                _ if received.meta.is_none() => store_error(e),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => store_error(e),
                _ if e.raw_os_error() == Some(libc::ENOSPC) => store_error(e),
                _ => refuse(426, "Connection closed; transfer aborted"),
            };
            return if control_gone {
                Flow::Close
            } else {
                self.reply(r).await
            };
        }
        if aborted {
            self.emit(FtpEvent::TransferFailed {
                user,
                path,
                upload: true,
                error: "aborted by the client".into(),
            });
            self.reply(refuse(426, "Transfer aborted")).await;
            return self.reply(Reply::new(226, "ABOR successful")).await;
        }
        // The client's end of data arrived: close ours in order (TLS: close_notify).
        let _ = data.finish(Duration::from_secs(5)).await;
        let size = received.meta.map_or(offset + received.bytes, |m| m.size);
        let sha256 = received
            .hash
            .as_ref()
            .filter(|h| h.len() == size)
            .map(|h| h.hex());
        self.emit(if offset > 0 || append {
            FtpEvent::Appended {
                user: user.clone(),
                path: path.clone(),
                offset,
                size,
                sha256: sha256.clone(),
                temp,
            }
        } else {
            FtpEvent::UploadCompleted {
                user: user.clone(),
                path: path.clone(),
                size,
                sha256: sha256.clone(),
                temp,
            }
        });
        if control_gone {
            tracing::debug!(
                user,
                path,
                "upload ended, but its client is gone before the 226"
            );
            return Flow::Close;
        }
        let flow = self.reply(Reply::new(226, "Transfer complete")).await;
        if flow == Flow::Continue {
            log_transfer(
                &user,
                if append { "APPE" } else { "STOR" },
                &path,
                received.bytes,
                started,
                sha256.as_deref(),
            );
        }
        flow
    }

    /// How an upload may write `store`, by the account's rights (RFC 959 REST + STOR, APPE).
    async fn write_mode(
        &self,
        a: &crate::server::accounts::Account,
        store: &VirtualPath,
        rest: u64,
        append: bool,
    ) -> Result<WriteMode, Reply> {
        let r = &a.rights;
        let existing = match self.shared.store.stat(store).await {
            Ok(m) if m.is_dir() => return Err(refuse(550, "Not a plain file")),
            Ok(m) => Some(m.size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(store_error(&e)),
        };
        match (existing, append, rest) {
            (None, _, 0) if r.contains(Right::Write) => Ok(WriteMode::CreateNew),
            (None, _, 0) => Err(refuse(550, "Permission denied")),
            (None, _, _) => Err(refuse(550, "REST past the end of the file")),
            (Some(size), true, _) => {
                if r.contains(Right::Append)
                    || r.contains(Right::Overwrite)
                    || (size == 0 && r.contains(Right::Write))
                {
                    Ok(WriteMode::Append { at: size })
                } else {
                    Err(refuse(550, "Permission denied: no append right"))
                }
            }
            (Some(size), false, rest) if rest > size => {
                Err(refuse(550, "REST past the end of the file"))
            }
            (Some(size), false, rest) if rest == size && rest > 0 => {
                if r.contains(Right::Append) || r.contains(Right::Overwrite) {
                    Ok(WriteMode::Append { at: size })
                } else {
                    Err(refuse(550, "Permission denied: no append right"))
                }
            }
            (Some(0), false, 0) if r.contains(Right::Write) || r.contains(Right::Overwrite) => {
                Ok(WriteMode::Append { at: 0 })
            }
            (Some(_), false, rest) => {
                if r.contains(Right::Overwrite) {
                    Ok(WriteMode::Replace { at: rest })
                } else {
                    Err(refuse(
                        550,
                        "Permission denied: the file exists and the account may not overwrite",
                    ))
                }
            }
        }
    }

    pub(crate) async fn retrieve(&mut self, arg: &str) -> Flow {
        let a = match self.require(Right::Read) {
            Ok(a) => a,
            Err(r) => return self.reply(r).await,
        };
        let (inside, store) = match self.resolve(arg) {
            Ok(x) => x,
            Err(r) => return self.reply(r).await,
        };
        let rest = std::mem::take(&mut self.st.rest);
        if let Err(r) = self.ready_for_data(&a) {
            return self.reply(r).await;
        }
        let download = match self.shared.store.read(&store, rest).await {
            Ok(d) => d,
            Err(e) => return self.reply(store_error(&e)).await,
        };
        let path = store.display();
        let mut data = match self.open_data(&inside.display()).await {
            Ok(d) => d,
            Err(flow) => return flow,
        };
        let started = Instant::now();
        let (bounds, abort) = self.bounds(false, &path);
        let mut zero_copy = false;
        let w = self
            .watched(
                &abort,
                pipeline::send(&mut data, download, bounds, &mut zero_copy),
            )
            .await;
        self.session.end_transfer();
        if zero_copy {
            self.shared
                .stats
                .zero_copy_downloads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let control_gone = w.control_gone;
        let done = match w.out {
            Ok(n) => Done::Ok(n),
            Err(_) if w.aborted => Done::Aborted,
            Err(e) => Done::Failed(e),
        };
        let user = self.user_name();
        match done {
            Done::Ok(bytes) => {
                let closed = data.finish(Duration::from_secs(10)).await;
                if let Err(e) = closed {
                    tracing::debug!(user, path, "closing the data connection: {e}");
                }
                self.emit(FtpEvent::Downloaded {
                    user: user.clone(),
                    path: path.clone(),
                    bytes,
                });
                if control_gone {
                    return Flow::Close;
                }
                let flow = self.reply(Reply::new(226, "Transfer complete")).await;
                if flow == Flow::Continue {
                    log_transfer(&user, "RETR", &path, bytes, started, None);
                }
                flow
            }
            Done::Aborted => {
                self.reply(refuse(426, "Transfer aborted")).await;
                self.reply(Reply::new(226, "ABOR successful")).await
            }
            Done::Failed(e) => {
                self.emit(FtpEvent::TransferFailed {
                    user,
                    path,
                    upload: false,
                    error: e.to_string(),
                });
                if control_gone {
                    return Flow::Close;
                }
                let r = match e.kind() {
                    _ if pipeline::is_from_store(&e) => store_failed(&e),
                    io::ErrorKind::TimedOut => {
                        refuse(426, "Data connection stalled; transfer aborted")
                    }
                    _ => refuse(426, "Connection closed; transfer aborted"),
                };
                self.reply(r).await
            }
        }
    }

    /// A listing's bytes (LIST lines, names, or MLSD facts).
    pub(crate) async fn listing(
        &self,
        arg: Option<&str>,
        kind: ListKind,
    ) -> Result<Vec<u8>, Reply> {
        let a = self.require(Right::List)?;
        let (inside, store) = self.resolve(arg.unwrap_or("."))?;
        let m = self
            .shared
            .store
            .stat(&store)
            .await
            .map_err(|e| store_error(&e))?;
        let now = SystemTime::now();
        let mut out = Vec::new();
        if m.is_file() {
            let name = inside.file_name().unwrap_or_default().to_string();
            match kind {
                ListKind::Facts => return Err(refuse(501, "Not a folder: use MLST for a file")),
                ListKind::List => out.extend(list_line(&clean(&name), &m, now).into_bytes()),
                ListKind::Names => out.extend(format!("{}\r\n", clean(&name)).into_bytes()),
            }
            return Ok(out);
        }
        let mut entries = self
            .shared
            .store
            .list(&store)
            .await
            .map_err(|e| store_error(&e))?;
        entries.sort_by(|x, y| x.0.cmp(&y.0));
        for (name, m) in entries {
            // Names with line ends cannot be listed safely; the store never makes them.
            if name.contains(['\r', '\n']) {
                continue;
            }
            match kind {
                ListKind::List => out.extend(list_line(&name, &m, now).into_bytes()),
                ListKind::Names => out.extend(format!("{name}\r\n").into_bytes()),
                ListKind::Facts => out.extend(
                    format!(
                        "{}\r\n",
                        mlst_facts(&name, &m, &a.rights, self.st.facts, kind_fact(&m))
                    )
                    .into_bytes(),
                ),
            }
        }
        Ok(out)
    }

    pub(crate) async fn list(&mut self, arg: Option<&str>, kind: ListKind) -> Flow {
        let a = match self.account() {
            Ok(a) => a,
            Err(r) => return self.reply(r).await,
        };
        if let Err(r) = self.ready_for_data(&a) {
            return self.reply(r).await;
        }
        let bytes = match self.listing(arg, kind).await {
            Ok(b) => b,
            Err(r) => return self.reply(r).await,
        };
        let mut data = match self.open_data("the listing").await {
            Ok(d) => d,
            Err(flow) => return flow,
        };
        let (bounds, abort) = self.bounds(false, "listing");
        let w = self
            .watched(&abort, pipeline::send_bytes(&mut data, &bytes, bounds))
            .await;
        self.session.end_transfer();
        let control_gone = w.control_gone;
        let done = match w.out {
            Ok(n) => Done::Ok(n),
            Err(_) if w.aborted => Done::Aborted,
            Err(e) => Done::Failed(e),
        };
        match done {
            Done::Ok(_) => {
                let _ = data.finish(Duration::from_secs(10)).await;
                if control_gone {
                    return Flow::Close;
                }
                self.reply(Reply::new(226, "Listing sent")).await
            }
            Done::Aborted => {
                self.reply(refuse(426, "Transfer aborted")).await;
                self.reply(Reply::new(226, "ABOR successful")).await
            }
            Done::Failed(_) if control_gone => Flow::Close,
            Done::Failed(_) => {
                self.reply(refuse(426, "Connection closed; transfer aborted"))
                    .await
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    List,
    Names,
    Facts,
}

/// The one INFO line of a completed transfer.
fn log_transfer(
    user: &str,
    verb: &str,
    path: &str,
    bytes: u64,
    started: Instant,
    sha256: Option<&str>,
) {
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    tracing::info!(
        user,
        path,
        bytes,
        rate = format!("{:.1} MB/s", bytes as f64 / secs / 1e6),
        sha256 = sha256.unwrap_or("-"),
        "{verb}"
    );
}
