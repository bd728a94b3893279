//! Login: the per-connection authenticator (password, lockout, allowed addresses, TLS
//! requirement, sessions per user) and the user detail libunftp hands to the storage back-end.

use super::events::FtpEvent;
use super::sessions::Session;
use super::Shared;
use crate::users::canonical_ip;
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use unftp_core::auth::{
    AuthenticationError, Authenticator, ChannelEncryptionState, Credentials, Principal, UserDetail,
    UserDetailError, UserDetailProvider,
};

/// The logged-in account as libunftp carries it. Rights and limits are looked up live in the
/// user database on every operation, so changes apply at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtpUser {
    pub name: String,
}

impl fmt::Display for FtpUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl UserDetail for FtpUser {}

#[derive(Debug)]
pub(crate) struct UserProvider;

#[async_trait]
impl UserDetailProvider for UserProvider {
    type User = FtpUser;
    async fn provide_user_detail(&self, principal: &Principal) -> Result<FtpUser, UserDetailError> {
        Ok(FtpUser {
            name: principal.username.clone(),
        })
    }
}

/// One per control connection, so it knows which session is logging in.
pub(crate) struct ConnAuthenticator {
    pub shared: Arc<Shared>,
    pub session: Arc<Session>,
}

impl fmt::Debug for ConnAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnAuthenticator")
            .field("session", &self.session.id)
            .finish()
    }
}

impl ConnAuthenticator {
    fn refuse(&self, user: &str, reason: &str) -> AuthenticationError {
        tracing::info!(user, addr = %self.session.addr, reason, "FTP login refused");
        self.shared.emit(FtpEvent::LoginFailed {
            user: user.to_string(),
            addr: self.session.addr,
            reason: reason.to_string(),
        });
        AuthenticationError::BadPassword
    }
}

#[async_trait]
impl Authenticator for ConnAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let ip = canonical_ip(creds.source_ip);
        let lockout = &self.shared.lockout;
        if lockout.is_locked(username, ip) {
            return Err(self.refuse(username, "locked out after repeated failures"));
        }
        let password = creds.password.clone().unwrap_or_default();
        let db = Arc::clone(&self.shared.users);
        let name = username.to_string();
        // argon2id costs ~19 MiB and tens of ms per check: a few at a time, so a burst of logins
        // (or an attack) cannot take all memory and CPU.
        let _permit = self
            .shared
            .password_checks
            .acquire()
            .await
            .map_err(|e| AuthenticationError::with_source("password check failed", e))?;
        let record = tokio::task::spawn_blocking(move || db.check_password(&name, &password))
            .await
            .map_err(|e| AuthenticationError::with_source("password check failed", e))?;
        let Some(record) = record else {
            lockout.failed(username, ip);
            return Err(self.refuse(username, "wrong user name or password"));
        };
        if !record.enabled {
            return Err(self.refuse(username, "account disabled"));
        }
        if !record.ip_allowed(ip) {
            return Err(self.refuse(username, "address not allowed for this account"));
        }
        if record.tls_required
            && creds.command_channel_security == ChannelEncryptionState::Plaintext
        {
            return Err(self.refuse(username, "account requires TLS (AUTH TLS before USER)"));
        }
        if !self.shared.sessions.claim_login(
            &self.session,
            username,
            self.shared.config.max_sessions_per_user,
        ) {
            return Err(self.refuse(username, "too many sessions for this account"));
        }
        lockout.succeeded(username, ip);
        tracing::debug!(user = username, addr = %self.session.addr, "FTP login");
        self.shared.emit(FtpEvent::LoggedIn {
            user: username.to_string(),
            addr: self.session.addr,
        });
        Ok(Principal {
            username: username.to_string(),
        })
    }
}
