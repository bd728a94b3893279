//! The agent's main loop: scan, dispatch ready files to the upload workers, record outcomes,
//! publish status; react to file-system events; stop cleanly.

use crate::config::AgentConfig;
use crate::scan::{self, Matcher};
use crate::state::{FileState, StateDb};
use crate::status;
use crate::upload::{Job, Outcome, Uploader};
use logarchive_ftp::client::{ClientConfig, FtpUrl};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{failed} file(s) could not be archived; last error: {last_error}")]
    Incomplete { failed: usize, last_error: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run until told to stop.
    Forever,
    /// One full pass: archive what is there, wait for the queue to drain, return.
    Once,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub files_archived: u64,
    pub bytes_sent: u64,
    pub scans: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Attempts per file before `--once` gives up on it.
const ONCE_ATTEMPTS: i64 = 4;

pub async fn run(
    cfg: AgentConfig,
    mode: Mode,
    mut shutdown: watch::Receiver<bool>,
) -> Result<RunSummary, AgentError> {
    let mut matchers: Vec<Matcher> = cfg
        .sources
        .iter()
        .map(Matcher::new)
        .collect::<Result<_, _>>()
        .map_err(|e| AgentError::Config(e.to_string()))?;
    let url = FtpUrl::parse(&cfg.server).map_err(|e| AgentError::Config(format!("server: {e}")))?;
    let password = cfg.password().map_err(AgentError::Config)?;
    let mut client_cfg = ClientConfig::new(url.host.clone(), url.port, cfg.user.clone(), password);
    client_cfg.tls = url.tls_mode(cfg.ca_file.clone(), false);
    client_cfg.speed_limit = cfg.upload_limit.0;
    // The agent has its own retry schedule; the client should fail fast to it.
    client_cfg.reconnect_attempts = 2;
    client_cfg.connect_timeout = Duration::from_secs(10);
    client_cfg.io_timeout = Duration::from_secs(60);
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let _metrics_server = match cfg.metrics_listen {
        Some(addr) => Some(
            crate::metrics::serve(addr, cfg.agent_id.clone(), Arc::clone(&metrics))
                .await
                .map_err(|e| AgentError::Config(format!("metrics_listen {addr}: {e}")))?,
        ),
        None => None,
    };
    let mut db = StateDb::open(&cfg.state_db)?;
    let keys: Vec<_> = matchers
        .iter()
        .map(|m| (m.root.as_path(), m.prefix()))
        .collect();
    let ids = db.source_ids(&keys)?;
    for (m, id) in matchers.iter_mut().zip(ids) {
        m.id = id;
    }
    let mut seen = scan::Seen::load(&db)?;
    let scratch = cfg
        .state_db
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);

    // Workers: each its own connection.
    let (job_tx, job_rx) = mpsc::channel::<Job>(cfg.max_parallel_uploads);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, mut done_rx) = mpsc::channel::<(Job, Outcome)>(cfg.max_parallel_uploads * 2);
    let mut workers = Vec::new();
    let hash_states = crate::upload::HashStates::default();
    for _ in 0..cfg.max_parallel_uploads {
        let (rx, tx, cc) = (Arc::clone(&job_rx), done_tx.clone(), client_cfg.clone());
        let states = hash_states.clone();
        workers.push(tokio::spawn(async move {
            let mut up = Uploader::new(cc, states);
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let outcome = up.run(&job).await;
                if tx.send((job, outcome)).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(done_tx);

    // File-system events: a closed file is usually archived within a second. An overflow or a
    // lost watch only means "scan everything".
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Option<(PathBuf, bool)>>();
    let _watcher = watch_sources(&matchers, ev_tx.clone());

    let mut status_up = Uploader::new(client_cfg.clone(), hash_states.clone());
    let mut summary = RunSummary::default();
    let mut inflight: HashSet<i64> = HashSet::new();
    let mut given_up: HashMap<i64, String> = HashMap::new();
    let mut next_scan = tokio::time::Instant::now();
    let mut next_status = tokio::time::Instant::now() + cfg.status_interval;
    let mut completed_since_status = 0u64;
    let quiet_ms = cfg.quiet_period.as_millis() as i64;
    let mut stopping = false;

    loop {
        if !stopping && tokio::time::Instant::now() >= next_scan {
            let r = scan::scan_all(&mut db, &mut seen, &matchers, now_ms())?;
            db.set_meta("last_scan_ms", &now_ms().to_string())?;
            summary.scans += 1;
            metrics
                .scans
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics
                .last_scan_ms
                .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
            update_gauges(&metrics, &db);
            tracing::debug!(?r, "scan");
            next_scan = tokio::time::Instant::now() + cfg.scan_interval;
        }

        // Dispatch what is ready, oldest first.
        let mut wake_at: Option<i64> = None;
        if !stopping {
            let now = now_ms();
            let free = cfg.max_parallel_uploads.saturating_sub(inflight.len());
            if free > 0 {
                for row in db.ready(now, quiet_ms, free + inflight.len() + given_up.len())? {
                    if inflight.len() >= cfg.max_parallel_uploads {
                        break;
                    }
                    if inflight.contains(&row.id) || given_up.contains_key(&row.id) {
                        continue;
                    }
                    // A row of a source that is no longer configured has nothing left to read.
                    let Some(source) = matchers.iter().find(|m| m.id == row.source) else {
                        db.set_state(
                            row.id,
                            FileState::Lost,
                            Some("its source is no longer configured"),
                        )?;
                        continue;
                    };
                    let job = Job {
                        id: row.id,
                        local: source.root.join(&row.rel),
                        remote: row.remote.clone(),
                        archived_size: row.archived_size,
                        dev: row.dev,
                        ino: row.ino,
                    };
                    if job_tx.try_send(job).is_ok() {
                        inflight.insert(row.id);
                    }
                }
            }
            if inflight.len() < cfg.max_parallel_uploads {
                // Something pending but not ready yet (quiet period, backoff): wake up for it.
                wake_at = db.next_ready_ms(quiet_ms)?.filter(|t| *t > now);
            }
        }

        if mode == Mode::Once && inflight.is_empty() && wake_at.is_none() {
            // Nothing in flight, nothing waiting: one more look, then done.
            let r = scan::scan_all(&mut db, &mut seen, &matchers, now_ms())?;
            summary.scans += 1;
            let waiting = (db.pending_count()? as usize).saturating_sub(given_up.len());
            if r.new == 0 && r.changed == 0 && r.new_generations == 0 && waiting == 0 {
                break;
            }
            continue;
        }
        if stopping && inflight.is_empty() {
            break;
        }

        let sleep_until = {
            let mut t = if mode == Mode::Once {
                tokio::time::Instant::now() + Duration::from_secs(1)
            } else {
                next_scan
            };
            t = t.min(next_status);
            if let Some(w) = wake_at {
                let d = Duration::from_millis((w - now_ms()).max(1) as u64);
                t = t.min(tokio::time::Instant::now() + d);
            }
            t
        };
        tokio::select! {
            Some((job, outcome)) = done_rx.recv() => {
                inflight.remove(&job.id);
                match outcome {
                    Outcome::Archived { size, sha256, sent } => {
                        db.archived(job.id, size, &sha256, now_ms())?;
                        summary.files_archived += 1;
                        summary.bytes_sent += sent;
                        completed_since_status += 1;
                        metrics.files_archived.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        metrics.bytes_sent.fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
                    }
                    Outcome::Changed => {
                        scan::observe_path(&db, &matchers, &job.local, now_ms())?;
                    }
                    Outcome::Gone => {
                        db.set_state(job.id, FileState::Lost, Some("deleted locally before it was fully archived"))?;
                    }
                    Outcome::Failed(e) => {
                        let row = db.get(job.id)?;
                        let attempts = row.as_ref().map_or(0, |r| r.attempts) + 1;
                        let cap = if mode == Mode::Once { Duration::from_secs(2) } else { cfg.max_backoff };
                        let backoff = Duration::from_secs(1u64 << attempts.clamp(0, 20) as u64).min(cap);
                        let jitter = backoff.mul_f64(rand::random::<f64>() * 0.2);
                        let msg = e.to_string();
                        metrics.upload_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(file = %job.local.display(), attempts, "upload failed: {msg}");
                        db.failed(job.id, &msg, now_ms() + (backoff + jitter).as_millis() as i64)?;
                        if mode == Mode::Once && attempts >= ONCE_ATTEMPTS {
                            given_up.insert(job.id, format!("{}: {msg}", job.local.display()));
                        }
                    }
                }
                if inflight.is_empty() && completed_since_status > 0 {
                    publish_status(status_bytes(&cfg, &db, &metrics), &mut status_up, &scratch).await;
                    completed_since_status = 0;
                    next_status = tokio::time::Instant::now() + cfg.status_interval;
                }
            }
            Some(ev) = ev_rx.recv() => {
                match ev {
                    Some((path, closed)) => {
                        if let Some(id) = scan::observe_path(&db, &matchers, &path, now_ms())? {
                            if closed {
                                db.mark_closed(id)?;
                            }
                        }
                    }
                    None => next_scan = tokio::time::Instant::now(),
                }
            }
            _ = tokio::time::sleep_until(sleep_until) => {
                if tokio::time::Instant::now() >= next_status {
                    publish_status(status_bytes(&cfg, &db, &metrics), &mut status_up, &scratch).await;
                    next_status = tokio::time::Instant::now() + cfg.status_interval;
                }
            }
            changed = shutdown.changed(), if !stopping => {
                // A dropped sender means nobody can ask us to stop any more: run on.
                if changed.is_ok() && *shutdown.borrow() {
                    tracing::info!("stopping: letting {} upload(s) finish their step", inflight.len());
                    stopping = true;
                }
            }
        }
        if stopping && !inflight.is_empty() {
            // Uploads resume from the server's size next time: waiting long is never needed.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !inflight.is_empty() {
                match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                    Ok(Some((job, Outcome::Archived { size, sha256, sent }))) => {
                        inflight.remove(&job.id);
                        db.archived(job.id, size, &sha256, now_ms())?;
                        summary.files_archived += 1;
                        summary.bytes_sent += sent;
                    }
                    Ok(Some((job, _))) => {
                        inflight.remove(&job.id);
                    }
                    _ => break,
                }
            }
            break;
        }
    }
    drop(job_tx);
    for w in workers {
        w.abort();
    }
    if !stopping {
        publish_status(status_bytes(&cfg, &db, &metrics), &mut status_up, &scratch).await;
    }
    if mode == Mode::Once && !given_up.is_empty() {
        let last_error = given_up.values().next().cloned().unwrap_or_default();
        return Err(AgentError::Incomplete {
            failed: given_up.len(),
            last_error,
        });
    }
    Ok(summary)
}

fn update_gauges(m: &crate::metrics::Metrics, db: &StateDb) {
    if let Ok(t) = db.totals() {
        set_backlog(m, &t);
    }
}

fn set_backlog(m: &crate::metrics::Metrics, t: &crate::state::Totals) {
    use std::sync::atomic::Ordering::Relaxed;
    m.backlog_files.store(t.backlog_files, Relaxed);
    m.backlog_bytes.store(t.backlog_bytes, Relaxed);
}

/// The status document, built before any await (the database handle is not shared across
/// threads). Its totals also refresh the backlog gauges: one pass over the table for both.
fn status_bytes(cfg: &AgentConfig, db: &StateDb, m: &crate::metrics::Metrics) -> Option<Vec<u8>> {
    match status::build(cfg, db, now_ms()) {
        Ok(d) => {
            set_backlog(m, &d.totals);
            serde_json::to_vec_pretty(&d).ok()
        }
        Err(e) => {
            tracing::warn!("cannot build the status document: {e}");
            None
        }
    }
}

async fn publish_status(bytes: Option<Vec<u8>>, up: &mut Uploader, scratch: &std::path::Path) {
    let Some(bytes) = bytes else { return };
    if let Err(e) = up.put_status(&bytes, scratch).await {
        tracing::warn!("cannot publish the status document: {e}");
    }
}

fn watch_sources(
    matchers: &[Matcher],
    tx: mpsc::UnboundedSender<Option<(PathBuf, bool)>>,
) -> Option<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, EventKind};
    use notify::Watcher;
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
        Ok(ev) => {
            if ev.need_rescan() {
                let _ = tx.send(None);
                return;
            }
            let closed = matches!(
                ev.kind,
                EventKind::Access(AccessKind::Close(AccessMode::Write))
            );
            let relevant = closed || matches!(ev.kind, EventKind::Create(_) | EventKind::Modify(_));
            if relevant {
                for p in ev.paths {
                    let _ = tx.send(Some((p, closed)));
                }
            }
        }
        Err(_) => {
            let _ = tx.send(None);
        }
    })
    .map_err(|e| tracing::warn!("file-system events unavailable ({e}); relying on periodic scans"))
    .ok()?;
    for m in matchers {
        if let Err(e) = w.watch(&m.root, notify::RecursiveMode::Recursive) {
            tracing::warn!(root = %m.root.display(), "cannot watch ({e}); relying on periodic scans");
        }
    }
    Some(w)
}
