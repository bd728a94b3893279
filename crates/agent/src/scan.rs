//! Discovery: which local files match, and what changed since the last look. A full scan walks
//! every source; single paths (from file-system events) take the same route.

use crate::config::Source;
use crate::state::{FileRow, FileState, StateDb};
use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes of a file's head that identify it (with device and inode).
pub const HEAD: u64 = 4096;

/// A source with its patterns compiled.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The source's stable id in the state DB ([`StateDb::source_ids`]).
    pub id: usize,
    pub root: PathBuf,
    include: GlobSet,
    exclude: GlobSet,
    prefix: String,
}

impl Matcher {
    pub fn new(s: &Source) -> Result<Matcher, globset::Error> {
        let set = |pats: &[String]| -> Result<GlobSet, globset::Error> {
            let mut b = GlobSetBuilder::new();
            for p in pats {
                b.add(Glob::new(p)?);
            }
            b.build()
        };
        Ok(Matcher {
            id: 0,
            root: s.root.clone(),
            include: set(&s.include)?,
            exclude: set(&s.exclude)?,
            prefix: s.prefix.trim_matches('/').to_string(),
        })
    }

    /// The remote prefix, without slashes at either end.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn wants(&self, rel: &str) -> bool {
        self.include.is_match(rel) && !self.exclude.is_match(rel)
    }

    /// `<root>/<rel>` → `/<prefix>/<rel>` inside the agent's home.
    pub fn remote(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            format!("/{rel}")
        } else {
            format!("/{}/{rel}", self.prefix)
        }
    }

    /// The source-relative, `/`-separated path of `path`, if it is inside the root and UTF-8.
    pub fn rel_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
        let rel = parts?.join("/");
        (!rel.is_empty()).then_some(rel)
    }
}

/// What the database says of every tracked path, in a compact form: unchanged files (the vast
/// majority at every scan) are recognised without touching the database. 32 bytes a file.
#[derive(Debug, Default)]
pub struct Seen {
    map: std::collections::HashMap<u64, (u64, i64, u64)>,
}

impl Seen {
    fn key(source: usize, rel: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut h);
        rel.hash(&mut h);
        h.finish()
    }

    pub fn load(db: &StateDb) -> crate::state::Result<Seen> {
        let mut s = Seen::default();
        db.latest_all(|src, rel, size, mt, dev, ino| {
            s.map
                .insert(Self::key(src, rel), (size, mt, dev ^ ino.rotate_left(32)));
        })?;
        Ok(s)
    }

    fn unchanged(&self, source: usize, rel: &str, meta: &std::fs::Metadata) -> bool {
        self.map.get(&Self::key(source, rel))
            == Some(&(
                meta.len(),
                mtime_ns(meta),
                meta.dev() ^ meta.ino().rotate_left(32),
            ))
    }

    fn note(&mut self, source: usize, rel: &str, meta: &std::fs::Metadata) {
        self.map.insert(
            Self::key(source, rel),
            (
                meta.len(),
                mtime_ns(meta),
                meta.dev() ^ meta.ino().rotate_left(32),
            ),
        );
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What a scan found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub files: u64,
    pub new: u64,
    pub changed: u64,
    pub new_generations: u64,
    /// Names that are not UTF-8 (cannot be named on the server): skipped and logged.
    pub skipped_names: u64,
}

/// Names the archive cannot store (the server refuses them): control characters, backslashes.
pub fn storable(rel: &str) -> bool {
    !rel.chars().any(|c| c.is_control() || c == '\\')
        && rel
            .split('/')
            .all(|p| p.len() <= 255 && !p.trim_matches('.').is_empty())
}

fn head_sha(path: &Path, len: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        let n = f.read(&mut buf[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(hex::encode(Sha256::digest(&buf[..got])))
}

/// A file seen for the first time has been unchanged since its mtime (a log written an hour
/// ago is ready at once; one written a moment ago waits the quiet period).
fn unchanged_since(mtime_ns: i64, now_ms: i64) -> i64 {
    (mtime_ns / 1_000_000).min(now_ms)
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// Records one observed file. Returns (new, changed, new_generation).
pub fn observe(
    db: &StateDb,
    source: usize,
    m: &Matcher,
    rel: &str,
    meta: &std::fs::Metadata,
    now_ms: i64,
) -> crate::state::Result<(bool, bool, bool)> {
    let path = m.root.join(rel);
    let (size, mt) = (meta.len(), mtime_ns(meta));
    let head_len = size.min(HEAD);
    let head = |len| head_sha(&path, len).unwrap_or_default();
    let new_generation = |generation: i64| {
        let state = if storable(rel) {
            FileState::Pending
        } else {
            FileState::Unstorable
        };
        FileRow {
            id: 0,
            source,
            rel: rel.to_string(),
            generation,
            dev: meta.dev(),
            ino: meta.ino(),
            head_sha: head(head_len),
            head_len,
            size,
            mtime_ns: mt,
            stable_since_ms: unchanged_since(mt, now_ms),
            archived_size: 0,
            archived_sha: None,
            remote: versioned(&m.remote(rel), generation),
            state,
            attempts: 0,
            last_error: (state == FileState::Unstorable)
                .then(|| "the name cannot be stored on the server".to_string()),
            next_try_ms: 0,
            first_seen_ms: now_ms,
            archived_at_ms: None,
        }
    };
    let Some(prev) = db.latest(source, rel)? else {
        db.insert(&new_generation(1))?;
        return Ok((true, false, false));
    };
    if prev.size == size && prev.mtime_ns == mt && prev.dev == meta.dev() && prev.ino == meta.ino()
    {
        return Ok((false, false, false));
    }
    let same_file = prev.dev == meta.dev()
        && prev.ino == meta.ino()
        && size >= prev.archived_size
        && size >= prev.head_len
        && head(prev.head_len) == prev.head_sha;
    if same_file {
        let new_head =
            (prev.head_len < HEAD && size > prev.head_len).then(|| (head(head_len), head_len));
        db.observe(
            prev.id,
            size,
            mt,
            now_ms,
            new_head.as_ref().map(|(s, l)| (s.as_str(), *l)),
        )?;
        return Ok((false, true, false));
    }
    // Rotated, replaced or truncated: a new generation beside the old one.
    if prev.state == FileState::Pending {
        db.set_state(
            prev.id,
            FileState::Lost,
            Some("replaced locally before it was fully archived"),
        )?;
    }
    db.insert(&new_generation(prev.generation + 1))?;
    Ok((false, false, true))
}

/// The remote name of generation `g` ≥ 2 of a path: `app.log` → `app.log.~2~`.
pub fn versioned(remote: &str, g: i64) -> String {
    if g <= 1 {
        remote.to_string()
    } else {
        format!("{remote}.~{g}~")
    }
}

/// Walks every source (symlinks are never followed) and records what it finds.
pub fn scan_all(
    db: &mut StateDb,
    seen: &mut Seen,
    matchers: &[Matcher],
    now_ms: i64,
) -> crate::state::Result<ScanReport> {
    let mut report = ScanReport::default();
    db.transaction(|db| {
        for m in matchers {
            let mut stack = vec![m.root.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                for entry in entries.flatten() {
                    let Ok(ft) = entry.file_type() else { continue };
                    let path = entry.path();
                    if ft.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    if !ft.is_file() {
                        continue; // symlinks, sockets, devices
                    }
                    let Some(rel) = m.rel_of(&path) else {
                        report.skipped_names += 1;
                        tracing::warn!(path = %path.display(), "skipping a file whose name is not UTF-8");
                        continue;
                    };
                    if !m.wants(&rel) {
                        continue;
                    }
                    let Ok(meta) = entry.metadata() else { continue };
                    report.files += 1;
                    if seen.unchanged(m.id, &rel, &meta) {
                        continue;
                    }
                    seen.note(m.id, &rel, &meta);
                    let (n, c, g) = observe(db, m.id, m, &rel, &meta, now_ms)?;
                    report.new += n as u64;
                    report.changed += c as u64;
                    report.new_generations += g as u64;
                }
            }
        }
        Ok(())
    })?;
    Ok(report)
}

/// Observes one path (from an event). Returns the row id if it is a tracked file. A new folder
/// is walked at once: files created in it before its watch was set up send no events.
pub fn observe_path(
    db: &StateDb,
    matchers: &[Matcher],
    path: &Path,
    now_ms: i64,
) -> crate::state::Result<Option<i64>> {
    if std::fs::symlink_metadata(path)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                match e.file_type() {
                    Ok(ft) if ft.is_dir() => stack.push(e.path()),
                    Ok(ft) if ft.is_file() => {
                        observe_path(db, matchers, &e.path(), now_ms)?;
                    }
                    _ => {}
                }
            }
        }
        return Ok(None);
    }
    for m in matchers {
        let Some(rel) = m.rel_of(path) else { continue };
        if !m.wants(&rel) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        observe(db, m.id, m, &rel, &meta, now_ms)?;
        return Ok(db.latest(m.id, &rel)?.map(|r| r.id));
    }
    Ok(None)
}
