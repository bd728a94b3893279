//! The users file as the FTP service's accounts ([`logarchive_ftp::server::Accounts`]).

use super::{UserDb, UserRecord};
use logarchive_ftp::server::{Account, Accounts};

/// An account record as the FTP service sees it.
pub fn account(name: &str, r: &UserRecord) -> Account {
    let mut a = Account::new(name, r.home.clone(), r.rights);
    a.upload_limit = r.upload_limit.0;
    a.download_limit = r.download_limit.0;
    a.allowed_ips = r.allowed_ips.clone();
    a.enabled = r.enabled;
    a.tls_required = r.tls_required;
    a.credentials = credentials(&r.password);
    a
}

/// A number that changes when an account's password does: sessions remember it at login and
/// end when it no longer matches (see `Account::credentials`).
pub fn credentials(password_hash: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    password_hash.hash(&mut h);
    h.finish()
}

impl Accounts for UserDb {
    fn verify(&self, name: &str, password: &str) -> Option<Account> {
        // An agent opens several sessions at once, and reconnects: argon2 once a minute.
        self.check_password_cached(name, password)
            .map(|r| account(name, &r))
    }

    fn get(&self, name: &str) -> Option<Account> {
        UserDb::get(self, name).map(|r| account(name, &r))
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.subscribe())
    }
}
