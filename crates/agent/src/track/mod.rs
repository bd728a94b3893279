//! The tracker: which local file each row is, where that file is now, and what to send next. It
//! owns the state DB and the open files, and runs on a thread of its own (tree walks, reads of
//! heads and SQLite never block the async upload workers).
//!
//! Invariants kept here:
//! - A local file — its identity (device, inode, and head, checked whenever the agent does not
//!   hold it open) — belongs to at most one tracked row. A path whose file is tracked is that row's
//!   file, renamed (rotation): never a new file, whatever its new name.
//! - A row's file is followed until it is gone; what is written to it after a rename is appended
//!   to the generation it already has.
//! - A file that shrank, or whose head or window before the archived size changed, is not the
//!   row's file any more: a new generation starts there, and the old row waits for a copy of its
//!   file (copytruncate, compress) or counts its loss.
//! - Rows advance only on verified outcomes ([`crate::upload`]).

mod copies;
mod dispatch;
mod files;
mod gone;

use crate::rotated::{self, Inflater};
use crate::scan::{self, Look, Matcher, Seen, HEAD};
use crate::state::{CopyKey, FileRow, FileState, StateDb};
pub use files::{Ident, Identities, OpenFiles};
use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub type Result<T> = crate::state::Result<T>;

/// How long a new file that begins like a tracked one is held back as its possible copy.
const COPY_WAIT_MS: i64 = 30_000;

/// Timing of the tracker's decisions.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub quiet_ms: i64,
    /// Least time between two sends of one growing file.
    pub interval_ms: i64,
    /// How long a row whose file vanished waits for a copy of it.
    pub orphan_wait_ms: i64,
    /// Longest wait before a failed send is tried again (the backoff doubles up to it).
    pub max_backoff_ms: i64,
}

/// What a full scan found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub files: u64,
    pub new: u64,
    pub changed: u64,
    /// Names that are not UTF-8 (cannot be named on the server): skipped and logged.
    pub skipped_names: u64,
}

pub struct Tracker {
    db: StateDb,
    matchers: Vec<Matcher>,
    timing: Timing,
    scratch: PathBuf,
    seen: Seen,
    live: Identities,
    open: OpenFiles,
    inflater: Option<Inflater>,
    /// Rows being sent (at most one send per row).
    inflight: HashSet<i64>,
    /// Rows whose names are being told to the server.
    naming: HashSet<i64>,
    /// Rows not to hand out any more in this run (`--once` gave up on them).
    parked: HashSet<i64>,
    /// Rows with no whole line to send at this size: they wait for a newline or the quiet period.
    held: HashMap<i64, u64>,
    /// Rows whose last send succeeded in this process: the server holds exactly their archived
    /// size, so the next append needs no SIZE first.
    in_step: HashSet<i64>,
    /// Rows read through an open file whose path is gone (removed, or moved out of the roots):
    /// no events come for them, so they are looked at on every tick.
    detached: HashSet<i64>,
    /// Rows sending the decompressed bytes of a compressed copy: (its key, the decompressed file).
    inflated: HashMap<i64, (CopyKey, PathBuf)>,
    /// Compressed files being decompressed, and ones found to hold no known generation.
    inflating: HashSet<CopyKey>,
    not_copies: HashSet<CopyKey>,
    orphans: usize,
    /// A full scan is wanted at (ms): something moved and must be found.
    rescan_at: Option<i64>,
    last_full_scan_ms: i64,
    /// Row ids whose identity a running full scan has met.
    found: Option<HashSet<i64>>,
    /// Tracked rows whose path vanished in this batch of events.
    vanished: Vec<(i64, PathBuf)>,
    /// When open files were last checked for being idle.
    last_sweep_ms: i64,
    /// Rows held open that have nothing left to send: closed once quiet.
    caught_up: HashSet<i64>,
}

impl Tracker {
    pub fn new(
        db: StateDb,
        matchers: Vec<Matcher>,
        timing: Timing,
        scratch: PathBuf,
        open_cap: usize,
    ) -> Result<Tracker> {
        for m in &matchers {
            db.fill_paths(m.id, &m.root)?;
        }
        db.reset_ready(timing.quiet_ms)?;
        let mut seen = Seen::default();
        let mut live = Identities::default();
        db.tracked_all(|id, dev, ino, path, size, mtime_ns| {
            live.insert((dev, ino), id);
            seen.note(
                path,
                Look {
                    size,
                    mtime_ns,
                    dev,
                    ino,
                },
            );
        })?;
        let orphans = db.orphans()?.len();
        // What has bytes to send is held open again (it may be removed before it is sent).
        let mut open = OpenFiles::new(open_cap);
        for r in db.pending_tracked(open_cap)? {
            open.open(r.id, &r.path, (r.dev, r.ino));
        }
        // Decompressed copies from before a restart are made again when needed.
        if let Ok(rd) = std::fs::read_dir(&scratch) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("inflate-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Tracker {
            db,
            matchers,
            timing,
            scratch,
            seen,
            live,
            open,
            inflater: None,
            inflight: HashSet::new(),
            naming: HashSet::new(),
            parked: HashSet::new(),
            held: HashMap::new(),
            in_step: HashSet::new(),
            detached: HashSet::new(),
            inflated: HashMap::new(),
            inflating: HashSet::new(),
            not_copies: HashSet::new(),
            orphans,
            rescan_at: None,
            last_full_scan_ms: 0,
            found: None,
            vanished: Vec::new(),
            last_sweep_ms: 0,
            caught_up: HashSet::new(),
        })
    }

    /// Decompression of compressed copies runs here (without it, they are not examined).
    pub fn set_inflater(&mut self, i: Inflater) {
        self.inflater = Some(i);
    }

    pub fn db(&self) -> &StateDb {
        &self.db
    }

    /// Runs `f` as one transaction of the state DB (a batch of observations and outcomes is one
    /// commit).
    pub fn transaction<T, E: From<crate::state::StateError>>(
        &mut self,
        f: impl FnOnce(&mut Tracker) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.db.begin()?;
        match f(self) {
            Ok(v) => {
                self.db.commit()?;
                Ok(v)
            }
            Err(e) => {
                self.db.rollback();
                Err(e)
            }
        }
    }

    /// Hands `row` out no more in this run.
    pub fn park(&mut self, row: i64) -> Result<()> {
        self.parked.insert(row);
        if let Some(mut r) = self.db.get(row)? {
            self.save(&mut r)?;
        }
        Ok(())
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len() + self.naming.len()
    }

    /// Work that is not in the database: decompressions under way.
    pub fn busy(&self) -> bool {
        !self.inflating.is_empty()
    }

    pub fn orphans(&self) -> usize {
        self.orphans
    }

    /// The source that wants `path`, and the path relative to its root.
    fn target(&self, path: &Path) -> Option<(usize, String)> {
        self.matchers.iter().enumerate().find_map(|(i, m)| {
            let rel = m.rel_of(path)?;
            m.wants(&rel).then_some((i, rel))
        })
    }

    fn matcher_of(&self, r: &FileRow) -> Option<&Matcher> {
        self.matchers.iter().find(|m| m.id == r.source)
    }

    /// The name a path has for people: relative to the root it is under (with the source's
    /// prefix), else its file name.
    fn local_name(&self, path: &Path) -> String {
        for m in &self.matchers {
            if let Some(rel) = m.rel_of(path) {
                return m.remote(&rel).trim_start_matches('/').to_string();
            }
        }
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn at_original_path(&self, r: &FileRow) -> bool {
        self.matcher_of(r)
            .is_some_and(|m| m.root.join(&r.rel) == r.path)
    }

    /// When `r` may be sent next.
    fn ready_at(&self, r: &FileRow) -> i64 {
        if r.state != FileState::Pending
            || self.inflight.contains(&r.id)
            || self.parked.contains(&r.id)
        {
            return i64::MAX;
        }
        let quiet_at = r.stable_since_ms.saturating_add(self.timing.quiet_ms);
        let t = if r.size == 0 {
            // An empty file is archived only where it was created, once quiet: one that is
            // renamed away empty (a rotation nobody wrote to) is no generation worth a file.
            if self.at_original_path(r) {
                quiet_at
            } else {
                i64::MAX
            }
        } else if r.maybe_copy {
            // Held back as a possible copy (copytruncate copies, then truncates, within seconds):
            // once quiet, or after COPY_WAIT if it keeps growing (a new log that starts as the
            // old one did is still a log).
            quiet_at.min(r.first_seen_ms.saturating_add(COPY_WAIT_MS))
        } else if r.grew {
            let next = r.sent_at_ms.saturating_add(self.timing.interval_ms);
            if self.held.get(&r.id) == Some(&r.size) {
                next.max(quiet_at)
            } else {
                next
            }
        } else {
            quiet_at
        };
        t.max(r.next_try_ms)
    }

    fn save(&self, r: &mut FileRow) -> Result<()> {
        r.ready_at_ms = self.ready_at(r);
        self.db.update(r)
    }

    /// Whether a full scan is due (asked for by something that moved).
    pub fn rescan_due(&self, now: i64) -> bool {
        self.rescan_at.is_some_and(|t| t <= now)
    }

    pub fn want_rescan(&mut self, now: i64) {
        let soon = now + 200;
        self.rescan_at = Some(self.rescan_at.map_or(soon, |t| t.min(soon)));
    }

    /// Walks every source (symlinks are never followed), records what changed, follows renamed
    /// files by identity and notices those that are gone.
    pub fn full_scan(&mut self, now: i64) -> Result<ScanReport> {
        self.rescan_at = None;
        let mut report = ScanReport::default();
        self.found = Some(HashSet::new());
        let roots: Vec<PathBuf> = self.matchers.iter().map(|m| m.root.clone()).collect();
        let mut failed = None;
        for root in &roots {
            scan::walk(root, |path, entry| {
                use std::os::unix::fs::DirEntryExt;
                if failed.is_none() {
                    if let Err(e) = self.scan_one(path, entry.ino(), now, &mut report) {
                        failed = Some(e);
                    }
                }
            });
        }
        if let Some(e) = failed {
            self.found = None;
            return Err(e);
        }
        let found = self.found.take().unwrap_or_default();
        let missing: Vec<(Ident, i64)> = self
            .live
            .iter()
            .filter(|(_, id)| !found.contains(id))
            .collect();
        for (ident, id) in missing {
            self.missing(ident, id, now)?;
        }
        self.last_full_scan_ms = now;
        Ok(report)
    }

    /// One regular file met by a full scan (`ino` from its directory entry, before any `stat`).
    fn scan_one(
        &mut self,
        path: PathBuf,
        ino: u64,
        now: i64,
        report: &mut ScanReport,
    ) -> Result<()> {
        let wanted = self.target(&path);
        if wanted.is_none() {
            if path.to_str().is_none() {
                report.skipped_names += 1;
                if self.seen.get(&path).is_none() {
                    tracing::warn!(path = %path.display(), "skipping a file whose name is not UTF-8");
                    self.seen.note(
                        &path,
                        Look {
                            size: 0,
                            mtime_ns: 0,
                            dev: 0,
                            ino: 0,
                        },
                    );
                }
            }
            let interesting =
                self.live.may_hold(ino) || rotated::kind_of(&path).is_some() || self.orphans > 0;
            if !interesting {
                return Ok(());
            }
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            return Ok(());
        };
        if !meta.is_file() {
            return Ok(());
        }
        if wanted.is_some() {
            report.files += 1;
        }
        let look = Look::of(&meta);
        if self.seen.get(&path) == Some(look) {
            if let Some(id) = self.live.get((look.dev, look.ino)) {
                self.mark_found(id);
                return Ok(());
            }
            // An unchanged file nobody tracks may still be the copy a new orphan waits for
            // (copytruncate's copy is made before the truncation is seen).
            if wanted.is_none() && self.orphans == 0 {
                return Ok(());
            }
        }
        match self.observe_file(&path, &meta, now)? {
            Observed::New => report.new += 1,
            Observed::Changed => report.changed += 1,
            Observed::Nothing => {}
        }
        Ok(())
    }

    fn mark_found(&mut self, id: i64) {
        if let Some(f) = self.found.as_mut() {
            f.insert(id);
        }
    }

    /// Observes one path (from an event). A new folder is walked at once: files created in it
    /// before its watch was set up send no events.
    pub fn observe_path(&mut self, path: &Path, closed: bool, now: i64) -> Result<()> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(_) => {
                // Gone or renamed away. If a tracked file was there and no event tells where it
                // went (the new name's usually comes in the same batch), a scan looks for it.
                if let Some(look) = self.seen.get(path) {
                    self.seen.forget(path);
                    if let Some(id) = self.live.get((look.dev, look.ino)) {
                        self.vanished.push((id, path.to_path_buf()));
                    }
                }
                return Ok(());
            }
        };
        if meta.is_dir() {
            let mut found = Vec::new();
            scan::walk(path, |p, _| found.push(p));
            for p in found {
                self.observe_path(&p, false, now)?;
            }
            return Ok(());
        }
        if !meta.is_file() {
            return Ok(());
        }
        self.observe_file(path, &meta, now)?;
        if closed {
            if let Some(id) = self.live.get((meta.dev(), meta.ino())) {
                if let Some(mut r) = self.db.get(id)? {
                    // Closed after writing: complete as it is (an empty file still waits).
                    if r.size > 0 && r.size == meta.len() {
                        r.stable_since_ms = 0;
                        self.save(&mut r)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Records what `path` is now.
    fn observe_file(&mut self, path: &Path, meta: &Metadata, now: i64) -> Result<Observed> {
        let look = Look::of(meta);
        if let Some(id) = self.live.get((look.dev, look.ino)) {
            match self.db.get(id)? {
                Some(r) => return self.observe_known(r, path, meta, now),
                None => self.live.remove((look.dev, look.ino), id),
            }
        }
        if let Some(kind) = rotated::kind_of(path) {
            let key = CopyKey {
                dev: look.dev,
                ino: look.ino,
                size: look.size,
                mtime_ns: look.mtime_ns,
            };
            if self.consider_compressed(path, kind, key)? {
                self.seen.note(path, look);
                return Ok(Observed::Nothing);
            }
        }
        match self.target(path) {
            Some((mi, rel)) => self.observe_new(mi, &rel, path, meta, now),
            None => {
                self.seen.note(path, look);
                if self.orphans > 0 && look.size > 0 {
                    self.consider_copy(path, look, now)?;
                }
                Ok(Observed::Nothing)
            }
        }
    }

    /// `path` holds the file of the tracked row `r`.
    fn observe_known(
        &mut self,
        mut r: FileRow,
        path: &Path,
        meta: &Metadata,
        now: i64,
    ) -> Result<Observed> {
        let look = Look::of(meta);
        self.mark_found(r.id);
        self.detached.remove(&r.id);
        let renamed = r.path != path;
        if renamed && !self.open.holds(r.id) {
            // Not held open: the inode may have been freed and given to another file since.
            match self.same_head(&r, path) {
                Ok(true) => {}
                Ok(false) => {
                    self.live.remove((r.dev, r.ino), r.id);
                    self.release(&mut r, now, "its file was replaced")?;
                    return self.observe_file(path, meta, now);
                }
                // A read error is no answer: decide at the next look.
                Err(e) => {
                    tracing::debug!(path = %path.display(), "cannot read ({e}); looking again later");
                    return Ok(Observed::Nothing);
                }
            }
        }
        self.seen.note(path, look);
        if renamed {
            if self
                .seen
                .get(&r.path)
                .is_some_and(|l| (l.dev, l.ino) == (r.dev, r.ino))
            {
                self.seen.forget(&r.path.clone());
            }
            r.path = path.to_path_buf();
            let name = self.local_name(path);
            self.db.add_name(r.id, &name)?;
        }
        if look.size == r.size && look.mtime_ns == r.mtime_ns {
            if renamed {
                self.save(&mut r)?;
            }
            return Ok(Observed::Nothing);
        }
        if look.size < r.size {
            self.truncated(r, path, meta, now)?;
            return Ok(Observed::Changed);
        }
        if r.head_len < HEAD && look.size > r.head_len {
            // The head grows with the file up to HEAD bytes: its start must not have changed.
            let grown = self.read_file(&r, path).and_then(|f| {
                let before = scan::head_sha(&f, r.head_len)?;
                let n = look.size.min(HEAD);
                Ok((before, scan::head_sha(&f, n)?, n))
            });
            match grown {
                Ok((before, _, _)) if before != r.head_sha => {
                    self.truncated(r, path, meta, now)?;
                    return Ok(Observed::Changed);
                }
                Ok((_, head, n)) => {
                    r.head_sha = head;
                    r.head_len = n;
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), "cannot read ({e}); looking again later");
                    return Ok(Observed::Nothing);
                }
            }
        }
        self.grown(&mut r, look, now)?;
        Ok(Observed::Changed)
    }

    /// The row's file grew (or was touched) to `look`.
    fn grown(&mut self, r: &mut FileRow, look: Look, now: i64) -> Result<()> {
        if look.size > r.size && !r.maybe_copy && r.first_seen_ms < now {
            r.grew = true;
        }
        if look.size != r.size {
            self.held.remove(&r.id);
        }
        r.size = look.size;
        r.mtime_ns = look.mtime_ns;
        r.stable_since_ms = now;
        if r.size > r.archived_size {
            r.behind_since_ms.get_or_insert(now);
            if r.state == FileState::Archived {
                r.state = FileState::Pending;
            }
        }
        if r.state == FileState::Pending && !self.open.holds(r.id) {
            self.open.open(r.id, &r.path, (r.dev, r.ino));
        }
        self.save(r)
    }

    /// A file to read `r` through: the open one, else `path` if it is still `r`'s inode.
    fn read_file(&self, r: &FileRow, path: &Path) -> std::io::Result<Arc<File>> {
        if let Some(f) = self.open.get(r.id) {
            return Ok(f);
        }
        let f = rotated::open_nofollow(path)?;
        let m = f.metadata()?;
        if (m.dev(), m.ino()) != (r.dev, r.ino) {
            return Err(std::io::Error::other("replaced meanwhile"));
        }
        Ok(Arc::new(f))
    }

    fn same_head(&self, r: &FileRow, path: &Path) -> std::io::Result<bool> {
        let f = rotated::open_nofollow(path)?;
        if f.metadata()?.len() < r.head_len {
            return Ok(false);
        }
        Ok(scan::head_sha(&f, r.head_len)? == r.head_sha)
    }

    /// `r`'s file now holds other bytes (truncated or rewritten in place): `r` follows it no
    /// more, and what is there now is a new generation of `path` if a source wants `path`.
    fn truncated(&mut self, mut r: FileRow, path: &Path, meta: &Metadata, now: i64) -> Result<()> {
        self.live.remove((r.dev, r.ino), r.id);
        self.open.close(r.id);
        self.release(&mut r, now, "truncated locally")?;
        self.seen.forget(path);
        if let Some((mi, rel)) = self.target(path) {
            self.observe_new(mi, &rel, path, meta, now)?;
        }
        Ok(())
    }

    /// `r`'s file is not to be followed any more (gone, or no longer `r`'s). Bytes it had that
    /// were not archived are waited for in a copy; an empty file never sent is forgotten.
    fn release(&mut self, r: &mut FileRow, now: i64, why: &str) -> Result<()> {
        r.tracked = false;
        self.open.close(r.id);
        self.detached.remove(&r.id);
        self.held.remove(&r.id);
        let followed = matches!(r.state, FileState::Pending | FileState::Archived);
        let unsent = r.size > r.archived_size;
        let never_sent = r.archived_at_ms.is_none() && !self.inflight.contains(&r.id);
        // Written to a moment ago: it may hold bytes the agent has not even seen (written just
        // before a copytruncate or a removal, their events not yet read).
        let recent = now - r.stable_since_ms < self.timing.quiet_ms.max(1000);
        if followed && (unsent || (recent && !(r.size == 0 && never_sent))) {
            tracing::debug!(file = %r.rel, why, "waiting for a copy ({} bytes known unsent)", r.size.saturating_sub(r.archived_size));
            r.state = FileState::Orphaned;
            r.orphaned_at_ms = Some(now);
            self.orphans += 1;
            self.want_rescan(now);
            self.save(r)?;
            return self.adopt_waiting_copy(r.id, now);
        }
        if r.state == FileState::Pending {
            if never_sent {
                // Empty and never sent: nothing to archive, no generation to name.
                return self.db.delete(r.id);
            }
            r.state = FileState::Archived;
            r.behind_since_ms = None;
        }
        self.save(r)
    }

    /// A path a source wants, holding a file no row tracks: a new file, or a new generation of
    /// that path (the previous one was rotated away or replaced).
    fn observe_new(
        &mut self,
        mi: usize,
        rel: &str,
        path: &Path,
        meta: &Metadata,
        now: i64,
    ) -> Result<Observed> {
        let look = Look::of(meta);
        let file = match rotated::open_nofollow(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(path = %path.display(), "cannot open ({e}); looking again later");
                return Ok(Observed::Nothing);
            }
        };
        let head_len = look.size.min(HEAD);
        let head = match file.metadata().and_then(|m| {
            if (m.dev(), m.ino()) != (look.dev, look.ino) {
                return Err(std::io::Error::other("replaced meanwhile"));
            }
            scan::head_sha(&file, head_len)
        }) {
            Ok(h) => h,
            // A transient read error must not be taken for anything (rotation least of all).
            Err(e) => {
                tracing::debug!(path = %path.display(), "cannot read ({e}); looking again later");
                return Ok(Observed::Nothing);
            }
        };
        self.seen.note(path, look);
        if self.orphans > 0 {
            if let Some(o) = self.orphan_copied_by(&file, look, &head, head_len)? {
                self.adopt(o, path, file, look, now)?;
                return Ok(Observed::Changed);
            }
        }
        let m = &self.matchers[mi];
        let prev = self.db.latest(m.id, rel)?;
        let generation = prev.as_ref().map_or(1, |p| p.generation + 1);
        let storable = scan::storable(rel);
        let maybe_copy = head_len > 0 && self.db.head_tracked(&head, head_len)?;
        let mut r = FileRow {
            id: 0,
            source: m.id,
            rel: rel.to_string(),
            generation,
            dev: look.dev,
            ino: look.ino,
            path: path.to_path_buf(),
            tracked: true,
            head_sha: head,
            head_len,
            size: look.size,
            mtime_ns: look.mtime_ns,
            stable_since_ms: scan::unchanged_since(look.mtime_ns, now),
            grew: false,
            maybe_copy,
            archived_size: 0,
            archived_sha: None,
            tail_sha: None,
            remote: scan::versioned(&m.remote(rel), generation),
            state: if storable {
                FileState::Pending
            } else {
                FileState::Unstorable
            },
            attempts: 0,
            last_error: (!storable).then(|| "the name cannot be stored on the server".to_string()),
            next_try_ms: 0,
            ready_at_ms: 0,
            sent_at_ms: 0,
            behind_since_ms: (look.size > 0).then_some(now),
            orphaned_at_ms: None,
            lost_bytes: 0,
            first_seen_ms: now,
            archived_at_ms: None,
        };
        r.ready_at_ms = self.ready_at(&r);
        r.id = self.db.insert(&r)?;
        self.live.insert((look.dev, look.ino), r.id);
        self.mark_found(r.id);
        if storable {
            self.open.keep(r.id, file);
        }
        Ok(Observed::New)
    }

    /// When the tracker wants to run next without being woken (ms).
    pub fn next_wake(&self, now: i64) -> Result<Option<i64>> {
        let mut t = self.db.next_ready_ms()?;
        let mut at = |x: i64| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(r) = self.rescan_at {
            at(r);
        }
        if !self.detached.is_empty() || !self.open.is_empty() {
            at(now + 250.max(self.timing.quiet_ms / 4).min(1000));
        }
        if self.orphans > 0 {
            at(now + 1000);
        }
        Ok(t)
    }
}

/// What an observation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observed {
    Nothing,
    New,
    Changed,
}

#[cfg(test)]
mod tests;
