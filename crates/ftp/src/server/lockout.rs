//! Failed-login lockout. Three counts, each forgotten `window` after its last failure:
//!
//! - per name *and* address: `max_failures` wrong passwords for one account from one address
//!   lock that pair;
//! - per address, across names: `4 × max_failures` lock the address (one address spraying
//!   names);
//! - per name, across addresses: `4 × max_failures` lock the name (many addresses guessing one
//!   password).
//!
//! The last two spare an account's usual addresses (where it logged in before): strangers can
//! never lock an account out of them, nor can a neighbour behind the same NAT.
//!
//! An attempt is counted *before* its password is checked ([`Lockout::begin`]): when the
//! attempts in progress could reach a limit, the next one waits for their outcome, so
//! concurrent guesses cannot all be checked before the first failure is counted, while honest
//! concurrent logins (an agent opening several sessions) only wait a moment. A success forgets
//! only its own pair's failures, never the address's or the name's.
//!
//! Several servers count together through a [`LockoutLedger`]: each outcome here is handed to
//! it, and the outcomes of the others come back through [`Lockout::apply_remote`], counted as if
//! they had happened here (at the moment they happened).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many more failures an address (across names) or a name (across addresses) may have
/// than one pair.
const WIDE: u32 = 4;
/// Entries kept per map at most; beyond it the expired ones go, then the oldest.
const MAX_ENTRIES: usize = 100_000;
/// How long a successful login marks its address as one the account uses.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    /// Attempts begun and not finished yet: they count against the limit.
    pending: u32,
    last: Instant,
}

impl Count {
    fn new(now: Instant) -> Count {
        Count {
            failures: 0,
            pending: 0,
            last: now,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    pairs: HashMap<(String, IpAddr), Count>,
    addrs: HashMap<IpAddr, Count>,
    names: HashMap<String, Count>,
    /// Pairs that logged in: the account's usual addresses.
    known: HashMap<(String, IpAddr), Instant>,
}

/// Where a [`Lockout`] sends the outcome of each login attempt, so other servers count it too
/// (they apply it with [`Lockout::apply_remote`]). Called on the login path: it must not block.
pub trait LockoutLedger: Send + Sync + std::fmt::Debug {
    /// An attempt of `user` from `ip` here ended: `success` or a failure.
    fn record(&self, user: &str, ip: IpAddr, success: bool);
}

/// Failed logins counted per name and address, per address and per name (see the module
/// documentation); shared by every login path that should count together (the FTP service,
/// and in logarchive also the web interface).
#[derive(Debug)]
pub struct Lockout {
    max_failures: u32,
    window: Duration,
    state: Mutex<State>,
    /// Woken whenever an attempt finishes.
    finished: tokio::sync::Notify,
    ledger: std::sync::OnceLock<Arc<dyn LockoutLedger>>,
}

/// One login attempt, counted from [`Lockout::begin`] on. Finish it with
/// [`Attempt::succeeded`] or [`Attempt::failed`]; dropped unfinished, it counts as a failure.
#[derive(Debug)]
#[must_use = "an attempt counts as a failure unless it is marked succeeded"]
pub struct Attempt {
    lockout: Option<Arc<Lockout>>,
    user: String,
    ip: IpAddr,
}

fn entry<'a, K: std::hash::Hash + Eq + Clone>(
    map: &'a mut HashMap<K, Count>,
    key: &K,
    now: Instant,
    window: Duration,
) -> &'a mut Count {
    if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
        map.retain(|_, c| c.pending > 0 || now.duration_since(c.last) < window);
        if map.len() >= MAX_ENTRIES {
            if let Some(oldest) = map
                .iter()
                .filter(|(_, c)| c.pending == 0)
                .min_by_key(|(_, c)| c.last)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
    }
    let c = map.entry(key.clone()).or_insert_with(|| Count::new(now));
    if c.pending == 0 && now.duration_since(c.last) >= window {
        c.failures = 0;
    }
    c
}

/// Where a count stands against its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    Free,
    /// Attempts in progress could reach the limit: wait for their outcome.
    Busy,
    /// The failures reached the limit.
    Locked,
}

fn standing(c: Option<&Count>, limit: u32, now: Instant, window: Duration) -> Standing {
    let Some(c) = c else {
        return Standing::Free;
    };
    let failures = if now.duration_since(c.last) >= window {
        0
    } else {
        c.failures
    };
    if failures >= limit {
        Standing::Locked
    } else if failures + c.pending >= limit {
        Standing::Busy
    } else {
        Standing::Free
    }
}

/// How long a login waits for the attempts in progress before it is refused.
const BUSY_WAIT: Duration = Duration::from_secs(30);

impl Lockout {
    /// A lockout after `max_failures` failures of one name from one address within `window`
    /// (0 failures: never).
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Lockout {
            max_failures,
            window,
            state: Mutex::default(),
            finished: tokio::sync::Notify::new(),
            ledger: std::sync::OnceLock::new(),
        }
    }

    /// The failure window (how long a failure counts).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Sends every outcome from now on to `ledger` as well (once; a second ledger is refused).
    pub fn set_ledger(&self, ledger: Arc<dyn LockoutLedger>) -> Result<(), Arc<dyn LockoutLedger>> {
        self.ledger.set(ledger)
    }

    /// Counts an attempt that ended on another server `ago` ago: a failure against the pair,
    /// the address and the name; a success forgets the pair's failures and marks the address
    /// as one the account uses. What is older than the window changes nothing.
    pub fn apply_remote(&self, user: &str, ip: IpAddr, success: bool, ago: Duration) {
        if self.max_failures == 0 || (!success && ago >= self.window) {
            return;
        }
        let now = Instant::now();
        let at = now.checked_sub(ago).unwrap_or(now);
        let w = self.window;
        let mut s = self.state();
        let pair = (user.to_string(), ip);
        if success {
            s.pairs.remove(&pair);
            if s.known.len() < MAX_ENTRIES || s.known.contains_key(&pair) {
                s.known.insert(pair, at);
            }
        } else {
            let fail = |c: &mut Count| {
                c.failures = c.failures.saturating_add(1);
                c.last = c.last.max(at);
            };
            fail(entry(&mut s.pairs, &pair, now, w));
            fail(entry(&mut s.addrs, &ip, now, w));
            fail(entry(&mut s.names, &user.to_string(), now, w));
        }
        drop(s);
        self.finished.notify_waiters();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn standing_in(&self, s: &State, user: &str, ip: IpAddr, now: Instant) -> Standing {
        if self.max_failures == 0 {
            return Standing::Free;
        }
        let pair = (user.to_string(), ip);
        let wide = self.max_failures.saturating_mul(WIDE);
        let usual = s
            .known
            .get(&pair)
            .is_some_and(|t| now.duration_since(*t) < KNOWN_FOR);
        let mut worst = standing(s.pairs.get(&pair), self.max_failures, now, self.window);
        if !usual {
            worst = worst
                .max(standing(s.addrs.get(&ip), wide, now, self.window))
                .max(standing(s.names.get(user), wide, now, self.window));
        }
        worst
    }

    /// Whether a login for `user` from `ip` would be refused now for its failures.
    pub fn is_locked(&self, user: &str, ip: IpAddr) -> bool {
        self.standing_in(&self.state(), user, ip, Instant::now()) == Standing::Locked
    }

    /// Begins a login attempt of `user` from `ip`: `None` if it must be refused without looking
    /// at the password; otherwise the attempt, already counted against the limits. Waits (at
    /// most 30 s) while the attempts in progress could reach a limit.
    pub async fn begin(self: &Arc<Self>, user: &str, ip: IpAddr) -> Option<Attempt> {
        let deadline = tokio::time::Instant::now() + BUSY_WAIT;
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            // Registered before the state is read: a finish in between is not missed.
            finished.as_mut().enable();
            match self.try_begin(user, ip) {
                Ok(attempt) => return Some(attempt),
                Err(Standing::Busy) => {
                    if tokio::time::timeout_at(deadline, finished).await.is_err() {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    fn try_begin(self: &Arc<Self>, user: &str, ip: IpAddr) -> Result<Attempt, Standing> {
        let now = Instant::now();
        let mut s = self.state();
        match self.standing_in(&s, user, ip, now) {
            Standing::Free => {}
            other => return Err(other),
        }
        let w = self.window;
        entry(&mut s.pairs, &(user.to_string(), ip), now, w).pending += 1;
        entry(&mut s.addrs, &ip, now, w).pending += 1;
        entry(&mut s.names, &user.to_string(), now, w).pending += 1;
        Ok(Attempt {
            lockout: Some(Arc::clone(self)),
            user: user.to_string(),
            ip,
        })
    }

    fn finish(&self, user: &str, ip: IpAddr, success: bool) {
        let now = Instant::now();
        let w = self.window;
        let mut s = self.state();
        let pair = (user.to_string(), ip);
        let settle = |c: &mut Count| {
            c.pending = c.pending.saturating_sub(1);
            if !success {
                c.failures = c.failures.saturating_add(1);
                c.last = now;
            }
        };
        settle(entry(&mut s.pairs, &pair, now, w));
        settle(entry(&mut s.addrs, &ip, now, w));
        settle(entry(&mut s.names, &user.to_string(), now, w));
        if success {
            // Only this pair's failures are forgiven: an address's or a name's are not.
            s.pairs.remove(&pair);
            if s.known.len() >= MAX_ENTRIES {
                s.known.retain(|_, t| now.duration_since(*t) < KNOWN_FOR);
            }
            if s.known.len() < MAX_ENTRIES || s.known.contains_key(&pair) {
                s.known.insert(pair, now);
            }
        }
        drop(s);
        self.finished.notify_waiters();
        if let Some(l) = self.ledger.get() {
            l.record(user, ip, success);
        }
    }
}

impl Attempt {
    /// The password was right: the pair's failures are forgotten and the address becomes one
    /// the account uses.
    pub fn succeeded(mut self) {
        if let Some(l) = self.lockout.take() {
            l.finish(&self.user, self.ip, true);
        }
    }

    /// The password was wrong.
    pub fn failed(mut self) {
        if let Some(l) = self.lockout.take() {
            l.finish(&self.user, self.ip, false);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(l) = self.lockout.take() {
            l.finish(&self.user, self.ip, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    async fn fail(l: &Arc<Lockout>, user: &str, from: IpAddr) {
        l.begin(user, from).await.expect("not locked yet").failed();
    }

    #[tokio::test]
    async fn a_pair_locks_after_max_failures_and_the_lock_expires() {
        let l = Arc::new(Lockout::new(3, Duration::from_millis(200)));
        let a = ip("127.0.0.1");
        for _ in 0..3 {
            fail(&l, "u", a).await;
        }
        assert!(l.begin("u", a).await.is_none());
        assert!(l.is_locked("u", a));
        // Another name from the address, and the name from another address, still get in.
        l.begin("other", a).await.expect("other name").succeeded();
        l.begin("u", ip("127.0.0.2"))
            .await
            .expect("other address")
            .failed();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!l.is_locked("u", a), "the lock ends with the window");
    }

    #[tokio::test]
    async fn concurrent_guesses_wait_for_the_outcome_of_those_before_them() {
        let l = Arc::new(Lockout::new(5, Duration::from_secs(60)));
        let a = ip("10.0.0.1");
        let checked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let guesses: Vec<_> = (0..60)
            .map(|_| {
                let (l, checked) = (Arc::clone(&l), Arc::clone(&checked));
                tokio::spawn(async move {
                    if let Some(at) = l.begin("agent01", a).await {
                        checked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        at.failed();
                    }
                })
            })
            .collect();
        for g in guesses {
            g.await.unwrap();
        }
        assert_eq!(checked.load(std::sync::atomic::Ordering::SeqCst), 5);
        assert!(l.begin("agent01", a).await.is_none());
    }

    #[tokio::test]
    async fn concurrent_honest_logins_all_get_in() {
        let l = Arc::new(Lockout::new(2, Duration::from_secs(60)));
        let a = ip("10.0.0.1");
        let logins: Vec<_> = (0..12)
            .map(|_| {
                let l = Arc::clone(&l);
                tokio::spawn(async move {
                    let at = l.begin("agent01", a).await;
                    tokio::task::yield_now().await;
                    at.map(|at| at.succeeded()).is_some()
                })
            })
            .collect();
        for g in logins {
            assert!(g.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_success_does_not_forgive_the_address_or_the_name() {
        let l = Arc::new(Lockout::new(2, Duration::from_secs(60)));
        let a = ip("10.0.0.1");
        // An attacker with one account of its own sprays other names from one address.
        let mut refused = false;
        for i in 0..40 {
            l.begin("mine", a).await.expect("own account").succeeded();
            match l.begin(&format!("victim{i}"), a).await {
                Some(at) => at.failed(),
                None => {
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused, "the address is throttled across names");
        l.begin("mine", a)
            .await
            .expect("an account keeps its usual address")
            .succeeded();
        assert!(l.begin("victim99", a).await.is_none());
    }

    #[tokio::test]
    async fn strangers_cannot_lock_an_account_out_of_its_usual_address() {
        let l = Arc::new(Lockout::new(2, Duration::from_secs(60)));
        let home = ip("192.0.2.10");
        l.begin("agent01", home).await.unwrap().succeeded();
        // Many addresses, each a few wrong passwords for agent01.
        for i in 0..50 {
            if let Some(at) = l.begin("agent01", ip(&format!("198.51.100.{i}"))).await {
                at.failed();
            }
        }
        assert!(
            l.begin("agent01", ip("198.51.100.200")).await.is_none(),
            "the name is locked for new addresses"
        );
        l.begin("agent01", home)
            .await
            .expect("its usual address still gets in")
            .succeeded();
    }

    #[tokio::test]
    async fn failures_on_other_servers_count_here_and_a_ledger_hears_ours() {
        #[derive(Debug, Default)]
        struct Heard(Mutex<Vec<(String, bool)>>);
        impl LockoutLedger for Heard {
            fn record(&self, user: &str, _ip: IpAddr, success: bool) {
                self.0.lock().unwrap().push((user.to_string(), success));
            }
        }
        let l = Arc::new(Lockout::new(3, Duration::from_secs(60)));
        let heard = Arc::new(Heard::default());
        l.set_ledger(heard.clone()).unwrap();
        let a = ip("192.0.2.9");
        // Two failures elsewhere, one of them too old to count, then two here: locked at 3.
        l.apply_remote("bob", a, false, Duration::from_secs(5));
        l.apply_remote("bob", a, false, Duration::from_secs(61));
        fail(&l, "bob", a).await;
        assert!(!l.is_locked("bob", a));
        fail(&l, "bob", a).await;
        assert!(l.is_locked("bob", a), "the other server's failure counted");
        assert_eq!(
            *heard.0.lock().unwrap(),
            [("bob".to_string(), false), ("bob".to_string(), false)],
            "the ledger hears this server's outcomes, not the replayed ones"
        );
        // A success elsewhere forgives the pair here too.
        l.apply_remote("bob", a, true, Duration::from_millis(1));
        assert!(!l.is_locked("bob", a));
    }

    #[tokio::test]
    async fn an_abandoned_attempt_counts_as_a_failure() {
        let l = Arc::new(Lockout::new(1, Duration::from_secs(60)));
        let a = ip("10.0.0.1");
        drop(l.begin("u", a).await.unwrap());
        assert!(l.is_locked("u", a));
    }
}
