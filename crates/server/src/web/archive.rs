//! Paths in the archive as URLs name them, and the files behind them.
//!
//! Every path from a request is hostile. It is split into components and refused outright if any
//! is `.`, `..`, or holds a NUL or a control character; names the catalog hides (temporary
//! uploads, agents' `.logarchive` folders) are "not found". Files are then opened through the
//! store the FTP service writes: a folder opens them beneath its directory descriptor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so not even a symlink planted inside the
//! archive leads out of it; an object store has no other paths to reach.

use super::error::WebError;
use logarchive_ftp::names::{is_temp_name, SCRATCH_DIR};
use logarchive_ftp::server::{Reader, Storage, VirtualPath};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// A validated archive path: `/` or `/agent01/Logs/a.txt` (no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePath {
    /// Without the leading slash; empty for the root.
    rel: String,
}

impl ArchivePath {
    pub fn root() -> ArchivePath {
        ArchivePath { rel: String::new() }
    }

    /// From a (percent-decoded) URL path tail. Empty components (`a//b`, a trailing `/`) are
    /// ignored; anything that could climb or confuse is a 400.
    pub fn parse(raw: &str) -> Result<ArchivePath, WebError> {
        let mut parts = Vec::new();
        for c in raw.split('/') {
            if c.is_empty() {
                continue;
            }
            if c == "." || c == ".." {
                return Err(WebError::BadRequest(
                    "'.' and '..' are not allowed in archive paths".into(),
                ));
            }
            if c.chars().any(|ch| ch.is_control()) || c.contains('\\') {
                return Err(WebError::BadRequest(
                    "control characters and backslashes are not allowed in archive paths".into(),
                ));
            }
            if c.len() > 255 {
                return Err(WebError::BadRequest("path component too long".into()));
            }
            parts.push(c);
        }
        let p = ArchivePath {
            rel: parts.join("/"),
        };
        if p.is_hidden() {
            return Err(WebError::NotFound);
        }
        Ok(p)
    }

    /// What the catalog never shows: temporary upload names anywhere, and an agent's own
    /// `.logarchive` bookkeeping folder.
    fn is_hidden(&self) -> bool {
        self.rel
            .split('/')
            .enumerate()
            .any(|(i, c)| is_temp_name(c) || (i == 1 && c == SCRATCH_DIR))
    }

    pub fn is_root(&self) -> bool {
        self.rel.is_empty()
    }

    /// `/agent01/Logs/a.txt`
    pub fn display(&self) -> String {
        format!("/{}", self.rel)
    }

    /// Relative to the archive root (empty for the root).
    pub fn rel(&self) -> &Path {
        Path::new(&self.rel)
    }

    /// The URL form: each component percent-encoded, joined with `/`, with a leading `/`.
    pub fn url(&self) -> String {
        let mut out = String::new();
        for c in self.rel.split('/').filter(|c| !c.is_empty()) {
            out.push('/');
            out.push_str(&encode_component(c));
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    pub fn name(&self) -> &str {
        self.rel.rsplit('/').next().unwrap_or("")
    }

    pub fn agent(&self) -> Option<&str> {
        self.rel.split('/').next().filter(|a| !a.is_empty())
    }

    pub fn parent(&self) -> ArchivePath {
        match self.rel.rsplit_once('/') {
            Some((p, _)) => ArchivePath { rel: p.to_string() },
            None => ArchivePath::root(),
        }
    }

    pub fn child(&self, name: &str) -> ArchivePath {
        if self.rel.is_empty() {
            ArchivePath {
                rel: name.to_string(),
            }
        } else {
            ArchivePath {
                rel: format!("{}/{name}", self.rel),
            }
        }
    }

    /// Root first: (name, path) for a breadcrumb.
    pub fn crumbs(&self) -> Vec<(String, ArchivePath)> {
        let mut out = vec![("archive".to_string(), ArchivePath::root())];
        let mut p = ArchivePath::root();
        for c in self.rel.split('/').filter(|c| !c.is_empty()) {
            p = p.child(c);
            out.push((c.to_string(), p.clone()));
        }
        out
    }
}

/// Percent-encodes one path component for a URL (RFC 3986 unreserved characters stay).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The archive, through the store the FTP service writes (a folder, or an object store).
pub struct Archive {
    store: Arc<dyn Storage>,
    /// The server's runtime: calls from blocking threads (search, zip) wait on it.
    rt: tokio::runtime::Handle,
}

/// An open file of the archive: what it was when opened, readable at any offset (blocking: on
/// a worker or blocking thread).
pub struct OpenFile {
    reader: Box<dyn Reader>,
}

impl OpenFile {
    /// The frames of a file stored compressed (for a search that skips frames).
    pub fn seek_index(&self) -> Option<&logarchive_store::seekable::SeekableReader> {
        self.reader.seek_index()
    }

    /// Its size when opened.
    pub fn len(&self) -> u64 {
        self.reader.len()
    }

    /// Whether it was empty when opened.
    pub fn is_empty(&self) -> bool {
        self.reader.is_empty()
    }

    /// Its last change when opened.
    pub fn modified(&self) -> Option<SystemTime> {
        self.reader.modified()
    }

    /// Which file it is (a file later put at the same name is another).
    pub fn identity(&self) -> u64 {
        self.reader.identity()
    }

    /// Reads at `offset`; 0 at the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.reader.read_at(buf, offset)
    }

    /// The store's reader.
    pub fn reader(&self) -> &dyn Reader {
        &*self.reader
    }
}

fn vpath(p: &ArchivePath) -> Result<VirtualPath, WebError> {
    VirtualPath::parse(&Path::new("/").join(p.rel())).map_err(|_| WebError::NotFound)
}

impl Archive {
    /// Must be called inside the server's runtime.
    pub fn new(store: Arc<dyn Storage>) -> Archive {
        Archive {
            store,
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// The store itself.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// Opens a regular file for reading; anything else (a folder, a symlink, nothing) is 404.
    pub async fn open_file(&self, p: &ArchivePath) -> Result<OpenFile, WebError> {
        if p.is_root() {
            return Err(WebError::NotFound);
        }
        let reader = self
            .store
            .open_reader(&vpath(p)?)
            .await
            .map_err(not_found_or_internal)?;
        Ok(OpenFile { reader })
    }

    /// [`Archive::open_file`] from a blocking thread (never from async code).
    pub fn open_file_blocking(&self, p: &ArchivePath) -> Result<OpenFile, WebError> {
        self.rt.block_on(self.open_file(p))
    }

    /// Whether `p` is a folder of the archive (the root is).
    pub async fn is_dir(&self, p: &ArchivePath) -> bool {
        match vpath(p) {
            Ok(v) => self.store.stat(&v).await.is_ok_and(|m| m.is_dir()),
            Err(_) => false,
        }
    }

    /// Reads a small file (at most `max` bytes), e.g. an agent's status document, with its
    /// modification time (ms since the epoch): when the server last wrote it, whatever its
    /// contents claim. From a blocking thread.
    pub fn read_small_with_time(&self, rel: &Path, max: u64) -> Option<(Vec<u8>, i64)> {
        let v = VirtualPath::parse(&Path::new("/").join(rel)).ok()?;
        let f = self.rt.block_on(self.store.open_reader(&v)).ok()?;
        if f.len() > max {
            return None;
        }
        let mtime = f
            .modified()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        let mut buf = vec![0u8; f.len() as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(_) => return None,
            }
        }
        buf.truncate(got);
        Some((buf, mtime))
    }
}

fn not_found_or_internal(e: std::io::Error) -> WebError {
    // Missing, a folder, not a folder on the way, a symlink refused, or a path leaving the
    // archive: all look the same from outside.
    let gone = matches!(
        e.kind(),
        std::io::ErrorKind::NotFound
            | std::io::ErrorKind::PermissionDenied
            | std::io::ErrorKind::IsADirectory
            | std::io::ErrorKind::NotADirectory
    ) || matches!(
        e.raw_os_error(),
        Some(libc::ENOTDIR | libc::ELOOP | libc::EXDEV | libc::ENAMETOOLONG)
    );
    if gone {
        WebError::NotFound
    } else {
        WebError::Internal(format!("opening a file of the archive: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for bad in ["..", "/a/../b", "a/./b", "a/\u{0}b", "a/\nb", "a\\..\\b"] {
            assert!(
                matches!(ArchivePath::parse(bad), Err(WebError::BadRequest(_))),
                "{bad:?}"
            );
        }
        for hidden in [
            "/a/.x.log.logarchive-tmp",
            "/agent01/.logarchive/status.json",
        ] {
            assert!(
                matches!(ArchivePath::parse(hidden), Err(WebError::NotFound)),
                "{hidden}"
            );
        }
        let p = ArchivePath::parse("//agent01//Logs/a b#?.txt/").unwrap();
        assert_eq!(p.display(), "/agent01/Logs/a b#?.txt");
        assert_eq!(p.url(), "/agent01/Logs/a%20b%23%3F.txt");
        assert_eq!(p.agent(), Some("agent01"));
        assert_eq!(p.parent().display(), "/agent01/Logs");
        assert_eq!(p.crumbs().len(), 4);
        assert!(ArchivePath::parse("/").unwrap().is_root());
    }
}
