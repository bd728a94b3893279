//! Copies of generations: the file logrotate's `copytruncate` makes (an orphan's missing bytes
//! are in it), and compressed copies (`compress`), which are decompressed on the inflater thread
//! and either recognised as already archived or give back what the archive lacks.

use super::{Result, Tracker};
use crate::rotated::{self, Candidate, Inflated, Kind, Verdict};
use crate::scan::{self, Look, HEAD};
use crate::state::{CopyKey, FileRow, FileState};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

impl Tracker {
    /// The orphan whose missing bytes `file` holds: it begins as the orphan did and holds at least
    /// what was archived, with the same bytes just before that point.
    pub(super) fn orphan_copied_by(
        &self,
        file: &File,
        look: Look,
        head: &str,
        head_len: u64,
    ) -> Result<Option<FileRow>> {
        for o in self.db.orphans()? {
            if look.size < o.archived_size || look.size < o.head_len {
                continue;
            }
            let same_head = if o.head_len == head_len {
                head == o.head_sha
            } else {
                scan::head_sha(file, o.head_len).ok().as_deref() == Some(o.head_sha.as_str())
            };
            if same_head && scan::window_sha(file, o.archived_size).ok() == Some(o.tail_sha.clone())
            {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    /// A file a source does not want appeared while some rows wait for a copy: it may be one
    /// (`app.log.1` after copytruncate).
    pub(super) fn consider_copy(&mut self, path: &Path, look: Look, now: i64) -> Result<()> {
        let Ok(file) = rotated::open_nofollow(path) else {
            return Ok(());
        };
        match file.metadata() {
            Ok(m) if (m.dev(), m.ino()) == (look.dev, look.ino) => {}
            _ => return Ok(()),
        }
        let head_len = look.size.min(HEAD);
        let Ok(head) = scan::head_sha(&file, head_len) else {
            return Ok(());
        };
        if let Some(o) = self.orphan_copied_by(&file, look, &head, head_len)? {
            self.adopt(o, path, file, look, now)?;
        }
        Ok(())
    }

    /// `o` continues with `file` (its copy) as its file: the bytes beyond what was archived are
    /// sent from it.
    pub(super) fn adopt(
        &mut self,
        mut o: FileRow,
        path: &Path,
        file: File,
        look: Look,
        now: i64,
    ) -> Result<()> {
        tracing::debug!(file = %o.rel, copy = %path.display(), "found a copy of a truncated file");
        self.orphans = self.orphans.saturating_sub(1);
        o.dev = look.dev;
        o.ino = look.ino;
        o.path = path.to_path_buf();
        o.tracked = true;
        o.orphaned_at_ms = None;
        o.size = look.size;
        o.mtime_ns = look.mtime_ns;
        o.stable_since_ms = scan::unchanged_since(look.mtime_ns, now);
        o.grew = false;
        if o.size > o.archived_size {
            o.state = FileState::Pending;
            o.behind_since_ms.get_or_insert(now);
        } else {
            o.state = FileState::Archived;
            o.behind_since_ms = None;
        }
        self.live.insert((look.dev, look.ino), o.id);
        self.mark_found(o.id);
        self.seen.note(path, look);
        let name = self.local_name(path);
        self.db.add_name(o.id, &name)?;
        if o.state == FileState::Pending {
            self.open.keep(o.id, file);
        }
        self.save(&mut o)
    }

    /// A row just lost its file to truncation: a file under a wanted name that began like it and
    /// was held back as a possible copy is that copy.
    pub(super) fn adopt_waiting_copy(&mut self, orphan: i64, now: i64) -> Result<()> {
        let Some(o) = self.db.get(orphan)? else {
            return Ok(());
        };
        for c in self.db.with_head(&o.head_sha, o.head_len, false)? {
            if !c.maybe_copy || c.archived_at_ms.is_some() || self.inflight.contains(&c.id) {
                continue;
            }
            let Ok(file) = rotated::open_nofollow(&c.path) else {
                continue;
            };
            let look = match file.metadata() {
                Ok(m) if (m.dev(), m.ino()) == (c.dev, c.ino) => Look::of(&m),
                _ => continue,
            };
            if look.size >= o.archived_size
                && scan::window_sha(&file, o.archived_size).ok() == Some(o.tail_sha.clone())
            {
                // The held-back file was the copy: it is the orphan's file, not a file of its own.
                self.live.remove((c.dev, c.ino), c.id);
                self.open.close(c.id);
                self.db.delete(c.id)?;
                return self.adopt(o, &c.path.clone(), file, look, now);
            }
        }
        Ok(())
    }

    /// A compressed file: `true` if it is (or may be) a copy of a known generation, so that it
    /// is not taken for a file of its own. Decompressing it all happens on the inflater thread.
    pub(super) fn consider_compressed(
        &mut self,
        path: &Path,
        kind: Kind,
        key: CopyKey,
    ) -> Result<bool> {
        if self.db.copy_of(key)?.is_some() || self.inflating.contains(&key) {
            return Ok(true);
        }
        if self.not_copies.contains(&key) || self.inflater.is_none() {
            return Ok(false);
        }
        let Ok(file) = rotated::open_nofollow(path) else {
            return Ok(false);
        };
        let head = match rotated::inflate_head(kind, file) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(path = %path.display(), "cannot decompress ({e})");
                self.not_copies.insert(key);
                return Ok(false);
            }
        };
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&head))
        };
        // Any generation with that head: the one compressed is usually no longer followed
        // (its file was removed once compressed).
        let candidates: Vec<Candidate> = self
            .db
            .with_head(&sha, head.len() as u64, true)?
            .into_iter()
            .map(|r| Candidate {
                id: r.id,
                archived_size: r.archived_size,
                archived_sha: r.archived_sha.clone(),
                live: self
                    .open
                    .get(r.id)
                    .or_else(|| self.read_file(&r, &r.path).ok().filter(|_| r.tracked)),
            })
            .collect();
        if candidates.is_empty() {
            self.not_copies.insert(key);
            return Ok(false);
        }
        let req = rotated::Request {
            path: path.to_path_buf(),
            key,
            kind,
            candidates,
            scratch: self.scratch.clone(),
        };
        if self.inflater.as_ref().is_some_and(|i| i.send(req)) {
            self.inflating.insert(key);
            return Ok(true);
        }
        Ok(false)
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
