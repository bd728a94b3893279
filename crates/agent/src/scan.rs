//! Discovery primitives: which local paths a source wants, walking a source's tree, and reading
//! what identifies a file (its head, the window before an offset, where its last whole line
//! ends). What the findings mean is [`crate::track`]'s business.

use crate::config::Source;
use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Bytes of a file's head that identify it (with device and inode), and the size of the window
/// before the archived size that is checked before every append.
pub const HEAD: u64 = 4096;

/// A source with its patterns compiled.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The source's stable id in the state DB ([`crate::state::StateDb::source_ids`]).
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

/// Names the archive cannot store (the server refuses them): control characters, backslashes.
pub fn storable(rel: &str) -> bool {
    !rel.chars().any(|c| c.is_control() || c == '\\')
        && rel
            .split('/')
            .all(|p| p.len() <= 255 && !p.trim_matches('.').is_empty())
}

pub use logarchive_ftp::names::versioned;

/// Modification time in nanoseconds, saturating far in the future or past instead of wrapping.
pub fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    nanos(m.mtime(), m.mtime_nsec())
}

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(nsec))
        .unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX })
}

/// A file seen for the first time has been unchanged since its mtime (a log written an hour
/// ago is ready at once; one written a moment ago waits the quiet period).
pub fn unchanged_since(mtime_ns: i64, now_ms: i64) -> i64 {
    (mtime_ns / 1_000_000).min(now_ms)
}

/// Reads exactly `buf.len()` bytes at `offset`, or fewer at the end of the file.
fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// SHA-256 (hex) of bytes `[start, end)`; an error if the file is shorter (it changed).
pub fn range_sha(f: &File, start: u64, end: u64) -> std::io::Result<String> {
    let mut buf = vec![0u8; (end - start) as usize];
    let got = read_full_at(f, &mut buf, start)?;
    if got < buf.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the file is shorter than it was",
        ));
    }
    Ok(hex::encode(Sha256::digest(&buf)))
}

/// SHA-256 of the first `len` bytes (`len` ≤ [`HEAD`]).
pub fn head_sha(f: &File, len: u64) -> std::io::Result<String> {
    range_sha(f, 0, len)
}

/// SHA-256 of the (up to) [`HEAD`] bytes before `end`; `None` for `end == 0`.
pub fn window_sha(f: &File, end: u64) -> std::io::Result<Option<String>> {
    if end == 0 {
        return Ok(None);
    }
    range_sha(f, end.saturating_sub(HEAD), end).map(Some)
}

/// Longest unterminated last line held back from a growing file: beyond it, bytes are sent
/// without waiting for the newline.
pub const MAX_HELD_LINE: u64 = 1 << 20;

/// Where the last whole line in `[from, to)` ends (just after its `\n`); `from` when there is
/// none. Reads backwards, at most [`MAX_HELD_LINE`] bytes: a last line longer than that is not
/// held back (`to` is returned).
pub fn last_line_end(f: &File, from: u64, to: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = to;
    let floor = from.max(to.saturating_sub(MAX_HELD_LINE));
    while end > floor {
        let start = end.saturating_sub(buf.len() as u64).max(floor);
        let n = (end - start) as usize;
        let got = read_full_at(f, &mut buf[..n], start)?;
        if got < n {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than it was",
            ));
        }
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(if floor > from { to } else { from })
}

/// Walks `root` (symlinks are never followed) and calls `f` for every regular file with its
/// directory entry. Unreadable folders are skipped (a later scan tries again).
pub fn walk(root: &Path, mut f: impl FnMut(PathBuf, &std::fs::DirEntry)) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                f(entry.path(), &entry);
            }
        }
    }
}

/// What the last look at a path found, in a compact form: unchanged files (the vast majority at
/// every scan) are recognised without touching the database. ~40 bytes a file.
#[derive(Debug, Default)]
pub struct Seen {
    map: HashMap<u64, Look>,
}

/// Size, mtime and identity of a path at its last look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    pub size: u64,
    pub mtime_ns: i64,
    pub dev: u64,
    pub ino: u64,
}

impl Look {
    pub fn of(m: &std::fs::Metadata) -> Look {
        Look {
            size: m.len(),
            mtime_ns: mtime_ns(m),
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

impl Seen {
    fn key(path: &Path) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        path.hash(&mut h);
        h.finish()
    }

    pub fn get(&self, path: &Path) -> Option<Look> {
        self.map.get(&Self::key(path)).copied()
    }

    pub fn note(&mut self, path: &Path, look: Look) {
        self.map.insert(Self::key(path), look);
    }

    pub fn forget(&mut self, path: &Path) {
        self.map.remove(&Self::key(path));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        (d, f)
    }

    #[test]
    fn last_line_end_holds_back_an_unterminated_line() {
        let (_d, f) = file(b"one\ntwo\nthr");
        assert_eq!(last_line_end(&f, 0, 11).unwrap(), 8);
        assert_eq!(
            last_line_end(&f, 8, 11).unwrap(),
            8,
            "nothing whole after 8"
        );
        assert_eq!(last_line_end(&f, 0, 8).unwrap(), 8);
        assert_eq!(last_line_end(&f, 0, 3).unwrap(), 0);
        // Asked beyond the end: the file changed under us.
        assert!(last_line_end(&f, 0, 100).is_err());
    }

    #[test]
    fn a_line_longer_than_the_bound_is_not_held_back() {
        let mut long = b"start\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_HELD_LINE as usize + 10));
        let (_d, f) = file(&long);
        let len = long.len() as u64;
        assert_eq!(last_line_end(&f, 6, len).unwrap(), len);
        assert_eq!(last_line_end(&f, 0, 6).unwrap(), 6);
    }

    #[test]
    fn windows_and_heads() {
        let (_d, f) = file(&vec![7u8; 10_000]);
        assert_eq!(window_sha(&f, 0).unwrap(), None);
        assert_eq!(
            window_sha(&f, 10_000).unwrap(),
            window_sha(&f, 9_000).unwrap(),
            "same bytes, same window"
        );
        assert!(head_sha(&f, 4096).is_ok());
        assert!(range_sha(&f, 9_000, 10_001).is_err(), "past the end");
    }

    #[test]
    fn far_future_mtimes_saturate() {
        assert_eq!(nanos(1, 5), 1_000_000_005);
        assert_eq!(nanos(i64::MAX / 1000, 0), i64::MAX, "the year 292 million");
        assert_eq!(nanos(i64::MIN / 1000, 0), i64::MIN);
        assert_eq!(nanos(9_223_372_036, 854_775_807), i64::MAX);
        assert_eq!(nanos(9_223_372_036, 854_775_808), i64::MAX, "one past");
    }
}
