//! Login lockouts counted across the servers that share a PostgreSQL database: an attacker
//! spreading guesses over three servers gets the tries of one. Each server writes the outcome of
//! every login attempt (FTP and web, each its own count) to `login_events` and notifies
//! `logarchive_logins`; every server listens, and counts the others' outcomes into its own
//! lockouts (`Lockout::apply_remote`) within milliseconds (at most a second: the listener also
//! polls). A server that starts counts the failures of the last window the others saw.
//!
//! Nothing here blocks a login: outcomes go to a writer thread through a bounded queue (full:
//! the outcome is counted here only, and said at DEBUG). While PostgreSQL is down each server
//! counts on its own, as a single server does. Rows older than the longest window are deleted.

use crate::pg::PgSettings;
use logarchive_ftp::server::{Lockout, LockoutLedger};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Outcomes waiting for the writer at most.
const QUEUE: usize = 4096;
/// Outcomes written per statement at most.
const BATCH: usize = 512;
/// The listener's poll when no notification comes.
const POLL: Duration = Duration::from_secs(1);
/// A transaction that committed late may hold outcomes older than the last one seen: each
/// read looks this far back again (ids already applied are skipped).
const OVERLAP_MS: i64 = 5_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One attempt's outcome on this server.
#[derive(Debug)]
struct Outcome {
    service: &'static str,
    name: String,
    ip: IpAddr,
    success: bool,
    at_ms: i64,
}

/// Hands a lockout's outcomes to the writer.
#[derive(Debug)]
struct Ledger {
    service: &'static str,
    queue: mpsc::SyncSender<Outcome>,
}

impl LockoutLedger for Ledger {
    fn record(&self, user: &str, ip: IpAddr, success: bool) {
        let o = Outcome {
            service: self.service,
            // PostgreSQL's text holds no NUL; such a name is no account's anyway.
            name: user.replace('\0', "\u{fffd}"),
            ip,
            success,
            at_ms: now_ms(),
        };
        if self.queue.try_send(o).is_err() {
            tracing::debug!("shared login lockouts: queue full, an outcome is counted here only");
        }
    }
}

/// The writer and the listener; both end when this is dropped (within a second).
#[derive(Debug)]
pub struct SharedLockouts {
    stop: Arc<AtomicBool>,
}

impl Drop for SharedLockouts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl SharedLockouts {
    /// Shares the FTP service's and the web's lockouts through `settings`' database.
    pub fn start(
        settings: &PgSettings,
        ftp: &Arc<Lockout>,
        web: &Arc<Lockout>,
    ) -> std::io::Result<SharedLockouts> {
        let stop = Arc::new(AtomicBool::new(false));
        // Which rows are this server's own (not applied again).
        let me = rand::random::<i64>();
        let (queue, outcomes) = mpsc::sync_channel(QUEUE);
        for (service, lockout) in [("ftp", ftp), ("web", web)] {
            let ledger = Ledger {
                service,
                queue: queue.clone(),
            };
            if lockout.set_ledger(Arc::new(ledger)).is_err() {
                tracing::debug!("the {service} lockout is shared already");
            }
        }
        drop(queue);
        let keep_ms = ftp.window().max(web.window()).as_millis() as i64;
        let (s, st) = (settings.clone(), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("lockouts-out".into())
            .spawn(move || write_outcomes(&s, me, &outcomes, &st))?;
        let (s, st) = (settings.clone(), Arc::clone(&stop));
        let lockouts = [("ftp", Arc::clone(ftp)), ("web", Arc::clone(web))];
        std::thread::Builder::new()
            .name("lockouts-in".into())
            .spawn(move || apply_others(&s, me, &lockouts, keep_ms, &st))?;
        Ok(SharedLockouts { stop })
    }
}

/// The writer: outcomes in batches, each batch one statement and a notification.
fn write_outcomes(
    settings: &PgSettings,
    me: i64,
    outcomes: &mpsc::Receiver<Outcome>,
    stop: &AtomicBool,
) {
    let mut conn: Option<postgres::Client> = None;
    let mut down_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let first = match outcomes.recv_timeout(POLL) {
            Ok(o) => o,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match outcomes.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let written = (|| {
            if conn.as_ref().is_none_or(|c| c.is_closed()) {
                conn = Some(settings.connect()?);
            }
            let Some(c) = conn.as_mut() else {
                unreachable!("connected above")
            };
            let service: Vec<&str> = batch.iter().map(|o| o.service).collect();
            let name: Vec<&str> = batch.iter().map(|o| o.name.as_str()).collect();
            let ip: Vec<String> = batch.iter().map(|o| o.ip.to_string()).collect();
            let success: Vec<bool> = batch.iter().map(|o| o.success).collect();
            let at: Vec<i64> = batch.iter().map(|o| o.at_ms).collect();
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO login_events (server, service, name, ip, success, at_ms) \
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::bool[], \
                                          $6::bigint[])",
                &[&me, &service, &name, &ip, &success, &at],
            )?;
            tx.execute("SELECT pg_notify('logarchive_logins', '')", &[])?;
            tx.commit()
        })();
        match written {
            Ok(()) => down_since = None,
            Err(e) => {
                conn = None;
                // Counted here all the same; the others miss these few.
                if down_since.is_none() {
                    tracing::debug!(
                        "shared login lockouts: {} outcomes not shared: {e}",
                        batch.len()
                    );
                }
                down_since.get_or_insert_with(Instant::now);
                std::thread::sleep(POLL);
            }
        }
    }
}

/// The listener: the other servers' outcomes since the last look, on each notification and
/// every second; old rows deleted now and then.
fn apply_others(
    settings: &PgSettings,
    me: i64,
    lockouts: &[(&'static str, Arc<Lockout>); 2],
    keep_ms: i64,
    stop: &AtomicBool,
) {
    let mut conn: Option<postgres::Client> = None;
    // At the start: the failures of the last window.
    let mut since = now_ms() - keep_ms;
    let mut applied: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    let mut pruned = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let round = (|| -> Result<(), postgres::Error> {
            if conn.as_ref().is_none_or(|c| c.is_closed()) {
                let mut c = settings.connect()?;
                c.batch_execute("LISTEN logarchive_logins")?;
                conn = Some(c);
            }
            let Some(c) = conn.as_mut() else {
                unreachable!("connected above")
            };
            let rows = c.query(
                "SELECT id, service, name, ip, success, at_ms FROM login_events \
                 WHERE server <> $1 AND at_ms >= $2 ORDER BY id",
                &[&me, &since],
            )?;
            let now = now_ms();
            for r in rows {
                let (id, at): (i64, i64) = (r.get(0), r.get(5));
                if applied.insert(id, at).is_some() {
                    continue;
                }
                let (service, name, ip): (&str, &str, &str) = (r.get(1), r.get(2), r.get(3));
                let Ok(ip) = ip.parse::<IpAddr>() else {
                    continue;
                };
                let ago = Duration::from_millis((now - at).max(0) as u64);
                if let Some((_, l)) = lockouts.iter().find(|(s, _)| *s == service) {
                    l.apply_remote(name, ip, r.get(4), ago);
                }
                since = since.max(at - OVERLAP_MS);
            }
            applied.retain(|_, at| *at >= since);
            if pruned.elapsed() > Duration::from_secs(60) {
                c.execute(
                    "DELETE FROM login_events WHERE at_ms < $1",
                    &[&(now - keep_ms - 60_000)],
                )?;
                pruned = Instant::now();
            }
            // Until the next notification, or a second.
            use postgres::fallible_iterator::FallibleIterator;
            c.notifications().timeout_iter(POLL).next()?;
            Ok(())
        })();
        if let Err(e) = round {
            tracing::debug!("shared login lockouts: {e}");
            conn = None;
            std::thread::sleep(POLL);
        }
    }
}
