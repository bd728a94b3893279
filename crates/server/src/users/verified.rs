//! Passwords that passed argon2 recently, so an account that opens many sessions in a burst (an
//! agent's parallel connections, a script calling the API with basic auth) pays the ~20 ms
//! password hash once a minute instead of once per login.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long credentials stay verified without another argon2 check.
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// Bounds the memory the cache can take.
const MAX_VERIFIED: usize = 10_000;

/// Credentials that passed argon2 recently. An entry is a keyed SHA-256 of the name, the password
/// and the account's current PHC hash, so it never holds a usable password, and a changed
/// password (a new PHC string) misses at once. Enabled, role, address and TLS are checked on
/// every login and request anyway, so disabling or removing an account needs no invalidation.
pub(super) struct VerifiedCache {
    /// Per-process random key: the entries cannot be checked against guesses outside this process.
    secret: [u8; 32],
    expires: Mutex<HashMap<[u8; 32], Instant>>,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache").finish_non_exhaustive()
    }
}

impl VerifiedCache {
    pub(super) fn new() -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        VerifiedCache {
            secret,
            expires: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn key(&self, name: &str, password: &str, phc: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.secret);
        for part in [name, password, phc] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.expires.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn contains(&self, key: &[u8; 32]) -> bool {
        let now = Instant::now();
        let mut m = self.map();
        match m.get(key) {
            Some(t) if *t > now => true,
            Some(_) => {
                m.remove(key);
                false
            }
            None => false,
        }
    }

    pub(super) fn insert(&self, key: [u8; 32]) {
        let now = Instant::now();
        let mut m = self.map();
        if m.len() >= MAX_VERIFIED {
            m.retain(|_, t| *t > now);
            if m.len() >= MAX_VERIFIED {
                m.clear();
            }
        }
        m.insert(key, now + VERIFIED_FOR);
    }
}
