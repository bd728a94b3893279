//! The agent's wiring: the tracker on a thread of its own (scans, events, the state DB), upload
//! workers on the async runtime (each its own FTP connection), a status publisher, and a clean
//! stop. Everything that wakes the tracker goes through the [`Inbox`].

use crate::config::AgentConfig;
use crate::inbox::{Batch, Inbox};
use crate::scan::Matcher;
use crate::servers::Servers;
use crate::state::StateDb;
use crate::status;
use crate::track::{OpenFiles, Timing, Tracker};
use crate::upload::{HashStates, Job, Uploader};
use logarchive_ftp::client::{ClientConfig, FtpUrl};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
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

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Least time between two looks at file-system events (see `track_loop`).
const EVENT_CYCLE: Duration = Duration::from_millis(50);

/// Least time between two status documents published after batches of uploads.
const STATUS_AFTER_BATCH_MS: i64 = 5_000;

/// Attempts per file before `--once` gives up on it.
const ONCE_ATTEMPTS: i64 = 4;

pub async fn run(
    cfg: AgentConfig,
    mode: Mode,
    mut shutdown: watch::Receiver<bool>,
) -> Result<RunSummary, AgentError> {
    // Patterns are checked before the state DB is opened: a bad config changes nothing.
    let mut matchers: Vec<Matcher> = cfg
        .sources
        .iter()
        .map(Matcher::new)
        .collect::<Result<_, _>>()
        .map_err(|e| AgentError::Config(e.to_string()))?;
    let password = cfg.password().map_err(AgentError::Config)?;
    let mut list = Vec::new();
    for u in cfg.server.urls() {
        let url = FtpUrl::parse(u).map_err(|e| AgentError::Config(format!("server {u}: {e}")))?;
        let mut c = ClientConfig::new(url.host.clone(), url.port, cfg.user.clone(), &password);
        c.tls = url.tls_mode(cfg.ca_file.clone(), false);
        c.speed_limit = cfg.upload_limit.0;
        // The agent has its own retry schedule (and other servers): the client fails fast to it.
        c.reconnect_attempts = 2;
        c.connect_timeout = Duration::from_secs(10);
        c.io_timeout = Duration::from_secs(60);
        list.push((u.to_string(), c));
    }
    let servers = Arc::new(Servers::new(list, cfg.failback_after));
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let _metrics_server = match cfg.metrics_listen {
        Some(addr) => Some(
            crate::metrics::serve(addr, cfg.agent_id.clone(), Arc::clone(&metrics))
                .await
                .map_err(|e| AgentError::Config(format!("metrics_listen {addr}: {e}")))?,
        ),
        None => None,
    };
    let db = StateDb::open(&cfg.state_db)?;
    let keys: Vec<_> = matchers
        .iter()
        .map(|m| (m.root.as_path(), m.prefix()))
        .collect();
    let ids = db.source_ids(&keys)?;
    for (m, id) in matchers.iter_mut().zip(ids) {
        m.id = id;
    }
    let scratch = cfg
        .state_db
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let scan_ms = cfg.scan_interval.as_millis() as i64;
    let timing = Timing {
        quiet_ms: cfg.quiet_period.as_millis() as i64,
        interval_ms: (cfg.max_lag.as_millis() / 2) as i64,
        orphan_wait_ms: if mode == Mode::Once {
            0
        } else {
            (3 * scan_ms).max(10_000)
        },
        max_backoff_ms: if mode == Mode::Once {
            2000
        } else {
            cfg.max_backoff.as_millis() as i64
        },
    };
    let inbox = Arc::new(Inbox::default());
    let mut tracker = Tracker::new(
        db,
        matchers.clone(),
        timing,
        scratch.join("agent-scratch"),
        OpenFiles::cap_from_rlimit(),
    )?;
    let ib = Arc::clone(&inbox);
    match crate::rotated::Inflater::start(move |i| ib.inflated(i)) {
        Ok(i) => tracker.set_inflater(i),
        Err(e) => tracing::warn!("compressed rotated logs will not be recognised: {e}"),
    }

    // Workers: each its own connection, each with a next job waiting (see QUEUED_PER_WORKER).
    let (job_tx, job_rx) = mpsc::channel::<Job>(in_flight_cap(&cfg));
    let job_rx = Arc::new(Mutex::new(job_rx));
    let hash_states = HashStates::default();
    let mut workers = Vec::new();
    for _ in 0..cfg.max_parallel_uploads {
        let (rx, ib, cc) = (
            Arc::clone(&job_rx),
            Arc::clone(&inbox),
            Arc::clone(&servers),
        );
        let states = hash_states.clone();
        workers.push(tokio::spawn(async move {
            let mut up = Uploader::new(cc, states);
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let (job, outcome) = up.run(job).await;
                ib.outcome(job, outcome);
            }
        }));
    }

    // The status document: published by a task of its own, the newest one wins.
    let (status_tx, mut status_rx) = mpsc::channel::<Vec<u8>>(1);
    let status_scratch = scratch.clone();
    let mut status_up = Uploader::new(Arc::clone(&servers), hash_states.clone());
    let status_task = tokio::spawn(async move {
        while let Some(bytes) = status_rx.recv().await {
            publish(&bytes, &mut status_up, &status_scratch).await;
        }
        status_up
    });

    // File-system events: a closed file is usually archived within a second; a growing one
    // within the append interval. An overflow or a lost watch only means "scan everything".
    let _watcher = watch_sources(&matchers, Arc::clone(&inbox));
    let ib = Arc::clone(&inbox);
    let stopper = tokio::spawn(async move {
        // A dropped sender means nobody can ask us to stop any more: run on.
        while shutdown.changed().await.is_ok() {
            if *shutdown.borrow() {
                ib.stop();
                break;
            }
        }
    });

    // If this future is dropped before the tracker ends (its runtime shutting down, a caller's
    // timeout), the tracker is told to stop: otherwise the join below would wait for ever and
    // with it the runtime's shutdown.
    let _stop_tracker = StopOnDrop(Arc::clone(&inbox));
    let loop_cfg = cfg.clone();
    let m = Arc::clone(&metrics);
    let in_use = Arc::clone(&servers);
    let thread = std::thread::Builder::new()
        .name("agent-tracker".into())
        .spawn(move || {
            track_loop(
                &loop_cfg, mode, tracker, &inbox, &job_tx, &status_tx, &m, &in_use, scan_ms,
            )
        })
        .map_err(|e| AgentError::Config(format!("cannot start the tracker thread: {e}")))?;
    let result = tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| AgentError::Config(format!("tracker: {e}")))?
        .unwrap_or_else(|_| Err(AgentError::Config("the tracker thread panicked".into())));
    stopper.abort();
    for w in workers {
        w.abort();
    }
    let ended = result?;
    let mut status_up = status_task
        .await
        .unwrap_or_else(|_| Uploader::new(Arc::clone(&servers), hash_states));
    if let Some(bytes) = &ended.last_status {
        publish(bytes, &mut status_up, &scratch).await;
    }
    if mode == Mode::Once && !ended.given_up.is_empty() {
        let last_error = ended.given_up.values().next().cloned().unwrap_or_default();
        return Err(AgentError::Incomplete {
            failed: ended.given_up.len(),
            last_error,
        });
    }
    Ok(ended.summary)
}

/// Tells the tracker to stop when dropped.
struct StopOnDrop(Arc<Inbox>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// How the tracker's loop ended.
struct Ended {
    summary: RunSummary,
    /// The status document to publish last (not after a stop that was asked for).
    last_status: Option<Vec<u8>>,
    /// Rows `--once` gave up on, with their last error.
    given_up: HashMap<i64, String>,
}

/// Jobs handed out per upload connection: the one it runs and some waiting, so a connection
/// goes on to its next file at once instead of idling while the tracker records the last ones.
const QUEUED_PER_WORKER: usize = 4;

/// How long the tracker waits for the other connections' uploads to finish after one did, so
/// their outcomes share a commit (each commit writes the state database's pages again).
const OUTCOME_GATHER: Duration = Duration::from_millis(2);

/// Most jobs handed out at once (running or waiting for a connection).
fn in_flight_cap(cfg: &AgentConfig) -> usize {
    cfg.max_parallel_uploads.saturating_mul(QUEUED_PER_WORKER)
}

#[allow(clippy::too_many_arguments)]
fn track_loop(
    cfg: &AgentConfig,
    mode: Mode,
    mut t: Tracker,
    inbox: &Inbox,
    jobs: &mpsc::Sender<Job>,
    status_tx: &mpsc::Sender<Vec<u8>>,
    metrics: &crate::metrics::Metrics,
    servers: &Servers,
    scan_ms: i64,
) -> Result<Ended, AgentError> {
    let mut summary = RunSummary::default();
    let mut given_up: HashMap<i64, String> = HashMap::new();
    let mut next_scan = now_ms();
    let mut next_status = now_ms() + cfg.status_interval.as_millis() as i64;
    let mut completed_since_status = 0u64;
    let mut last_status = 0i64;
    let mut stopping: Option<Instant> = None;
    let mut batch = Batch::default();
    let mut cycle_start = Instant::now();
    loop {
        let now = now_ms();
        if batch.stop && stopping.is_none() {
            tracing::info!(
                "stopping: letting {} upload(s) finish their step",
                t.inflight()
            );
            stopping = Some(Instant::now() + Duration::from_secs(10));
        }
        let scan_now =
            stopping.is_none() && (now >= next_scan || batch.rescan || t.rescan_due(now));
        let outcomes = std::mem::take(&mut batch.outcomes);
        let inflated = std::mem::take(&mut batch.inflated);
        let paths = std::mem::take(&mut batch.paths);
        // Outcomes, observations and the jobs handed out next: one commit for all of them.
        let handed = t.transaction(|t| -> Result<Vec<Job>, AgentError> {
            for (job, outcome) in outcomes {
                let failure = match &outcome {
                    crate::upload::Outcome::Failed(e) => Some(format!("{}: {e}", job_name(&job))),
                    _ => None,
                };
                let done = t.finished(&job, outcome, now)?;
                if done.archived {
                    summary.files_archived += 1;
                    summary.bytes_sent += done.sent;
                    completed_since_status += 1;
                    metrics.files_archived.fetch_add(1, Relaxed);
                    metrics.bytes_sent.fetch_add(done.sent, Relaxed);
                }
                if let Some(msg) = failure {
                    metrics.upload_failures.fetch_add(1, Relaxed);
                    let attempts = t.db().get(job.id)?.map_or(0, |r| r.attempts);
                    if mode == Mode::Once && attempts >= ONCE_ATTEMPTS {
                        t.park(job.id)?;
                        given_up.insert(job.id, msg);
                    }
                }
            }
            for i in inflated {
                t.inflated(i, now)?;
            }
            if scan_now {
                let r = t.full_scan(now)?;
                summary.scans += 1;
                metrics.scans.fetch_add(1, Relaxed);
                metrics.last_scan_ms.store(now, Relaxed);
                t.db().set_meta("last_scan_ms", &now.to_string())?;
                tracing::debug!(?r, "scan");
                next_scan = now + scan_ms;
            }
            for (path, closed) in paths {
                t.observe_path(&path, closed, now)?;
            }
            t.tick(now)?;
            if stopping.is_some() {
                return Ok(Vec::new());
            }
            let free = in_flight_cap(cfg).saturating_sub(t.inflight());
            Ok(t.take_jobs(now, free)?)
        })?;
        // Never blocks: the channel holds as many jobs as may be in flight.
        for job in handed {
            if jobs.blocking_send(job).is_err() {
                break;
            }
        }

        let idle = t.inflight() == 0;
        // After a batch, but at most every few seconds: a busy log is appended to every second.
        let batch_done =
            idle && completed_since_status > 0 && now - last_status >= STATUS_AFTER_BATCH_MS;
        if batch_done || now >= next_status {
            last_status = now;
            if let Some(b) = status_bytes(cfg, t.db(), metrics, servers, now) {
                let _ = status_tx.try_send(b);
            }
            completed_since_status = 0;
            next_status = now + cfg.status_interval.as_millis() as i64;
        }

        if let Some(deadline) = stopping {
            if idle || Instant::now() >= deadline {
                // Uploads resume from the server's size next time: waiting long is never needed.
                return Ok(Ended {
                    summary,
                    last_status: None,
                    given_up,
                });
            }
        }
        let wake = t.next_wake(now)?;
        let settled = idle
            && !t.busy()
            && t.orphans() == 0
            && !t.names_waiting()?
            && t.db().next_ready_ms()?.is_none();
        if mode == Mode::Once && settled {
            // Nothing in flight, nothing waiting: one more look, then done.
            let r = t.transaction(|t| t.full_scan(now_ms()).map_err(AgentError::from))?;
            summary.scans += 1;
            let pending = t.db().pending_count()? as usize;
            if r.new == 0 && r.changed == 0 && pending <= given_up.len() {
                return Ok(Ended {
                    last_status: status_bytes(cfg, t.db(), metrics, servers, now_ms()),
                    summary,
                    given_up,
                });
            }
            batch = Batch::default();
            continue;
        }

        let mut until = next_status.min(if mode == Mode::Once {
            now + 1000
        } else {
            next_scan
        });
        if let Some(w) = wake {
            until = until.min(w);
        }
        let until = Instant::now() + Duration::from_millis((until - now_ms()).max(1) as u64);
        let until = stopping.map_or(until, |s| s.min(until));
        batch = inbox.wait(Some(until));
        if !batch.outcomes.is_empty() && !batch.stop {
            // One upload finished: the others in flight likely finish within a moment.
            let want = cfg.max_parallel_uploads.min(t.inflight());
            if batch.outcomes.len() < want {
                inbox.gather_outcomes(want, Instant::now() + OUTCOME_GATHER, &mut batch);
            }
        }
        // A busy log sends an event per write: file-system events alone wake the tracker at most
        // every EVENT_CYCLE (they pile up and coalesce meanwhile); outcomes, stops and timers
        // are handled at once.
        if batch.only_paths() {
            let next = cycle_start + EVENT_CYCLE;
            if Instant::now() < next && next < until {
                inbox.wait_until(next, &mut batch);
            }
        }
        cycle_start = Instant::now();
    }
}

fn job_name(job: &Job) -> String {
    match &job.work {
        crate::upload::Work::Send(s) => s.path.display().to_string(),
        crate::upload::Work::Names { remote, .. } => remote.clone(),
    }
}

/// The status document, built on the tracker's thread. Its totals also refresh the gauges: one
/// pass over the table for both.
fn status_bytes(
    cfg: &AgentConfig,
    db: &StateDb,
    m: &crate::metrics::Metrics,
    servers: &Servers,
    now: i64,
) -> Option<Vec<u8>> {
    // The server in use, kept in the state database for `agent status` too.
    let in_use = servers.in_use();
    if db.meta(status::SERVER_KEY).ok().flatten().as_deref() != Some(in_use) {
        if let Err(e) = db.set_meta(status::SERVER_KEY, in_use) {
            tracing::warn!("cannot record the server in use: {e}");
        }
    }
    match status::build(cfg, db, now) {
        Ok(d) => {
            m.set_totals(&d.totals);
            serde_json::to_vec_pretty(&d).ok()
        }
        Err(e) => {
            tracing::warn!("cannot build the status document: {e}");
            None
        }
    }
}

async fn publish(bytes: &[u8], up: &mut Uploader, scratch: &std::path::Path) {
    if let Err(e) = up.put_status(bytes, scratch).await {
        tracing::warn!("cannot publish the status document: {e}");
    }
}

fn watch_sources(matchers: &[Matcher], inbox: Arc<Inbox>) -> Option<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, EventKind};
    use notify::Watcher;
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
        Ok(ev) => {
            if ev.need_rescan() {
                inbox.rescan();
                return;
            }
            let closed = matches!(
                ev.kind,
                EventKind::Access(AccessKind::Close(AccessMode::Write))
            );
            let relevant = closed
                || matches!(
                    ev.kind,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                );
            if relevant {
                for p in ev.paths {
                    inbox.path(p, closed);
                }
            }
        }
        Err(_) => inbox.rescan(),
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
