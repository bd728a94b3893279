//! Accounts as the FTP service sees them: a trait, so the embedding program keeps them where it
//! likes (logarchive: its users file, in the server crate). The service asks for an
//! account on every operation, so a change (rights, limits, disabled) applies at once, also to
//! sessions already open.

use crate::rights::Rights;
use std::net::IpAddr;

/// What the FTP service needs to know of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Account {
    /// The login name.
    pub name: String,
    /// The account's folder in the store, e.g. `/agent01` (`/`: all of it).
    pub home: String,
    /// What the account may do in its home.
    pub rights: Rights,
    /// Bytes per second, shared by all of the account's sessions; 0 = unlimited.
    pub upload_limit: u64,
    /// Bytes per second, shared by all of the account's sessions; 0 = unlimited.
    pub download_limit: u64,
    /// Networks the account may log in from; empty = anywhere.
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// A disabled account cannot log in, and its open sessions stop working.
    pub enabled: bool,
    /// Control and data connections must be encrypted (AUTH TLS before USER, PROT P).
    pub tls_required: bool,
    /// Changes whenever the account's password changes (any value; e.g. a hash of the stored
    /// password hash). A session that logged in under another value is refused from its next
    /// command on: a new password ends the sessions opened with the old one.
    pub credentials: u64,
}

impl Account {
    /// An enabled account with these rights, no limits, from anywhere, TLS optional.
    pub fn new(name: impl Into<String>, home: impl Into<String>, rights: Rights) -> Account {
        Account {
            name: name.into(),
            home: home.into(),
            rights,
            upload_limit: 0,
            download_limit: 0,
            allowed_ips: Vec::new(),
            enabled: true,
            tls_required: false,
            credentials: 0,
        }
    }

    /// Whether an address may log in to this account.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.allowed_ips.is_empty() || self.allowed_ips.iter().any(|net| net.contains(&ip))
    }
}

/// Where the FTP service finds its accounts.
pub trait Accounts: Send + Sync + 'static {
    /// The account named `name` if `password` is its password. May be slow (a password hash):
    /// the service calls it on a blocking thread, a few at a time.
    fn verify(&self, name: &str, password: &str) -> Option<Account>;
    /// The account as it is now.
    fn get(&self, name: &str) -> Option<Account>;
    /// A counter that changes whenever accounts change (limits are then applied again to
    /// running transfers). `None`: accounts never change while the service runs.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack listener) compare as IPv4.
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
