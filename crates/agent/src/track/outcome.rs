//! What the tracker does with the answers it gets: a worker's outcome for a row, and the
//! inflater's verdict on a compressed file.

use super::{Result, Tracker};
use crate::rotated::{Inflated, Verdict};
use crate::scan::Look;
use crate::state::FileState;
use crate::upload::{Job, Outcome, Work};
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

    /// The inflater's verdict on a compressed file.
    pub fn inflated(&mut self, answer: Inflated, now: i64) -> Result<()> {
        self.inflating.remove(&answer.key);
        if let Some(e) = answer.error {
            tracing::debug!(path = %answer.path.display(), "cannot compare ({e})");
            self.not_copies.insert(answer.key);
            return Ok(());
        }
        let name = self.local_name(&answer.path);
        // Already archived (all of it, or a start of it)?
        for (id, v) in &answer.verdicts {
            if matches!(v, Verdict::Same | Verdict::Prefix) {
                self.db.add_copy(answer.key, *id)?;
                self.db.add_name(*id, &name)?;
                for (_, v) in &answer.verdicts {
                    if let Verdict::Longer { temp, .. } = v {
                        let _ = std::fs::remove_file(temp);
                    }
                }
                return Ok(());
            }
        }
        // Holding what a row that lost its file lacks?
        for (id, v) in &answer.verdicts {
            let Verdict::Longer { temp, total } = v else {
                continue;
            };
            let Some(mut r) = self.db.get(*id)? else {
                continue;
            };
            if r.state != FileState::Orphaned || self.inflight.contains(id) {
                continue;
            }
            let Ok(file) = crate::rotated::open_nofollow(temp) else {
                continue;
            };
            let Ok(m) = file.metadata() else { continue };
            tracing::debug!(file = %r.rel, copy = %answer.path.display(), "a compressed copy holds what was not archived");
            self.orphans = self.orphans.saturating_sub(1);
            r.dev = m.dev();
            r.ino = m.ino();
            r.path = temp.clone();
            r.tracked = true;
            r.orphaned_at_ms = None;
            r.size = *total;
            r.mtime_ns = Look::of(&m).mtime_ns;
            // Complete: sent whole at once.
            r.stable_since_ms = 0;
            r.grew = false;
            r.state = FileState::Pending;
            r.behind_since_ms.get_or_insert(now);
            self.db.add_name(r.id, &name)?;
            self.open.keep(r.id, file);
            self.live.insert((r.dev, r.ino), r.id);
            self.detached.remove(&r.id);
            self.inflated.insert(r.id, (answer.key, temp.clone()));
            return self.save(&mut r);
        }
        for (_, v) in &answer.verdicts {
            if let Verdict::Longer { temp, .. } = v {
                let _ = std::fs::remove_file(temp);
            }
        }
        // Not a copy of anything known: if a source wants it, it is a file of its own.
        self.not_copies.insert(answer.key);
        if let Ok(m) = std::fs::symlink_metadata(&answer.path) {
            if m.is_file() && self.target(&answer.path).is_some() {
                self.seen.forget(&answer.path);
                self.observe_file(&answer.path, &m, now)?;
            }
        }
        Ok(())
    }
}
