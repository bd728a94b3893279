//! The connection: connect, secure, log in, binary mode; reconnect by itself with backoff;
//! every command bounded by a timeout and retried once where that cannot do harm.

use super::*;

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
            commit: None,
        };
        c.reconnect().await?;
        c.cwd = c.pwd().await?;
        Ok(c)
    }

    /// The configuration the client connects with.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// One attempt to connect, secure, log in and switch to binary.
    pub(super) async fn open(&self) -> Result<Stream> {
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
                // The server's words, without the code: the caller may need them ("TLS
                // required" tells a user to use ftps://).
                let text = String::from_utf8_lossy(&r.body);
                let reason = text
                    .trim()
                    .trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ' || c == '-');
                return Err(ClientError::Auth {
                    user: self.cfg.user.clone(),
                    server,
                    reason: reason.chars().take(200).collect(),
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
    pub(super) async fn reconnect(&mut self) -> Result<()> {
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
    pub(super) async fn run<T, F>(&mut self, what: &str, retry: bool, mut op: F) -> Result<T>
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
    pub(super) async fn connected(&mut self) -> Result<&mut Stream> {
        if self.conn.is_none() {
            self.reconnect().await?;
        }
        self.conn
            .as_mut()
            .ok_or_else(|| ClientError::Invalid("not connected".into()))
    }

    /// Runs `op` with the absolute form of `path` (through [`Client::run`]); `verb` names the
    /// command in errors.
    pub(super) async fn on_path<T, F>(
        &mut self,
        verb: &str,
        path: &str,
        retry: bool,
        op: F,
    ) -> Result<T>
    where
        F: for<'a> Fn(&'a mut Stream, String) -> Op<'a, T>,
    {
        let p = self.absolute(path);
        self.run(&format!("{verb} {p}"), retry, |s| op(s, p.clone()))
            .await
    }

    /// Says goodbye (best effort) and closes the connection.
    pub async fn quit(mut self) -> Result<()> {
        if let Some(mut s) = self.conn.take() {
            bounded(self.cfg.io_timeout, "QUIT", s.quit()).await?;
        }
        Ok(())
    }
}
