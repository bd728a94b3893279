//! Who is asking: web sessions (a random token in an HttpOnly, SameSite=Strict cookie, Secure
//! under TLS) or HTTP basic auth on the API, both checked against the same `UserDb` as FTP.
//!
//! - The account is re-read on every request: disabling a user, removing them or lowering their
//!   `web_role` takes effect on their open sessions at once.
//! - Failed logins are counted by name and by address ([`Lockout`]) and refused before the
//!   password is even hashed; at most two argon2 checks run at a time.
//! - Basic-auth credentials that passed argon2 are remembered for a minute
//!   ([`UserDb::recently_verified`]), so a script calling the API does not pay ~20 ms of CPU per
//!   request.
//! - With `[catalog] url` the sessions live in PostgreSQL ([`SharedSessions`]): valid on every
//!   server, ended on every server.
//! - State-changing requests from a session carry its CSRF token (a form field or the
//!   `X-CSRF-Token` header) and, when the browser sends one, an `Origin` of this host.
//!   Basic-auth requests carry no ambient authority, so they need no token.

use super::error::WebError;
use super::shared_sessions::SharedSessions;
use super::WebState;
use crate::users::{UserDb, WebRole};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use base64::Engine;
use logarchive_ftp::server::Lockout;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub const COOKIE: &str = "logarchive_session";
/// The session cookie's name under TLS: the `__Host-` prefix makes browsers refuse it from
/// anywhere but this host over HTTPS (a sibling subdomain cannot plant one).
pub const SECURE_COOKIE: &str = "__Host-logarchive_session";
/// A session ends this long after login, whatever happens.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Bounds the memory logins can make us spend.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    user: String,
    csrf: String,
    expires: Instant,
    /// The account's credentials stamp at login: a new password ends the session.
    credentials: u64,
}

/// Logged-in sessions and the login throttle.
pub struct Auth {
    /// Keyed by the SHA-256 of the token: the map never holds a usable token.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    lockout: Arc<Lockout>,
    password_checks: Semaphore,
    /// argon2 verifications run for the web (a metric).
    checks_run: AtomicU64,
    pub secure_cookies: bool,
    /// The sessions of every server, in PostgreSQL; `None`: this server's own, in memory.
    shared: Option<Arc<SharedSessions>>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: WebRole,
    /// The session's CSRF token (for forms); `None` under basic auth.
    pub csrf: Option<String>,
    /// The session's token; `None` under basic auth.
    pub token: Option<String>,
    /// Where the request came from.
    pub ip: IpAddr,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == WebRole::Admin
    }

    pub fn require_admin(&self) -> Result<(), WebError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(WebError::Forbidden("administrators only"))
        }
    }

    /// Checks a state-changing request's token (basic-auth callers have none to check).
    pub fn check_csrf(&self, sent: Option<&str>) -> Result<(), WebError> {
        match &self.csrf {
            None => Ok(()),
            Some(expected) if sent.is_some_and(|s| constant_time_eq(s, expected)) => Ok(()),
            Some(_) => Err(WebError::Forbidden(
                "missing or wrong CSRF token (reload the page)",
            )),
        }
    }
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    /// The failed-login counts of the web's logins.
    pub fn lockout(&self) -> &Arc<Lockout> {
        &self.lockout
    }

    pub fn new(secure_cookies: bool, max_failures: u32, lockout: Duration) -> Auth {
        Auth {
            sessions: Mutex::new(HashMap::new()),
            lockout: Arc::new(Lockout::new(max_failures, lockout)),
            password_checks: Semaphore::new(2),
            checks_run: AtomicU64::new(0),
            secure_cookies,
            shared: None,
        }
    }

    /// Keeps the sessions in PostgreSQL, shared with the other servers.
    pub fn with_shared_sessions(mut self, shared: Option<Arc<SharedSessions>>) -> Auth {
        self.shared = shared;
        self
    }

    /// Runs `f` on the shared sessions off the async threads.
    async fn shared<T: Send + 'static>(
        shared: &Arc<SharedSessions>,
        f: impl FnOnce(&SharedSessions) -> Result<T, crate::catalog::CatalogError> + Send + 'static,
    ) -> Result<T, WebError> {
        let s = Arc::clone(shared);
        Ok(tokio::task::spawn_blocking(move || f(&s)).await??)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a name and password for the web (the account must be enabled, have a web role and
    /// allow the address). Counted against the lockout.
    pub async fn verify(
        &self,
        users: &Arc<UserDb>,
        name: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<WebRole, WebError> {
        // Counted before the password is checked: concurrent guesses cannot outrun the count.
        let Some(attempt) = self.lockout.begin(name, ip).await else {
            return Err(WebError::LockedOut);
        };
        let _permit = self
            .password_checks
            .acquire()
            .await
            .map_err(|_| WebError::Internal("password checks closed".into()))?;
        let (db, n, p) = (Arc::clone(users), name.to_string(), password.to_string());
        self.checks_run.fetch_add(1, Ordering::Relaxed);
        let rec = tokio::task::spawn_blocking(move || db.check_password(&n, &p)).await?;
        let Some(r) = rec else {
            attempt.failed();
            tracing::debug!(user = name, %ip, "web login failed");
            return Err(WebError::Unauthorized);
        };
        // The right password: not a guess, whatever the account may do.
        attempt.succeeded();
        if r.enabled && r.web_role != WebRole::None && r.ip_allowed(ip) {
            Ok(r.web_role)
        } else {
            tracing::debug!(user = name, %ip, "web login of an account that may not use the web");
            Err(WebError::Unauthorized)
        }
    }

    /// [`Auth::verify`] for HTTP basic auth: credentials verified in the last minute against the
    /// account's current password hash pass without another argon2 check.
    pub async fn verify_basic(
        &self,
        users: &Arc<UserDb>,
        name: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<(), WebError> {
        if self.lockout.is_locked(name, ip) {
            return Err(WebError::LockedOut);
        }
        let Some(rec) = users.get(name) else {
            // Unknown names take the full (dummy) check: no timing difference.
            return self.verify(users, name, password, ip).await.map(|_| ());
        };
        if users.recently_verified(name, password, &rec) {
            return Ok(());
        }
        self.verify(users, name, password, ip).await?;
        // Remembered with the hash the password was checked against: if it changed meanwhile,
        // this entry simply never matches.
        users.remember_verified(name, password, &rec);
        Ok(())
    }

    /// argon2 verifications run so far.
    pub fn password_checks_run(&self) -> u64 {
        self.checks_run.load(Ordering::Relaxed)
    }

    /// Opens a session; returns (token, csrf).
    pub async fn open_session(
        &self,
        user: &str,
        credentials: u64,
    ) -> Result<(String, String), WebError> {
        let token = random_token();
        let csrf = random_token();
        if let Some(shared) = &self.shared {
            let (k, user, c) = (key(&token), user.to_string(), csrf.clone());
            Self::shared(shared, move |s| {
                s.insert(&k, &user, &c, credentials, SESSION_LIFETIME)
            })
            .await?;
            return Ok((token, csrf));
        }
        let now = Instant::now();
        let mut s = self.sessions();
        if s.len() >= MAX_SESSIONS {
            s.retain(|_, v| v.expires > now);
            if s.len() >= MAX_SESSIONS {
                // Still full of live sessions: drop the one closest to its end.
                if let Some(k) = s.iter().min_by_key(|(_, v)| v.expires).map(|(k, _)| *k) {
                    s.remove(&k);
                }
            }
        }
        s.insert(
            key(&token),
            Session {
                user: user.to_string(),
                csrf: csrf.clone(),
                expires: now + SESSION_LIFETIME,
                credentials,
            },
        );
        Ok((token, csrf))
    }

    pub async fn close_session(&self, token: &str) -> Result<(), WebError> {
        let k = key(token);
        if let Some(shared) = &self.shared {
            return Self::shared(shared, move |s| s.remove(&k)).await;
        }
        self.sessions().remove(&k);
        Ok(())
    }

    /// Closes every session of a user (removed, disabled, password reset). Blocking with
    /// shared sessions.
    pub fn close_sessions_of(&self, user: &str) {
        if let Some(shared) = &self.shared {
            if let Err(e) = shared.remove_user(user) {
                // Their requests are refused anyway: the account is checked on every one.
                tracing::warn!("web sessions of {user} not removed from the catalog: {e}");
            }
            return;
        }
        self.sessions().retain(|_, s| s.user != user);
    }

    /// The password of `user` changed: every session of theirs ends except `keep` (the
    /// caller's own, when they changed their own password), which goes on under the new one.
    /// Blocking with shared sessions.
    pub fn password_changed(&self, user: &str, credentials: u64, keep: Option<&str>) {
        let keep = keep.map(key);
        if let Some(shared) = &self.shared {
            if let Err(e) = shared.password_changed(user, credentials, keep.as_ref()) {
                // Their requests are refused anyway: the stamp is checked on every one.
                tracing::warn!("web sessions of {user} not updated in the catalog: {e}");
            }
            return;
        }
        let mut s = self.sessions();
        s.retain(|k, v| v.user != user || Some(*k) == keep);
        if let Some(v) = keep.and_then(|k| s.get_mut(&k)) {
            v.credentials = credentials;
        }
    }

    async fn session(&self, token: &str) -> Result<Option<(String, String, u64)>, WebError> {
        let k = key(token);
        if let Some(shared) = &self.shared {
            return Self::shared(shared, move |s| s.get(&k)).await;
        }
        Ok(self.local_session(&k))
    }

    fn local_session(&self, k: &[u8; 32]) -> Option<(String, String, u64)> {
        let mut s = self.sessions();
        let k = *k;
        match s.get(&k) {
            Some(v) if v.expires > Instant::now() => {
                Some((v.user.clone(), v.csrf.clone(), v.credentials))
            }
            Some(_) => {
                s.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Whether the web interface runs over TLS.
    pub fn tls(&self) -> bool {
        self.secure_cookies
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure_cookies {
            SECURE_COOKIE
        } else {
            COOKIE
        }
    }

    pub fn set_cookie(&self, token: &str) -> String {
        format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.cookie_name(),
            SESSION_LIFETIME.as_secs(),
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    pub fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            self.cookie_name(),
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    /// The session token from the Cookie header. Several session cookies (one planted by
    /// someone else beside ours) are no session at all: which one is ours cannot be told.
    pub fn session_token(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.cookie_name();
        let mut found = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string());
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The client's address (the socket peer; no proxy headers are trusted).
pub fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<super::Peer>>()
        .map(|c| logarchive_ftp::server::canonical_ip(c.0 .0.ip()))
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// A browser's cross-site request: its `Origin` names another host than the one it asked.
pub fn cross_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map(|(_, h)| h)
        .unwrap_or(origin)
        .trim_end_matches('/');
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

impl FromRequestParts<Arc<WebState>> for Caller {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<WebState>,
    ) -> Result<Caller, WebError> {
        let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if unsafe_method && cross_origin(&parts.headers) {
            return Err(WebError::Forbidden("cross-origin request refused"));
        }
        let token = state.auth.session_token(&parts.headers);
        let session = match token.as_deref() {
            Some(t) => state.auth.session(t).await?,
            None => None,
        };
        let (name, csrf, stamp) = if let Some((user, csrf, stamp)) = session {
            (user, Some(csrf), Some(stamp))
        } else if let Some((u, p)) = basic_credentials(&parts.headers) {
            let ip = client_ip(parts);
            if let Err(e) = state.auth.verify_basic(&state.users, &u, &p, ip).await {
                if matches!(e, WebError::Unauthorized) {
                    state.audit.record(crate::audit::Event::now(
                        &u,
                        crate::audit::Via::Web,
                        Some(ip),
                        "web.login_failed",
                        &u,
                        "basic auth",
                    ));
                }
                return Err(e);
            }
            (u, None, None)
        } else {
            return Err(WebError::Unauthorized);
        };
        // The account as it is now, not as it was at login.
        let rec = state.users.get(&name).ok_or(WebError::Unauthorized)?;
        if stamp.is_some_and(|s| s != crate::users::credentials(&rec.password)) {
            // The password changed since this session logged in (CLI, API, page, hand edit).
            if let Some(t) = &token {
                state.auth.close_session(t).await?;
            }
            return Err(WebError::Unauthorized);
        }
        if !rec.enabled || rec.web_role == WebRole::None || !rec.ip_allowed(client_ip(parts)) {
            return Err(WebError::Unauthorized);
        }
        Ok(Caller {
            name,
            role: rec.web_role,
            csrf,
            token: stamp.and(token),
            ip: client_ip(parts),
        })
    }
}
