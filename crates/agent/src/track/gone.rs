//! Files that left: removed, or moved out of the roots. One held open is read to its end through
//! the open file (it is "detached": no events come for it, so every tick looks at it); one not
//! held open is released, and waits for a copy if it may have had bytes the archive lacks.

use super::{Ident, Result, Tracker};
use crate::scan::Look;
use crate::state::{FileRow, FileState};
use std::fs::Metadata;

impl Tracker {
    /// A row of the live map that a full scan did not meet under any root.
    pub(super) fn missing(&mut self, ident: Ident, id: i64, now: i64) -> Result<()> {
        let Some(mut r) = self.db.get(id)? else {
            self.live.remove(ident, id);
            return Ok(());
        };
        if let Some(f) = self.open.get(id) {
            // Still readable through the open file (removed, or moved out of the roots).
            if let Ok(m) = f.metadata() {
                self.detached.insert(id);
                return self.detached_look(r, &m, now);
            }
        }
        self.live.remove(ident, id);
        self.release(&mut r, now, "removed locally")
    }

    /// A detached row's file as its open file shows it.
    pub(super) fn detached_look(&mut self, mut r: FileRow, m: &Metadata, now: i64) -> Result<()> {
        let look = Look::of(m);
        if look.size < r.size {
            self.live.remove((r.dev, r.ino), r.id);
            return self.release(&mut r, now, "truncated after it was removed");
        }
        if look.size != r.size || look.mtime_ns != r.mtime_ns {
            return self.grown(&mut r, look, now);
        }
        let quiet = now - r.stable_since_ms >= self.timing.quiet_ms;
        if quiet && r.size == r.archived_size && !self.inflight.contains(&r.id) {
            // Everything read and nobody writes to it: let it go.
            self.live.remove((r.dev, r.ino), r.id);
            return self.release(&mut r, now, "removed locally, fully archived");
        }
        Ok(())
    }

    /// Periodic work: detached files, quiet files held open, orphans that waited long enough.
    pub fn tick(&mut self, now: i64) -> Result<()> {
        for (id, path) in std::mem::take(&mut self.vanished) {
            // Still believed where it vanished: no event said where it went.
            if self
                .db
                .get(id)?
                .is_some_and(|r| r.tracked && r.path == path)
            {
                self.want_rescan(now);
            }
        }
        for id in self.detached.clone() {
            let (Some(r), Some(f)) = (self.db.get(id)?, self.open.get(id)) else {
                self.detached.remove(&id);
                continue;
            };
            match f.metadata() {
                Ok(m) => self.detached_look(r, &m, now)?,
                Err(_) => {
                    self.detached.remove(&id);
                }
            }
        }
        // Open files idle long enough are closed (they are reopened by path when they grow);
        // looked at about once a second, not on every batch of events.
        let sweep = now - self.last_sweep_ms >= 1000;
        if sweep {
            self.last_sweep_ms = now;
        }
        // Only files that were open when they caught up can be idle: a file with bytes to send
        // stays open (it may be removed before it is sent).
        for id in if sweep {
            self.caught_up.iter().copied().collect()
        } else {
            Vec::new()
        } {
            if self.inflight.contains(&id) || self.detached.contains(&id) {
                continue;
            }
            match self.db.get(id)? {
                Some(r) if r.state == FileState::Pending => {
                    self.caught_up.remove(&id);
                }
                Some(r) if now - r.stable_since_ms < self.timing.quiet_ms => {}
                // Fully archived and quiet: reopened by path when it grows.
                _ => {
                    self.caught_up.remove(&id);
                    if !self.inflated.contains_key(&id) {
                        self.open.close(id);
                    }
                }
            }
        }
        if self.orphans > 0 {
            for mut o in self.db.orphans()? {
                let since = o.orphaned_at_ms.unwrap_or(0);
                let waited = now - since >= self.timing.orphan_wait_ms;
                // At least one full scan after it lost its file, and no decompression under way.
                if waited && self.last_full_scan_ms > since && self.inflating.is_empty() {
                    self.orphans = self.orphans.saturating_sub(1);
                    let missing = o.size.saturating_sub(o.archived_size);
                    if missing == 0 && o.archived_at_ms.is_some() {
                        // No copy, and nothing known to be missing: done as it is.
                        o.state = FileState::Archived;
                        o.orphaned_at_ms = None;
                        o.behind_since_ms = None;
                        self.save(&mut o)?;
                        continue;
                    }
                    tracing::warn!(
                        file = %o.rel,
                        "{missing} bytes were removed or truncated locally before they could be archived"
                    );
                    o.state = FileState::Lost;
                    o.lost_bytes += missing;
                    o.behind_since_ms = None;
                    o.last_error = Some(format!(
                        "removed or truncated locally before {missing} bytes were archived; no copy of it appeared"
                    ));
                    self.save(&mut o)?;
                }
            }
        }
        Ok(())
    }
}
