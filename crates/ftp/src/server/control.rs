//! One control connection, start to end: the bounded line reader, TLS on the control channel
//! (AUTH TLS), login, the session's state (working folder, REST offset, RNFR, PROT, passive
//! listener), and the commands that need no data connection. File commands and transfers are in
//! files.rs, the SITE commands in site.rs.
//!
//! The rules kept here: a line longer than [`MAX_LINE`] closes the session (500) and nothing
//! else a client sends does (500/501, then the next command); nobody is logged in after the login
//! deadline; every reply text from outside is cleaned of line ends.

use super::accounts::Account;
use super::command::{parse, Command, MAX_LINE};
use super::data::{ipv4_of, pasv_reply, Passive};
use super::events::FtpEvent;
use super::listing::Facts;
use super::reply::{clean, quote_path, Reply};
use super::sessions::Session;
use super::vpath::VirtualPath;
use super::Shared;
use crate::rights::Right;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// A byte stream the control connection runs over (plain TCP, or TLS over it).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Bytes that arrived before a TLS handshake began (a client may send its hello right after
/// `AUTH TLS`), read before the socket's own.
struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: Box<dyn Io>,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.at < me.prefix.len() {
            let n = (me.prefix.len() - me.at).min(buf.remaining());
            buf.put_slice(&me.prefix[me.at..me.at + n]);
            me.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What reading a line gave.
pub(crate) enum Line {
    Got(Vec<u8>),
    TooLong,
    Closed,
}

/// The control connection's bytes.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    /// Read but not yet taken as lines.
    buf: Vec<u8>,
    pub tls: bool,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

impl Conn {
    /// The next line (without its end). Cancel-safe: bytes read stay in the buffer.
    pub async fn read_line(&mut self) -> io::Result<Line> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if line.len() > MAX_LINE + 2 {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Got(line));
            }
            if self.buf.len() > MAX_LINE + 2 {
                return Ok(Line::TooLong);
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Ok(Line::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn send(&mut self, r: &Reply) -> io::Result<()> {
        self.io.write_all(&r.to_bytes()).await?;
        self.io.flush().await
    }

    /// Switches to TLS (after `234`): bytes the client sent ahead are part of the handshake.
    async fn start_tls(&mut self, config: &Arc<rustls::ServerConfig>) -> io::Result<()> {
        let inner = std::mem::replace(&mut self.io, Box::new(tokio::io::duplex(1).0));
        let prefixed = Prefixed {
            prefix: std::mem::take(&mut self.buf),
            at: 0,
            inner,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
        let tls = tokio::time::timeout(HANDSHAKE, acceptor.accept(prefixed))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.io = Box::new(tls);
        self.tls = true;
        Ok(())
    }
}

/// The logged-in account of a session.
#[derive(Debug, Clone)]
pub(crate) struct LoggedIn {
    pub name: String,
    /// The account's credentials stamp at login (see `Account::credentials`).
    pub credentials: u64,
    /// The home, as a store path.
    pub home: VirtualPath,
}

/// What a session remembers between commands.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub pending_user: Option<String>,
    pub user: Option<LoggedIn>,
    /// The working folder, inside the home.
    pub cwd: VirtualPath,
    pub rest: u64,
    /// RNFR's path: (inside the home, in the store).
    pub rnfr: Option<(VirtualPath, VirtualPath)>,
    /// PROT P: data connections are encrypted.
    pub prot_private: bool,
    pub pbsz: bool,
    pub passive: Option<Passive>,
    pub epsv_all: bool,
    pub facts: Facts,
}

/// Whether the session goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// One session.
pub(crate) struct Control {
    pub shared: Arc<Shared>,
    pub session: Arc<Session>,
    pub conn: Conn,
    pub st: State,
    /// Lines that arrived during a transfer (other than ABOR), handled after it.
    pub queued: VecDeque<Vec<u8>>,
    started: Instant,
}

/// A reply for a refusal, with its reason kept for the debug log.
pub(crate) fn refuse(code: u16, text: &'static str) -> Reply {
    Reply::new(code, text)
}

impl Control {
    pub fn new(
        shared: Arc<Shared>,
        session: Arc<Session>,
        io: Box<dyn Io>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Control {
        Control {
            shared,
            session,
            conn: Conn {
                io,
                buf: Vec::new(),
                tls: false,
                peer,
                local,
            },
            st: State::default(),
            queued: VecDeque::new(),
            started: Instant::now(),
        }
    }

    /// Serves the session until it ends.
    pub async fn run(mut self) {
        let greeting = Reply::new(220, "logarchive FTP service ready");
        if self.conn.send(&greeting).await.is_err() {
            return;
        }
        let mut cancel = self.session.cancel.subscribe();
        loop {
            let line = match self.queued.pop_front() {
                Some(l) => Line::Got(l),
                None => {
                    let wait = self.read_wait();
                    // Between commands: a graceful shutdown may close the session now (never
                    // between a transfer's end and its reply).
                    self.session.set_waiting(true);
                    let got = tokio::select! {
                        r = tokio::time::timeout(wait, self.conn.read_line()) => match r {
                            Ok(Ok(l)) => l,
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %self.conn.peer, "control connection: {e}");
                                break;
                            }
                            Err(_) => {
                                let why = if self.st.user.is_some() {
                                    "Idle timeout, closing the session"
                                } else {
                                    "Login timeout, closing the session"
                                };
                                let _ = self.conn.send(&Reply::new(421, why)).await;
                                break;
                            }
                        },
                        _ = async { let _ = cancel.wait_for(|c| *c).await; } => {
                            let _ = self.conn.send(&Reply::new(421, "Session closed by the server")).await;
                            break;
                        }
                    };
                    self.session.set_waiting(false);
                    got
                }
            };
            let line = match line {
                Line::Got(l) => l,
                Line::Closed => break,
                Line::TooLong => {
                    tracing::debug!(peer = %self.conn.peer, "command line too long: session closed");
                    let _ = self.conn.send(&Reply::new(500, "Line too long")).await;
                    break;
                }
            };
            let flow = match parse(&line) {
                Ok(cmd) => self.command(cmd).await,
                Err(e) => {
                    let (code, text) = e.reply();
                    tracing::debug!(peer = %self.conn.peer, code, "{text}");
                    self.reply(Reply::new(code, text)).await
                }
            };
            if flow == Flow::Close {
                break;
            }
        }
        if let Some(u) = &self.st.user {
            self.shared.emit(FtpEvent::LoggedOut {
                user: u.name.clone(),
                addr: self.conn.peer,
            });
        }
    }

    /// How long to wait for the next command: the idle timeout, or what is left of the login
    /// deadline.
    fn read_wait(&self) -> Duration {
        if self.st.user.is_some() {
            self.shared.config.idle_timeout
        } else {
            self.shared
                .config
                .login_timeout
                .saturating_sub(self.started.elapsed())
                .max(Duration::from_millis(1))
        }
    }

    /// Sends a reply; a lost connection ends the session.
    pub async fn reply(&mut self, r: Reply) -> Flow {
        if r.code >= 400 {
            tracing::debug!(peer = %self.conn.peer, user = self.st.user.as_ref().map(|u| u.name.as_str()), code = r.code, "{}", r.lines.first().map_or("", |l| l.as_ref()));
        }
        match self.conn.send(&r).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close,
        }
    }

    /// The logged-in account as it is now: a removed or disabled one can do nothing more, even in
    /// a session already open.
    pub fn account(&self) -> Result<Account, Reply> {
        let Some(u) = &self.st.user else {
            return Err(refuse(530, "Please log in with USER and PASS"));
        };
        match self.shared.accounts.get(&u.name) {
            Some(a) if a.credentials != u.credentials => {
                Err(refuse(530, "The password changed; log in again"))
            }
            Some(a) if a.enabled => Ok(a),
            Some(_) => Err(refuse(530, "Account disabled")),
            None => Err(refuse(530, "Account removed")),
        }
    }

    /// The account, if it holds `right`.
    pub fn require(&self, right: Right) -> Result<Account, Reply> {
        let a = self.account()?;
        if a.rights.contains(right) {
            Ok(a)
        } else {
            Err(refuse(550, "Permission denied"))
        }
    }

    /// [`Control::resolve`] of a file whose writer, if any, has finished: a cut upload may still
    /// be flushing its last chunk, and its size and hash are known once it settled.
    pub async fn resolve_settled(&self, arg: &str) -> Result<(VirtualPath, VirtualPath), Reply> {
        let (inside, store) = self.resolve(arg)?;
        if !self
            .shared
            .inflight
            .settled_within(&store, super::transfers::BUSY_WAIT)
            .await
        {
            return Err(refuse(450, "The file is being written; try again"));
        }
        Ok((inside, store))
    }

    /// A client path: (inside the home, in the store). `..` stops at the home's root.
    pub fn resolve(&self, arg: &str) -> Result<(VirtualPath, VirtualPath), Reply> {
        let Some(u) = &self.st.user else {
            return Err(refuse(530, "Please log in with USER and PASS"));
        };
        let joined = if arg.starts_with('/') {
            arg.to_string()
        } else {
            format!("{}/{arg}", self.st.cwd.display())
        };
        let inside = VirtualPath::parse(std::path::Path::new(&joined))
            .map_err(|_| refuse(553, "File name not allowed"))?;
        let store = u.home.join(&inside);
        Ok((inside, store))
    }

    /// Whether transfers of this session must be encrypted and are not.
    pub fn data_needs_tls(&self, a: &Account) -> bool {
        (self.shared.config.tls_required || a.tls_required) && !self.st.prot_private
    }

    async fn command(&mut self, cmd: Command) -> Flow {
        use Command as C;
        // Before login only these.
        let open = matches!(
            cmd,
            C::User(_)
                | C::Pass(_)
                | C::Auth(_)
                | C::Pbsz(_)
                | C::Prot(_)
                | C::Feat
                | C::Syst
                | C::Noop
                | C::Quit
                | C::Help
                | C::Opts(_)
                | C::Host(_)
                | C::Ccc
                | C::Acct
                | C::Unknown(_)
        );
        if !open && self.st.user.is_none() {
            return self
                .reply(refuse(530, "Please log in with USER and PASS"))
                .await;
        }
        let r = match cmd {
            C::User(name) => self.user(name),
            C::Pass(pw) => self.pass(pw).await,
            C::Acct => Reply::new(202, "ACCT not needed"),
            C::Auth(mech) => return self.auth(&mech).await,
            C::Pbsz(_) => {
                if self.conn.tls {
                    self.st.pbsz = true;
                    Reply::new(200, "PBSZ=0")
                } else {
                    refuse(503, "PBSZ needs AUTH TLS first")
                }
            }
            C::Prot(p) => self.prot(p),
            C::Ccc => refuse(534, "CCC refused: the control connection stays encrypted"),
            C::Quit => {
                let _ = self.conn.send(&Reply::new(221, "Goodbye")).await;
                return Flow::Close;
            }
            C::Noop => Reply::new(200, "OK"),
            C::Syst => Reply::new(215, "UNIX Type: L8"),
            C::Feat => self.feat(),
            C::Opts(o) => self.opts(&o),
            C::Host(_) => {
                if self.st.user.is_some() {
                    refuse(503, "HOST must come before login")
                } else {
                    Reply::new(220, "Host accepted")
                }
            }
            C::Help => Reply::multi(
                214,
                vec![
                    "Commands:".into(),
                    "USER PASS AUTH PBSZ PROT FEAT OPTS SYST NOOP QUIT HOST HELP STAT".into(),
                    "PWD CWD CDUP MKD RMD DELE RNFR RNTO SIZE MDTM MFMT MLST MLSD LIST NLST".into(),
                    "TYPE MODE STRU PASV EPSV REST RETR STOR APPE ABOR SITE ALLO".into(),
                    "SITE SHA256 | ALIAS | COMMIT | HELP".into(),
                    "End".into(),
                ],
            ),
            C::Pwd => Reply::new(
                257,
                format!(
                    "{} is the current directory",
                    quote_path(&self.st.cwd.display())
                ),
            ),
            C::Type(t) => Reply::new(200, format!("Type set to {t}")),
            C::Mode('S') => Reply::new(200, "Mode S"),
            C::Mode(_) => refuse(504, "Only MODE S"),
            C::Stru('F') => Reply::new(200, "Structure F"),
            C::Stru(_) => refuse(504, "Only STRU F"),
            C::Pasv => self.pasv(),
            C::Epsv(arg) => self.epsv(arg.as_deref()),
            C::Port | C::Eprt => refuse(502, "Active mode is not offered: use PASV or EPSV"),
            C::Rest(n) => {
                self.st.rest = n;
                Reply::new(350, format!("Restarting at {n}"))
            }
            C::Allo => Reply::new(202, "No storage allocation needed"),
            C::Stou => refuse(502, "STOU is not offered"),
            C::Abor => Reply::new(226, "No transfer to abort"),
            C::Site(verb, args) => self.site(&verb, &args).await,
            C::Unknown(verb) => {
                tracing::debug!(peer = %self.conn.peer, "unknown command {}", clean(&verb));
                refuse(500, "Unknown command")
            }
            // The file commands (files.rs).
            other => return self.file_command(other).await,
        };
        self.reply(r).await
    }

    fn user(&mut self, name: String) -> Reply {
        if self.st.user.is_some() {
            return refuse(530, "Already logged in");
        }
        if self.shared.config.tls_required && !self.conn.tls {
            return refuse(530, "TLS required: send AUTH TLS first");
        }
        self.st.pending_user = Some(name.clone());
        Reply::new(331, format!("Password required for {}", clean(&name)))
    }

    async fn pass(&mut self, password: String) -> Reply {
        if self.st.user.is_some() {
            return refuse(503, "Already logged in");
        }
        let Some(name) = self.st.pending_user.take() else {
            return refuse(503, "Login with USER first");
        };
        match super::auth::login(
            &self.shared,
            &self.session,
            &name,
            &password,
            self.conn.peer,
            self.conn.tls,
        )
        .await
        {
            Ok(account) => {
                let Ok(home) = VirtualPath::parse(std::path::Path::new(&account.home)) else {
                    return refuse(530, "The account's home is not a valid path");
                };
                if let Err(e) = super::auth::make_home(&*self.shared.store, &home).await {
                    tracing::error!(user = name, home = %home.display(), "cannot create the home folder: {e}");
                    return refuse(421, "Home folder unavailable");
                }
                self.st.user = Some(LoggedIn {
                    name: name.clone(),
                    credentials: account.credentials,
                    home,
                });
                self.st.cwd = VirtualPath::default();
                Reply::new(230, "Logged in")
            }
            Err(why) => {
                tracing::info!(user = clean(&name), addr = %self.conn.peer, reason = why, "FTP login refused");
                if why == super::auth::TLS_REQUIRED {
                    Reply::new(
                        530,
                        "TLS required for this account: send AUTH TLS first (ftps://)",
                    )
                } else {
                    Reply::new(530, "Login incorrect")
                }
            }
        }
    }

    async fn auth(&mut self, mech: &str) -> Flow {
        let Some(tls) = self.shared.config.tls.clone() else {
            return self.reply(refuse(502, "TLS is not configured")).await;
        };
        if self.conn.tls {
            return self.reply(refuse(503, "Already encrypted")).await;
        }
        if mech != "TLS" && mech != "SSL" && mech != "TLS-C" {
            return self.reply(refuse(504, "Only AUTH TLS")).await;
        }
        if self
            .conn
            .send(&Reply::new(234, "AUTH TLS successful"))
            .await
            .is_err()
        {
            return Flow::Close;
        }
        match self.conn.start_tls(&tls).await {
            Ok(()) => Flow::Continue,
            Err(e) => {
                tracing::debug!(peer = %self.conn.peer, "TLS handshake failed: {e}");
                Flow::Close
            }
        }
    }

    fn prot(&mut self, p: char) -> Reply {
        if !self.conn.tls {
            return refuse(503, "PROT needs AUTH TLS first");
        }
        match p {
            'P' => {
                self.st.prot_private = true;
                Reply::new(200, "Data connections will be encrypted")
            }
            'C' => {
                let account_requires = self.account().map(|a| a.tls_required).unwrap_or(false);
                if self.shared.config.tls_required || account_requires {
                    refuse(534, "PROT C refused: TLS is required")
                } else {
                    self.st.prot_private = false;
                    Reply::new(200, "Data connections in clear text")
                }
            }
            _ => refuse(536, "Only PROT C or P"),
        }
    }

    fn feat(&self) -> Reply {
        let mut lines: Vec<std::borrow::Cow<'static, str>> = vec!["Features:".into()];
        if self.shared.config.tls.is_some() {
            lines.extend(["AUTH TLS".into(), "PBSZ".into(), "PROT".into()]);
        }
        lines.extend([
            "EPSV".into(),
            "HOST".into(),
            "MDTM".into(),
            "MFMT".into(),
            format!("MLST {}", self.st.facts.feat()).into(),
            "REST STREAM".into(),
            "SIZE".into(),
            "TVFS".into(),
            "UTF8".into(),
            "End".into(),
        ]);
        Reply::multi(211, lines)
    }

    fn opts(&mut self, o: &str) -> Reply {
        let (name, rest) = o.split_once(' ').unwrap_or((o, ""));
        match name.to_ascii_uppercase().as_str() {
            "UTF8" | "UTF-8" => Reply::new(200, "UTF8 is always on"),
            "MLST" => {
                self.st.facts = Facts::parse(rest);
                Reply::new(200, format!("MLST OPTS {}", self.st.facts.names()))
            }
            _ => refuse(501, "Unknown option"),
        }
    }

    fn open_passive(&mut self) -> Result<u16, Reply> {
        self.st.passive = None;
        let p = Passive::open(
            self.conn.local.ip(),
            self.shared.config.passive_ports.clone(),
        )
        .map_err(|e| {
            tracing::warn!("no passive port free: {e}");
            refuse(425, "Cannot open a passive port")
        })?;
        let port = p.port;
        self.st.passive = Some(p);
        Ok(port)
    }

    fn pasv(&mut self) -> Reply {
        if self.st.epsv_all {
            return refuse(503, "EPSV ALL was sent: use EPSV");
        }
        let Some(ip) = self
            .shared
            .config
            .passive_host
            .or_else(|| ipv4_of(self.conn.local))
        else {
            return refuse(522, "PASV needs IPv4: use EPSV");
        };
        match self.open_passive() {
            Ok(port) => Reply::new(227, pasv_reply(ip, port)),
            Err(r) => r,
        }
    }

    fn epsv(&mut self, arg: Option<&str>) -> Reply {
        match arg {
            Some(a) if a.eq_ignore_ascii_case("ALL") => {
                self.st.epsv_all = true;
                return Reply::new(200, "EPSV ALL accepted");
            }
            Some("1") if ipv4_of(self.conn.local).is_none() => {
                return refuse(522, "Network protocol not supported, use (2)")
            }
            Some("2") if ipv4_of(self.conn.local).is_some() => {
                return refuse(522, "Network protocol not supported, use (1)")
            }
            Some("1") | Some("2") | None => {}
            Some(_) => return refuse(501, "EPSV takes 1, 2 or ALL"),
        }
        match self.open_passive() {
            Ok(port) => Reply::new(229, format!("Entering Extended Passive Mode (|||{port}|)")),
            Err(r) => r,
        }
    }
}
