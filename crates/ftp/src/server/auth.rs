//! Login: the lockout (checked before the password is), a bound on password checks running at
//! once, the account's own conditions (enabled, address, TLS), and the sessions-per-account
//! limit.

use super::accounts::Account;
use super::canonical_ip;
use super::events::{FtpEvent, WRONG_PASSWORD};
use super::sessions::Session;
use super::store::Storage;
use super::vpath::VirtualPath;
use super::Shared;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a login with the right password over plain FTP was refused: the one refusal the client
/// is told (its cure is TLS, not another password; whoever reads it knew the password).
pub(crate) const TLS_REQUIRED: &str = "account requires TLS (AUTH TLS before USER)";

/// Logs `name` in on `session`; the reason when refused (for the log; the client is told only
/// [`TLS_REQUIRED`]).
pub(crate) async fn login(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    name: &str,
    password: &str,
    peer: SocketAddr,
    tls: bool,
) -> Result<Account, &'static str> {
    let ip = canonical_ip(peer.ip());
    let refuse = |reason: &'static str| {
        shared.emit(FtpEvent::LoginFailed {
            user: name.to_string(),
            addr: peer,
            reason: reason.to_string(),
        });
        reason
    };
    // Counted before the password is checked: concurrent guesses cannot outrun the count.
    let Some(attempt) = shared.lockout.begin(name, ip).await else {
        return Err(refuse("locked out after repeated failures"));
    };
    // A password hash costs tens of milliseconds and megabytes: a few at a time, so a burst of
    // logins (or an attack) cannot take all memory and CPU.
    let _permit = shared
        .password_checks
        .acquire()
        .await
        .map_err(|_| refuse("the service is stopping"))?;
    let (accounts, n, pw) = (
        Arc::clone(&shared.accounts),
        name.to_string(),
        password.to_string(),
    );
    let account = tokio::task::spawn_blocking(move || accounts.verify(&n, &pw))
        .await
        .map_err(|_| refuse("password check failed"))?;
    let Some(account) = account else {
        attempt.failed();
        return Err(refuse(WRONG_PASSWORD));
    };
    attempt.succeeded();
    if !account.enabled {
        return Err(refuse("account disabled"));
    }
    if !account.ip_allowed(ip) {
        return Err(refuse("address not allowed for this account"));
    }
    if account.tls_required && !tls {
        return Err(refuse(TLS_REQUIRED));
    }
    if !shared
        .sessions
        .claim_login(session, name, shared.config.max_sessions_per_user)
    {
        return Err(refuse("too many sessions for this account"));
    }
    tracing::debug!(user = name, addr = %peer, "FTP login");
    shared.emit(FtpEvent::LoggedIn {
        user: name.to_string(),
        addr: peer,
    });
    Ok(account)
}

/// Creates the home folder (and the folders above it) if missing.
pub(crate) async fn make_home(store: &dyn Storage, home: &VirtualPath) -> std::io::Result<()> {
    let mut at = VirtualPath::default();
    for part in home.parts() {
        at = at.child(part);
        match store.mkdir(&at).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
