//! What the tracker hands out to the upload workers, and what it does with their outcomes.

use super::{Result, Tracker};
use crate::state::FileState;
use crate::upload::{Job, Outcome, Send, Work};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

/// What a finished job changed, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub archived: bool,
    pub sent: u64,
    pub failed: bool,
}

impl Tracker {
    /// Up to `free` sends (and name reports) ready at `now`, marked in flight.
    pub fn take_jobs(&mut self, now: i64, free: usize) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        if free == 0 {
            return Ok(jobs);
        }
        for mut r in self.db.ready(now, free)? {
            if jobs.len() >= free {
                break;
            }
            if self.inflight.contains(&r.id) {
                continue;
            }
            if self.matcher_of(&r).is_none() && !self.inflated.contains_key(&r.id) {
                r.state = FileState::Lost;
                r.tracked = false;
                r.last_error = Some("its source is no longer configured".into());
                self.live.remove((r.dev, r.ino), r.id);
                self.save(&mut r)?;
                continue;
            }
            let quiet = now - r.stable_since_ms >= self.timing.quiet_ms;
            let file = match self.open.get(r.id) {
                Some(f) => Some(f),
                None => self.open.open(r.id, &r.path, (r.dev, r.ino)),
            };
            jobs.push(Job {
                id: r.id,
                work: Work::Send(Send {
                    path: r.path.clone(),
                    file,
                    dev: r.dev,
                    ino: r.ino,
                    remote: r.remote.clone(),
                    archived_size: r.archived_size,
                    head_sha: r.head_sha.clone(),
                    head_len: r.head_len,
                    tail_sha: r.tail_sha.clone(),
                    whole_lines: !quiet,
                    in_step: self.in_step.contains(&r.id),
                }),
            });
            if quiet {
                r.maybe_copy = false;
            }
            r.sent_at_ms = now;
            self.inflight.insert(r.id);
            self.save(&mut r)?;
        }
        if jobs.len() < free {
            for (id, remote, names) in self.db.unreported_names(64)? {
                if jobs.len() >= free {
                    break;
                }
                if self.inflight.contains(&id) || !self.naming.insert(id) {
                    continue;
                }
                jobs.push(Job {
                    id,
                    work: Work::Names { remote, names },
                });
            }
        }
        Ok(jobs)
    }

    /// Whether any name waits to be told to the server.
    pub fn names_waiting(&self) -> Result<bool> {
        Ok(!self.db.unreported_names(1)?.is_empty())
    }

    /// Records the outcome of `job`. `max_backoff` caps the wait before a failed row is retried.
    pub fn finished(
        &mut self,
        job: &Job,
        outcome: Outcome,
        now: i64,
        max_backoff: Duration,
    ) -> Result<Done> {
        let mut done = Done::default();
        if let Work::Names { names, .. } = &job.work {
            self.naming.remove(&job.id);
            match outcome {
                Outcome::Named => self.db.names_reported(job.id, names)?,
                Outcome::Failed(e) => tracing::debug!("cannot report local names: {e}"),
                _ => {}
            }
            return Ok(done);
        }
        self.inflight.remove(&job.id);
        let Some(mut r) = self.db.get(job.id)? else {
            return Ok(done);
        };
        match outcome {
            Outcome::Archived {
                size,
                sha256,
                sent,
                tail_sha,
            } => {
                done.archived = true;
                done.sent = sent;
                self.in_step.insert(r.id);
                self.held.remove(&r.id);
                r.archived_size = size;
                r.archived_sha = Some(sha256);
                r.tail_sha = tail_sha;
                r.archived_at_ms = Some(now);
                r.attempts = 0;
                r.last_error = None;
                r.next_try_ms = 0;
                r.size = r.size.max(size);
                if r.size > size {
                    // More arrived while it was sent: behind since then, at the latest.
                    r.behind_since_ms = Some(r.behind_since_ms.unwrap_or(now).max(r.sent_at_ms));
                    if r.state == FileState::Archived {
                        r.state = FileState::Pending;
                    }
                } else {
                    r.behind_since_ms = None;
                    match r.state {
                        FileState::Pending => r.state = FileState::Archived,
                        FileState::Orphaned => {
                            // Its file went while it was being sent, but nothing was missing.
                            r.state = FileState::Archived;
                            r.orphaned_at_ms = None;
                            self.orphans = self.orphans.saturating_sub(1);
                        }
                        _ => {}
                    }
                }
                if let Some((key, temp)) = self.inflated.get(&r.id).cloned() {
                    if r.archived_size >= r.size {
                        // The compressed copy's bytes are all archived: it is a copy now.
                        self.db.add_copy(key, r.id)?;
                        self.inflated.remove(&r.id);
                        self.open.close(r.id);
                        self.live.remove((r.dev, r.ino), r.id);
                        r.tracked = false;
                        let _ = std::fs::remove_file(temp);
                    }
                }
            }
            Outcome::Held { size } => {
                self.held.insert(r.id, size);
                if size > r.size {
                    r.size = size;
                    r.stable_since_ms = now;
                }
            }
            Outcome::Rewritten => {
                // Not the file it was: split it off where it is now.
                match std::fs::symlink_metadata(&r.path) {
                    Ok(m) if (m.dev(), m.ino()) == (r.dev, r.ino) => {
                        let path = r.path.clone();
                        self.truncated(r, &path, &m, now)?;
                    }
                    _ => {
                        self.live.remove((r.dev, r.ino), r.id);
                        self.release(&mut r, now, "rewritten locally")?;
                    }
                }
                return Ok(done);
            }
            Outcome::Moved => {
                // Its path holds something else now: a scan finds where it went (or that it is
                // gone). Until then it waits a little.
                self.want_rescan(now);
                r.next_try_ms = now + 1000;
            }
            Outcome::Named => {}
            Outcome::Failed(e) => {
                done.failed = true;
                self.in_step.remove(&r.id);
                let attempts = r.attempts + 1;
                let backoff =
                    Duration::from_secs(1u64 << attempts.clamp(0, 20) as u64).min(max_backoff);
                let jitter = backoff.mul_f64(rand::random::<f64>() * 0.2);
                let msg = e.to_string();
                tracing::warn!(file = %r.path.display(), attempts, "upload failed: {msg}");
                r.attempts = attempts;
                r.last_error = Some(msg);
                r.next_try_ms = now + (backoff + jitter).as_millis() as i64;
            }
        }
        self.save(&mut r)?;
        Ok(done)
    }
}
