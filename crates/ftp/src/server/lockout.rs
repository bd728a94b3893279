//! Failed-login lockout, by account name and by address: after `max_failures` failures within
//! `window`, further logins for that name (or from that address) are refused until `window` has
//! passed without failures. Checked before the password is even looked at.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
}

/// Failed logins counted per name and per address within a window; a name or address with too many is refused until the window has passed.
#[derive(Debug)]
pub struct Lockout {
    max_failures: u32,
    window: Duration,
    by_user: Mutex<HashMap<String, Record>>,
    by_ip: Mutex<HashMap<IpAddr, Record>>,
}

impl Lockout {
    /// A lockout after `max_failures` failures within `window` (0 failures: never).
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Lockout {
            max_failures,
            window,
            by_user: Mutex::default(),
            by_ip: Mutex::default(),
        }
    }

    fn locked<K: std::hash::Hash + Eq>(&self, map: &Mutex<HashMap<K, Record>>, key: &K) -> bool {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(key) {
            Some(r) if r.last.elapsed() >= self.window => {
                m.remove(key);
                false
            }
            Some(r) => self.max_failures > 0 && r.failures >= self.max_failures,
            None => false,
        }
    }

    /// Whether a login for `user` from `ip` must be refused without checking the password.
    pub fn is_locked(&self, user: &str, ip: IpAddr) -> bool {
        self.locked(&self.by_user, &user.to_string()) || self.locked(&self.by_ip, &ip)
    }

    /// Counts a failed login of `user` from `ip`.
    pub fn failed(&self, user: &str, ip: IpAddr) {
        let now = Instant::now();
        let bump = |r: &mut Record| {
            if r.last.elapsed() >= self.window {
                r.failures = 0;
            }
            r.failures += 1;
            r.last = now;
        };
        {
            let mut m = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
            // Bound the memory an attacker can make us spend on invented names.
            if m.len() > 100_000 {
                m.retain(|_, r| r.last.elapsed() < self.window);
            }
            bump(m.entry(user.to_string()).or_insert(Record {
                failures: 0,
                last: now,
            }));
        }
        let mut m = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 100_000 {
            m.retain(|_, r| r.last.elapsed() < self.window);
        }
        bump(m.entry(ip).or_insert(Record {
            failures: 0,
            last: now,
        }));
    }

    /// A successful login clears the name's and the address's counts.
    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        self.by_user
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user);
        self.by_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_by_user_and_by_address() {
        let l = Lockout::new(3, Duration::from_secs(60));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(!l.is_locked("u", a));
            l.failed("u", a);
        }
        assert!(l.is_locked("u", b), "locked by name from any address");
        assert!(l.is_locked("other", a), "locked by address for any name");
        assert!(!l.is_locked("other", b));
    }

    #[test]
    fn lock_expires() {
        let l = Lockout::new(1, Duration::from_millis(1));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        l.failed("u", a);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!l.is_locked("u", a));
    }
}
