//! Compressed generations (logrotate's `compress`, `delaycompress`): a `.gz`, `.zst` or `.xz` file
//! under a root is decompressed and compared with the generations it may hold, so that one the
//! archive already has is recognised and never stored again, and one holding bytes the archive
//! lacks (the agent was down during a rotation) gives them back.
//!
//! Decompression runs on a thread of its own ([`Inflater`]): a big log must not stall the tracker.

use crate::scan::HEAD;
use crate::state::CopyKey;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gzip,
    Zstd,
    Xz,
}

/// The compression a file's name says it has.
pub fn kind_of(path: &Path) -> Option<Kind> {
    match path.extension()?.to_str()? {
        "gz" => Some(Kind::Gzip),
        "zst" => Some(Kind::Zstd),
        "xz" => Some(Kind::Xz),
        _ => None,
    }
}

/// Opens without following a symlink put in the file's place.
pub fn open_nofollow(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// A writer that stops the decoder once it has enough.
struct Enough;

impl std::fmt::Display for Enough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("enough")
    }
}

/// Decompresses `file` into `out`. An error from `out` ends it early (that is how a head is read
/// without decompressing the rest).
fn decompress(kind: Kind, file: File, mut out: &mut dyn Write) -> std::io::Result<()> {
    let mut input = std::io::BufReader::with_capacity(256 * 1024, file);
    match kind {
        Kind::Gzip => {
            // Several members (concatenated .gz files) are one stream, as gzip -d reads them.
            std::io::copy(&mut flate2::bufread::MultiGzDecoder::new(input), &mut out)?;
        }
        Kind::Zstd => {
            std::io::copy(
                &mut zstd::stream::read::Decoder::with_buffer(input)?,
                &mut out,
            )?;
        }
        Kind::Xz => {
            lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| match e {
                lzma_rs::error::Error::IoError(e) => e,
                e => std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            })?;
        }
    }
    Ok(())
}

struct HeadSink(Vec<u8>);

impl Write for HeadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = HEAD as usize - self.0.len();
        let n = buf.len().min(room);
        self.0.extend_from_slice(&buf[..n]);
        if self.0.len() >= HEAD as usize {
            return Err(std::io::Error::other(Enough.to_string()));
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The first (up to) [`HEAD`] decompressed bytes of `file`.
pub fn inflate_head(kind: Kind, file: File) -> std::io::Result<Vec<u8>> {
    let mut sink = HeadSink(Vec::with_capacity(HEAD as usize));
    match decompress(kind, file, &mut sink) {
        Ok(()) => Ok(sink.0),
        Err(_) if sink.0.len() >= HEAD as usize => Ok(sink.0),
        Err(e) => Err(e),
    }
}

/// A generation the compressed file may hold.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: i64,
    pub archived_size: u64,
    pub archived_sha: Option<String>,
    /// The generation's own file, when the agent still has it: a compressed copy shorter than
    /// what was archived is checked against it.
    pub live: Option<Arc<File>>,
}

/// What a compressed file holds of one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Exactly what the archive holds of it.
    Same,
    /// A start of what the archive holds (it was compressed while the agent was ahead).
    Prefix,
    /// What the archive holds and more: the decompressed bytes are in `temp`, `total` of them.
    Longer { temp: PathBuf, total: u64 },
    /// Something else.
    Other,
}

/// Decompress and compare `path` against `candidates`.
#[derive(Debug)]
pub struct Request {
    pub path: PathBuf,
    pub key: CopyKey,
    pub kind: Kind,
    pub candidates: Vec<Candidate>,
    /// Where a decompressed copy is written while it is needed.
    pub scratch: PathBuf,
}

/// The answer to a [`Request`].
#[derive(Debug)]
pub struct Inflated {
    pub path: PathBuf,
    pub key: CopyKey,
    pub verdicts: Vec<(i64, Verdict)>,
    pub error: Option<String>,
}

/// Writes decompressed bytes to a file while hashing them, and remembers the hash at chosen
/// offsets (each candidate's archived size).
struct HashSink<'a> {
    out: std::io::BufWriter<File>,
    hasher: Sha256,
    len: u64,
    limit: u64,
    marks: &'a [u64],
    at_marks: Vec<(u64, String)>,
}

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.len + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(
                "decompresses to far more than the generation it resembles",
            ));
        }
        let mut rest = buf;
        while !rest.is_empty() {
            // Cut at the next mark so the hash there can be taken.
            let next = self.marks.iter().copied().find(|m| *m > self.len);
            let take = match next {
                Some(m) if m - self.len < rest.len() as u64 => (m - self.len) as usize,
                _ => rest.len(),
            };
            self.hasher.update(&rest[..take]);
            self.out.write_all(&rest[..take])?;
            self.len += take as u64;
            rest = &rest[take..];
            if self.marks.contains(&self.len) {
                self.at_marks
                    .push((self.len, hex::encode(self.hasher.clone().finalize())));
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Bytes free for unprivileged users on the file system of `dir` (0 if unknown).
fn free_bytes(dir: &Path) -> u64 {
    rustix::fs::statvfs(dir).map_or(0, |s| s.f_bavail.saturating_mul(s.f_frsize))
}

/// SHA-256 of the first `len` bytes of `f`, `None` if it is shorter.
fn prefix_sha(f: &File, len: u64) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::FileExt;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    while at < len {
        let want = ((len - at) as usize).min(buf.len());
        let n = f.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Ok(None);
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(Some(hex::encode(h.finalize())))
}

/// Decompresses the file of `req` and says what it holds of each candidate.
pub fn inflate(req: Request) -> Inflated {
    let mut out = Inflated {
        path: req.path.clone(),
        key: req.key,
        verdicts: Vec::new(),
        error: None,
    };
    match compare(&req) {
        Ok(v) => out.verdicts = v,
        Err(e) => out.error = Some(e.to_string()),
    }
    out
}

fn compare(req: &Request) -> std::io::Result<Vec<(i64, Verdict)>> {
    let file = open_nofollow(&req.path)?;
    let m = file.metadata()?;
    if (m.dev(), m.ino(), m.len()) != (req.key.dev, req.key.ino, req.key.size) {
        return Err(std::io::Error::other("it changed while waiting"));
    }
    let mut marks: Vec<u64> = req.candidates.iter().map(|c| c.archived_size).collect();
    marks.sort_unstable();
    marks.dedup();
    std::fs::create_dir_all(&req.scratch)?;
    // Anything decompressing to much more than the largest candidate plus a busy day of log is
    // not one of them, and the decompressed copy must never fill the agent's disk: at most half
    // of what is free there.
    let limit = marks
        .last()
        .copied()
        .unwrap_or(0)
        .saturating_add(4 << 30)
        .min(free_bytes(&req.scratch) / 2);
    let temp = req
        .scratch
        .join(format!("inflate-{}-{}.part", req.key.dev, req.key.ino));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    let mut sink = HashSink {
        out: std::io::BufWriter::with_capacity(256 * 1024, written),
        hasher: Sha256::new(),
        len: 0,
        limit,
        marks: &marks,
        at_marks: Vec::new(),
    };
    let done = decompress(req.kind, file, &mut sink).and_then(|()| sink.flush());
    if let Err(e) = done {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let total = sink.len;
    let whole = hex::encode(sink.hasher.clone().finalize());
    let at = |k: u64| {
        if k == 0 {
            // Nothing archived yet: the empty prefix matches anything (the head matched).
            return Some(hex::encode(Sha256::digest([])));
        }
        sink.at_marks
            .iter()
            .find(|(o, _)| *o == k)
            .map(|(_, h)| h.clone())
    };
    let empty = hex::encode(Sha256::digest([]));
    let mut verdicts = Vec::new();
    let mut keep = false;
    for c in &req.candidates {
        let k = c.archived_size;
        let archived = c.archived_sha.clone().unwrap_or_else(|| empty.clone());
        let v = if total == k && whole == archived {
            Verdict::Same
        } else if total > k && at(k).as_deref() == Some(archived.as_str()) {
            keep = true;
            Verdict::Longer {
                temp: temp.clone(),
                total,
            }
        } else if total < k {
            match &c.live {
                Some(f) if prefix_sha(f, total)?.as_deref() == Some(whole.as_str()) => {
                    Verdict::Prefix
                }
                _ => Verdict::Other,
            }
        } else {
            Verdict::Other
        };
        verdicts.push((c.id, v));
    }
    if !keep {
        let _ = std::fs::remove_file(&temp);
    }
    Ok(verdicts)
}

/// Runs [`inflate`] requests one at a time on a thread of its own; answers go to `done`.
pub struct Inflater {
    tx: Option<std::sync::mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Inflater {
    pub fn start(done: impl Fn(Inflated) + Send + 'static) -> std::io::Result<Inflater> {
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("agent-inflate".into())
            .spawn(move || {
                while let Ok(req) = rx.recv() {
                    done(inflate(req));
                }
            })?;
        Ok(Inflater {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a request; `false` if the thread is gone.
    pub fn send(&self, req: Request) -> bool {
        self.tx.as_ref().is_some_and(|t| t.send(req).is_ok())
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn request(dir: &Path, name: &str, compressed: &[u8], candidates: Vec<Candidate>) -> Request {
        let p = dir.join(name);
        std::fs::write(&p, compressed).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        Request {
            path: p,
            key: CopyKey {
                dev: m.dev(),
                ino: m.ino(),
                size: m.len(),
                mtime_ns: 0,
            },
            kind: kind_of(Path::new(name)).unwrap(),
            candidates,
            scratch: dir.join("scratch"),
        }
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    #[test]
    fn compressed_copies_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let log: Vec<u8> = (0..5000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let cand = |id, k: usize| Candidate {
            id,
            archived_size: k as u64,
            archived_sha: Some(sha(&log[..k])),
            live: None,
        };
        let other = Candidate {
            id: 9,
            archived_size: 10,
            archived_sha: Some(sha(b"different!")),
            live: None,
        };
        let r = inflate(request(
            d.path(),
            "app.log.2.gz",
            &gz(&log),
            vec![cand(1, log.len()), cand(2, 1000), other],
        ));
        assert_eq!(r.error, None);
        assert_eq!(r.verdicts[0], (1, Verdict::Same));
        let Verdict::Longer { temp, total } = &r.verdicts[1].1 else {
            panic!("{:?}", r.verdicts)
        };
        assert_eq!(*total, log.len() as u64);
        assert_eq!(std::fs::read(temp).unwrap(), log, "the decompressed bytes");
        assert_eq!(r.verdicts[2], (9, Verdict::Other));
    }

    #[test]
    fn a_shorter_copy_is_checked_against_the_live_file() {
        let d = tempfile::tempdir().unwrap();
        let full = b"a\nb\nc\nd\n".to_vec();
        let live = d.path().join("live.log");
        std::fs::write(&live, &full).unwrap();
        let c = Candidate {
            id: 1,
            archived_size: full.len() as u64,
            archived_sha: Some(sha(&full)),
            live: Some(Arc::new(File::open(&live).unwrap())),
        };
        let r = inflate(request(d.path(), "x.gz", &gz(&full[..4]), vec![c.clone()]));
        assert_eq!(r.verdicts, vec![(1, Verdict::Prefix)]);
        let r = inflate(request(d.path(), "y.gz", &gz(b"a\nX\n"), vec![c]));
        assert_eq!(r.verdicts, vec![(1, Verdict::Other)]);
        assert!(
            std::fs::read_dir(d.path().join("scratch"))
                .unwrap()
                .next()
                .is_none(),
            "no decompressed copy kept when nothing needs it"
        );
    }

    #[test]
    fn heads_of_every_kind() {
        let d = tempfile::tempdir().unwrap();
        let log: Vec<u8> = (0..2000)
            .flat_map(|i| format!("{i:08}\n").into_bytes())
            .collect();
        let z = zstd::stream::encode_all(&log[..], 3).unwrap();
        let mut x = Vec::new();
        lzma_rs::xz_compress(&mut &log[..], &mut x).unwrap();
        for (name, bytes) in [("a.gz", gz(&log)), ("a.zst", z), ("a.xz", x)] {
            let p = d.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let head = inflate_head(kind_of(&p).unwrap(), File::open(&p).unwrap()).unwrap();
            assert_eq!(head, &log[..HEAD as usize], "{name}");
        }
        let p = d.path().join("bad.gz");
        std::fs::write(&p, b"not gzip at all").unwrap();
        assert!(inflate_head(Kind::Gzip, File::open(&p).unwrap()).is_err());
    }
}
