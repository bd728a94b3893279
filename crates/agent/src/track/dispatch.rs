//! What the tracker hands out to the upload workers, and what it does with their outcomes.

use super::{Result, Tracker};
use crate::scan;
use crate::state::{FileRow, FileState};
use crate::upload::{Job, Outcome, Send, Work};
use logarchive_ftp::client::ClientError;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
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
            let checked = self.file_of(&r).and_then(|f| match f {
                Some(f) => check(&r, &f, !quiet).map(|c| (c, Some(f))),
                None => Ok((Check::Moved, None)),
            });
            let (size, file) = match checked {
                Ok((Check::Send(size), Some(file))) => (size, file),
                Ok((Check::Held(size), _)) => {
                    self.settle(r, Outcome::Held { size }, None, now)?;
                    continue;
                }
                Ok((Check::Rewritten, _)) => {
                    self.settle(r, Outcome::Rewritten, None, now)?;
                    continue;
                }
                Ok(_) => {
                    self.settle(r, Outcome::Moved, None, now)?;
                    continue;
                }
                Err(e) => {
                    let e = ClientError::Io {
                        context: format!("reading {}", r.path.display()),
                        source: e,
                    };
                    self.settle(r, Outcome::Failed(e), None, now)?;
                    continue;
                }
            };
            jobs.push(Job {
                id: r.id,
                work: Work::Send(Send {
                    path: r.path.clone(),
                    file,
                    remote: r.remote.clone(),
                    archived_size: r.archived_size,
                    size,
                    in_step: self.in_step.contains(&r.id),
                }),
            });
            if quiet || now - r.first_seen_ms >= super::COPY_WAIT_MS {
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

    /// The row's file to send from: the open one, else its path if that still holds it (kept
    /// open if there is room). `None`: its path holds another file or nothing.
    fn file_of(&mut self, r: &FileRow) -> std::io::Result<Option<Arc<File>>> {
        if let Some(f) = self.open.get(r.id) {
            return Ok(Some(f));
        }
        let f = match crate::rotated::open_nofollow(&r.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let m = f.metadata()?;
        if (m.dev(), m.ino()) != (r.dev, r.ino) {
            return Ok(None);
        }
        Ok(Some(match self.open.keep(r.id, f) {
            Some(f) => f,
            // No room to keep it: open it for this send only.
            None => Arc::new(crate::rotated::open_nofollow(&r.path)?),
        }))
    }

    /// Whether any name waits to be told to the server.
    pub fn names_waiting(&self) -> Result<bool> {
        Ok(!self.db.unreported_names(1)?.is_empty())
    }

    /// Records the outcome of `job` (from a worker).
    pub fn finished(&mut self, job: &Job, outcome: Outcome, now: i64) -> Result<Done> {
        match &job.work {
            Work::Names { names, .. } => {
                self.naming.remove(&job.id);
                match outcome {
                    Outcome::Named => self.db.names_reported(job.id, names)?,
                    Outcome::Failed(e) => tracing::debug!("cannot report local names: {e}"),
                    _ => {}
                }
                Ok(Done::default())
            }
            Work::Send(s) => {
                self.inflight.remove(&job.id);
                match self.db.get(job.id)? {
                    Some(r) => self.settle(r, outcome, Some(&s.file), now),
                    None => Ok(Done::default()),
                }
            }
        }
    }

    /// What a send (or the checks before it) came to for `r`. `file` is the file it was sent
    /// from.
    fn settle(
        &mut self,
        mut r: FileRow,
        outcome: Outcome,
        file: Option<&Arc<File>>,
        now: i64,
    ) -> Result<Done> {
        let mut done = Done::default();
        match outcome {
            Outcome::Archived { size, sha256, sent } => {
                done.archived = true;
                // The window before the new archived size, checked before the next append. A read
                // that fails leaves it unknown (the next append checks the head only).
                let tail_sha = file.and_then(|f| match scan::window_sha(f, size) {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::debug!(file = %r.path.display(), "cannot read what was sent ({e})");
                        None
                    }
                });
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
                    if self.open.holds(r.id) {
                        self.caught_up.insert(r.id);
                    }
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
                let backoff = Duration::from_secs(1u64 << attempts.clamp(0, 20) as u64)
                    .min(Duration::from_millis(self.timing.max_backoff_ms as u64));
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

/// What the checks before a send found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Send up to this size.
    Send(u64),
    /// Nothing whole to send: the file is this long, its last line unterminated.
    Held(u64),
    /// The file no longer starts (or continues) as what was archived: truncated or rewritten.
    Rewritten,
    /// Its path holds another file, or none.
    Moved,
}

/// The checks before a send, on the tracker's thread (a few small reads): the file is still the
/// row's (its head, and the window before the archived size), and how much to send — up to its
/// last whole line while it is written to (`whole_lines`), else everything.
fn check(r: &FileRow, file: &File, whole_lines: bool) -> std::io::Result<Check> {
    let size = file.metadata()?.len();
    if size < r.archived_size || size < r.head_len {
        return Ok(Check::Rewritten);
    }
    if r.archived_size > 0 {
        let same = |got: std::io::Result<Option<String>>, want: Option<&String>| match got {
            Ok(h) => Ok(want.is_none() || h.as_ref() == want),
            // Shorter than it was a moment ago: not the same file.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        };
        let head = scan::head_sha(file, r.head_len).map(Some);
        if !same(head, Some(&r.head_sha))?
            || !same(scan::window_sha(file, r.archived_size), r.tail_sha.as_ref())?
        {
            return Ok(Check::Rewritten);
        }
    }
    let cut = if whole_lines {
        scan::last_line_end(file, r.archived_size, size)?
    } else {
        size
    };
    // Nothing whole to send (an empty file that is quiet is sent: it exists as such).
    if cut == r.archived_size && (whole_lines || r.archived_size > 0) {
        return Ok(Check::Held(size));
    }
    Ok(Check::Send(cut))
}
