//! Compression at rest on the local disk. A quiet file `a.log` is rewritten as `a.log.zst`
//! (seekable zstd, [`crate::seekable`]), so an operator with a shell still finds it and reads it
//! with `zstd -dc`; the store shows it as `a.log`, with its original size, time, SHA-256 and
//! bytes, read at any offset.
//!
//! Invariants, kept here:
//! - A `N.zst` that starts with our header is the compressed form of `N`: it is listed, read and
//!   written as `N`, never under its own name. A `.zst` without our header is an ordinary file.
//! - Where both `N` and our `N.zst` exist (a crash between the two steps of a swap), `N` is the
//!   file: it holds every byte of `N.zst`. The next compaction pass removes the redundant twin.
//! - The swap (`N.zst` in, `N` out) and the start of any write to `N` are serialised by
//!   [`Writers`]: a file being written is never swapped, and a write never starts on a name
//!   that is half swapped. Readers in flight keep their open file and finish with its bytes.
//! - Compressed output replaces nothing until every frame decompressed to the source bytes and
//!   their SHA-256 equals the one the store knows (or just read) for that very file version.

use super::fsops::HomeDir;
use super::hash_cache::FileVersion;
use super::local::Inner;
use super::seekable::{self, Compressed, SeekableReader, HEADER_BYTES};
use super::store::{Download, Kind, Meta, Reader};
use crate::sha::Sha256State;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The extension of a compressed file on disk.
pub const PACKED_EXT: &str = "zst";
/// Files smaller than this stay as they are (the frames and tables would outweigh the gain).
pub const MIN_PACK: u64 = 4096;
/// The suffix of a compressed file being written (hidden from listings; removed when stale).
const PARTIAL: &str = ".logarchive-packing";
/// Names that are compressed already: compressing them again gains nothing.
const COMPRESSED: &[&str] = &[".zst", ".gz", ".xz", ".bz2", ".lz4", ".zip", ".7z"];

const READ: i32 = libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK;

/// `rel` + `.zst`.
pub(crate) fn packed_path(rel: &Path) -> PathBuf {
    let mut s: OsString = rel.as_os_str().to_owned();
    s.push(".");
    s.push(PACKED_EXT);
    PathBuf::from(s)
}

fn partial_path(rel: &Path) -> PathBuf {
    let name = rel.file_name().unwrap_or_default().to_string_lossy();
    rel.with_file_name(format!(".{name}.{PACKED_EXT}{PARTIAL}"))
}

/// The original's SHA-256 state if `file` is a compressed file of ours.
fn header_of(file: &File) -> Option<Sha256State> {
    let mut first = [0u8; HEADER_BYTES];
    let n = file.read_at(&mut first, 0).ok()?;
    seekable::read_header(&first[..n])
}

/// Whether `rel` is the on-disk name of a compressed file of ours (then it is not shown under
/// that name).
fn is_ours(root: &HomeDir, rel: &Path) -> bool {
    rel.extension().is_some_and(|e| e == PACKED_EXT)
        && root
            .open_at(rel, READ, 0)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
            .and_then(|f| header_of(&f))
            .is_some()
}

/// A file as the store shows it.
pub(crate) enum Found {
    /// Stored as it arrived.
    Raw(File, std::fs::Metadata),
    /// Stored compressed: the open `.zst`, its metadata and the original's SHA-256 state.
    Packed(File, std::fs::Metadata, Sha256State),
}

impl Found {
    pub(crate) fn meta(&self) -> Meta {
        match self {
            Found::Raw(_, m) => super::local::meta(m),
            Found::Packed(_, m, sha) => Meta::new(Kind::File, sha.len(), m.modified().ok()),
        }
    }
}

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such file")
}

/// Opens `rel` as the store shows it: the file itself (opened with `flags`), else its
/// compressed form. A compression or a rehydration may move the bytes between the two names
/// while this looks, in an order that always leaves one of them: the raw name is looked at
/// again once before giving up.
pub(crate) fn find(root: &HomeDir, rel: &Path, flags: i32) -> io::Result<Found> {
    if is_ours(root, rel) {
        return Err(not_found());
    }
    for _ in 0..2 {
        match root.open_at(rel, flags, 0) {
            Ok(f) => {
                let m = f.metadata()?;
                return Ok(Found::Raw(f, m));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match root.open_at(&packed_path(rel), READ, 0) {
            Ok(f) => {
                let m = f.metadata()?;
                return match header_of(&f) {
                    Some(sha) if m.is_file() => Ok(Found::Packed(f, m, sha)),
                    _ => Err(not_found()),
                };
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Err(not_found())
}

/// Whether the compressed form of `rel` exists (the name `rel` is taken).
pub(crate) fn packed_exists(root: &HomeDir, rel: &Path) -> bool {
    root.open_at(&packed_path(rel), READ, 0)
        .ok()
        .and_then(|f| header_of(&f))
        .is_some()
}

/// A folder's entries as the store shows them.
pub(crate) fn list(root: &HomeDir, rel: &Path) -> io::Result<Vec<(String, Meta)>> {
    let entries = root.list(rel)?;
    let names: std::collections::HashSet<OsString> =
        entries.iter().map(|(n, _)| n.clone()).collect();
    let mut out = Vec::with_capacity(entries.len());
    for (name, m) in entries {
        let Ok(name) = name.into_string() else {
            continue;
        };
        if name.ends_with(PARTIAL) {
            continue;
        }
        if m.is_file() {
            if let Some(base) = name.strip_suffix(&format!(".{PACKED_EXT}")) {
                let sha = root
                    .open_at(&rel.join(&name), READ, 0)
                    .ok()
                    .and_then(|f| header_of(&f));
                if let Some(sha) = sha {
                    if !base.is_empty() && !names.contains(std::ffi::OsStr::new(base)) {
                        out.push((
                            base.to_string(),
                            Meta::new(Kind::File, sha.len(), m.modified().ok()),
                        ));
                    }
                    continue;
                }
            }
        }
        out.push((name, super::local::meta(&m)));
    }
    Ok(out)
}

/// Reads a compressed file's original bytes for a download.
pub(crate) struct PackedDownload {
    pub(crate) reader: SeekableReader,
    pub(crate) pos: u64,
}

impl Download for PackedDownload {
    fn len(&self) -> u64 {
        self.reader.index().len()
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Random access to a compressed file's original bytes.
pub(crate) struct PackedReader {
    pub(crate) reader: SeekableReader,
    pub(crate) meta: std::fs::Metadata,
}

impl Reader for PackedReader {
    fn len(&self) -> u64 {
        self.reader.index().len()
    }
    fn modified(&self) -> Option<SystemTime> {
        self.meta.modified().ok()
    }
    fn identity(&self) -> u64 {
        self.meta.ino() ^ self.meta.dev().rotate_left(32)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.reader.read_at(buf, offset)
    }
    fn seek_index(&self) -> Option<&SeekableReader> {
        Some(&self.reader)
    }
}

/// Opens a compressed file for reading.
pub(crate) fn seekable(file: File, meta: &std::fs::Metadata) -> io::Result<SeekableReader> {
    SeekableReader::open(Box::new(file), meta.len())
}

/// Uploads in progress per path, and the lock the compactor's swap takes.
#[derive(Debug, Default)]
pub(crate) struct Writers {
    open: Mutex<HashMap<PathBuf, usize>>,
}

/// One upload's claim on its path; dropped when the upload ends.
#[derive(Debug)]
pub(crate) struct Writing {
    inner: Arc<Inner>,
    rel: PathBuf,
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut g = self.inner.writers.lock();
        if let Some(n) = g.get_mut(&self.rel) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.rel);
            }
        }
    }
}

impl Writers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `rel` for an upload: no swap of it starts until the claim is dropped, and any
    /// swap under way has finished.
    pub(crate) fn enter(inner: &Arc<Inner>, rel: &Path) -> Writing {
        *inner.writers.lock().entry(rel.to_path_buf()).or_default() += 1;
        Writing {
            inner: Arc::clone(inner),
            rel: rel.to_path_buf(),
        }
    }

    /// Runs `swap` if nobody writes `rel`, with new writes held off meanwhile.
    fn if_idle<T>(
        &self,
        rel: &Path,
        swap: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        let g = self.lock();
        if g.contains_key(rel) {
            return Ok(None);
        }
        let out = swap()?;
        drop(g);
        Ok(Some(out))
    }
}

/// Turns the compressed `rel.zst` back into `rel` (a compressed file that grows again), and
/// returns the new file's SHA-256 state (the header's). The caller holds a [`Writing`] claim.
pub(crate) fn rehydrate(
    root: &HomeDir,
    rel: &Path,
    file: File,
    meta: &std::fs::Metadata,
) -> io::Result<Sha256State> {
    let reader = seekable(file, meta)?;
    let sha = reader.index().sha.clone();
    let tmp = partial_path(rel);
    let out = root.open_at(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644)?;
    let result = (|| {
        let mut w = io::BufWriter::with_capacity(1 << 20, &out);
        let mut check = Sha256State::new();
        for i in 0..reader.index().frames.len() {
            let data = reader.frame(i)?;
            check.update(&data);
            w.write_all(&data)?;
        }
        w.flush()?;
        drop(w);
        if check.len() != sha.len() || check.digest() != sha.digest() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the compressed file does not give back its SHA-256",
            ));
        }
        out.sync_all()?;
        if let Ok(t) = meta.modified() {
            out.set_modified(t)?;
        }
        root.rename(&tmp, rel, false)?;
        root.sync_parent(rel)
    })();
    if let Err(e) = result {
        let _ = root.remove(&tmp, false);
        return Err(e);
    }
    // The raw file holds every byte now; the compressed one goes.
    root.remove(&packed_path(rel), false)?;
    Ok(sha)
}

fn hash_file(file: &File, len: u64) -> io::Result<Sha256State> {
    let mut h = Sha256State::new();
    let mut buf = vec![0u8; 1 << 20];
    while h.len() < len {
        let want = buf.len().min((len - h.len()) as usize);
        let n = file.read_at(&mut buf[..want], h.len())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h)
}

/// What a compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PackReport {
    /// Files compressed.
    pub files: u64,
    /// Their original bytes.
    pub raw_bytes: u64,
    /// Their compressed bytes.
    pub stored_bytes: u64,
    /// Files that could not be compressed (an error reading or writing them).
    pub skipped: u64,
    /// The first few of those errors, with their paths.
    pub errors: Vec<String>,
}

/// Compresses `rel` if it is a raw file quiet for `quiet`. `None`: left as it is.
pub(crate) fn compress_file(
    inner: &Arc<Inner>,
    rel: &Path,
    quiet: Duration,
    claim: Claim<'_>,
) -> io::Result<Option<Compressed>> {
    let root = &inner.root;
    let file = root.open_at(rel, READ, 0)?;
    let m = file.metadata()?;
    let now = SystemTime::now();
    if !m.is_file()
        || m.len() < MIN_PACK
        || m.modified()
            .map_or(true, |t| now.duration_since(t).unwrap_or_default() < quiet)
    {
        return Ok(None);
    }
    // Due: held against writers in other processes until this file is done.
    let Some(_held) = claim(rel)? else {
        return Ok(None);
    };
    // (What was read before the claim may be stale: look again under it.)
    let file = root.open_at(rel, READ, 0)?;
    let m = file.metadata()?;
    if !m.is_file()
        || m.len() < MIN_PACK
        || m.modified()
            .map_or(true, |t| now.duration_since(t).unwrap_or_default() < quiet)
    {
        return Ok(None);
    }
    let zst = packed_path(rel);
    match root.open_at(&zst, READ, 0) {
        Ok(f) => {
            // A twin left by a crash between two steps: the raw file holds every byte, and is
            // compressed again below. Else the name is another file's: leave both.
            if header_of(&f).is_none()
                || inner
                    .writers
                    .if_idle(rel, || root.remove(&zst, false))?
                    .is_none()
            {
                return Ok(None);
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let version = FileVersion::of(&m);
    let expect = match inner.hashes.state(rel, version) {
        Some(h) => h,
        None => hash_file(&file, m.len())?,
    };
    let tmp = partial_path(rel);
    let out = root.open_at(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644)?;
    let result = (|| -> io::Result<Option<Compressed>> {
        let mut w = io::BufWriter::with_capacity(1 << 20, &out);
        let mut pos = 0u64;
        let len = m.len();
        let done = seekable::compress(
            |buf| {
                let want = buf.len().min((len - pos) as usize);
                let n = file.read_at(&mut buf[..want], pos)?;
                pos += n as u64;
                Ok(n)
            },
            &mut w,
            &expect,
        )?;
        w.flush()?;
        drop(w);
        out.sync_all()?;
        if let Ok(t) = m.modified() {
            out.set_modified(t)?;
        }
        let swapped = inner.writers.if_idle(rel, || {
            // Only the very version that was compressed is replaced.
            if FileVersion::of(&root.stat(rel)?) != version {
                return Ok(false);
            }
            root.rename(&tmp, &zst, false)?;
            root.remove(rel, false)?;
            Ok(true)
        })?;
        Ok(swapped.unwrap_or(false).then_some(done))
    })();
    match result {
        Ok(Some(done)) => {
            root.sync_parent(rel)?;
            inner.hashes.forget(rel);
            Ok(Some(done))
        }
        Ok(None) => {
            let _ = root.remove(&tmp, false);
            Ok(None)
        }
        Err(e) => {
            let _ = root.remove(&tmp, false);
            // The file changed while it was read: not an error, it is simply not quiet.
            if e.kind() == io::ErrorKind::InvalidData
                && root.stat(rel).map(|m| FileVersion::of(&m)).ok() != Some(version)
            {
                return Ok(None);
            }
            Err(e)
        }
    }
}

/// Compresses every raw file under `rel` quiet for `quiet`; `skip` names folders and files to
/// leave alone (by their path). Removes stale partial outputs of an earlier pass.
/// Asked for a file that is due for compression (its path below the root): a guard to hold
/// while it is compressed, or `None` to leave it for now.
pub type Claim<'a> = &'a dyn Fn(&Path) -> io::Result<Option<Box<dyn Send>>>;

pub(crate) fn compress_tree(
    inner: &Arc<Inner>,
    rel: &Path,
    quiet: Duration,
    skip: &dyn Fn(&Path) -> bool,
    claim: Claim<'_>,
    report: &mut PackReport,
) -> io::Result<()> {
    for (name, m) in inner.root.list(rel)? {
        let path = rel.join(&name);
        let name = name.to_string_lossy();
        if skip(&path) {
            continue;
        }
        if m.is_dir() {
            compress_tree(inner, &path, quiet, skip, claim, report)?;
            continue;
        }
        if name.ends_with(PARTIAL) {
            let age = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as i64
                - m.ctime();
            if age > 3600 {
                let _ = inner.root.remove(&path, false);
            }
            continue;
        }
        if COMPRESSED.iter().any(|ext| name.ends_with(ext)) {
            continue;
        }
        match compress_file(inner, &path, quiet, claim) {
            Ok(Some(done)) => {
                report.files += 1;
                report.raw_bytes += done.raw;
                report.stored_bytes += done.stored;
            }
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                report.skipped += 1;
                if report.errors.len() < 10 {
                    report.errors.push(format!("{}: {e}", path.display()));
                }
            }
        }
    }
    Ok(())
}

/// `(stored, logical)` bytes under `rel`: what the files take on disk and what they hold.
pub(crate) fn sizes(root: &HomeDir, rel: &Path) -> io::Result<(u64, u64)> {
    let (mut stored, mut logical) = (0, 0);
    for (name, m) in root.list(rel)? {
        let path = rel.join(&name);
        if m.is_dir() {
            let (s, l) = sizes(root, &path)?;
            stored += s;
            logical += l;
            continue;
        }
        stored += m.len();
        let packed = name.to_string_lossy().ends_with(&format!(".{PACKED_EXT}"));
        logical += match packed.then(|| root.open_at(&path, READ, 0).ok()).flatten() {
            Some(f) => header_of(&f).map_or(m.len(), |sha| sha.len()),
            None => m.len(),
        };
    }
    Ok((stored, logical))
}
