//! Bytes in and out of the object store: an upload cuts what arrives into segments of
//! [`SEGMENT`] bytes, each one PUT (at most [`IN_FLIGHT`] running while the next fills, so a
//! 1 GiB upload holds a few segments of memory, not the file); a download reads its segments
//! in ranged GETs of [`CHUNK`] bytes, the next one fetched while the last is sent.
//!
//! Both run on the engine's blocking threads and wait for the store on the runtime the
//! back-end was opened on.

use super::compact::packed_reader;
use super::meta::Segment;
use super::Inner;
use crate::seekable::{self, SeekableReader};
use crate::sha::Sha256State;
use crate::store::{Download, Meta, Upload};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Bytes per segment object of an upload.
pub(crate) const SEGMENT: usize = 8 << 20;
/// An upload's tail up to this size is kept inline (in the metadata) until packed.
pub(crate) const INLINE_MAX: usize = 1 << 20;
/// Segment PUTs of one upload running at once.
const IN_FLIGHT: usize = 2;
/// Bytes per ranged GET of a download.
const CHUNK: u64 = 4 << 20;

type Put = JoinHandle<io::Result<()>>;

/// A segment PUT under way: its key stays out of the collector's reach while the upload or the
/// PUT task still holds it (a slow upload may keep a segment uncommitted longer than any grace
/// period; a PUT of a dropped upload may still be landing).
struct InFlight {
    start: u64,
    len: u64,
    key: Arc<super::LiveKey>,
    task: Put,
}

pub(crate) struct S3Upload {
    inner: Arc<Inner>,
    id: i64,
    offset: u64,
    prefix: Option<Sha256State>,
    /// Where the buffered bytes start in the file.
    at: u64,
    buf: Vec<u8>,
    /// PUTs under way, oldest first.
    puts: VecDeque<InFlight>,
    /// The first failure; later bytes are not stored.
    failed: Option<io::Error>,
}

impl S3Upload {
    pub(crate) fn new(
        inner: Arc<Inner>,
        id: i64,
        offset: u64,
        prefix: Option<Sha256State>,
    ) -> Self {
        S3Upload {
            inner,
            id,
            offset,
            prefix,
            at: offset,
            buf: Vec::new(),
            puts: VecDeque::new(),
            failed: None,
        }
    }

    /// Starts the PUT of the buffered bytes as the next segment.
    fn put_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::take(&mut self.buf));
        let (start, len) = (self.at, data.len() as u64);
        self.at += len;
        let key = super::LiveKey::new(&self.inner, self.inner.new_key());
        // Garbage until its segment is recorded: a kill in between leaves nothing behind.
        self.inner.meta.pending(&key.key)?;
        let (inner, k) = (Arc::clone(&self.inner), Arc::clone(&key));
        let task = self
            .inner
            .rt
            .spawn(async move { inner.put_object(&k.key, data).await });
        self.puts.push_back(InFlight {
            start,
            len,
            key,
            task,
        });
        Ok(())
    }

    /// Waits for the oldest PUT and records its segment (segments are recorded in order).
    fn settle_oldest(&mut self) -> io::Result<()> {
        let Some(put) = self.puts.pop_front() else {
            return Ok(());
        };
        self.inner
            .rt
            .block_on(put.task)
            .map_err(io::Error::other)??;
        self.inner
            .meta
            .add_segment(self.id, put.start, put.len, &put.key.key)
    }

    /// Records the segments whose PUTs are done, in order, without waiting.
    fn settle_finished(&mut self) -> io::Result<()> {
        while self.puts.front().is_some_and(|p| p.task.is_finished()) {
            self.settle_oldest()?;
        }
        Ok(())
    }

    fn settle_all(&mut self) -> io::Result<()> {
        while !self.puts.is_empty() {
            if let Err(e) = self.settle_oldest() {
                // What follows a failed segment cannot be kept: the file ends before it.
                for put in self.puts.drain(..) {
                    put.task.abort();
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn end(mut self, hash: Option<Sha256State>) -> io::Result<Meta> {
        let stored = match self.failed.take() {
            Some(e) => Err(e),
            // What is left after the last whole segment: a small tail (most files, every
            // append of a busy log) waits inline for the packer instead of costing a PUT.
            None if self.buf.len() <= INLINE_MAX => self.settle_all().and_then(|()| {
                if self.buf.is_empty() {
                    return Ok(());
                }
                let data = std::mem::take(&mut self.buf);
                self.inner.meta.add_inline(self.id, self.at, &data)?;
                self.at += data.len() as u64;
                Ok(())
            }),
            None => self.put_buffer().and_then(|()| self.settle_all()),
        };
        let node = self.inner.meta.finish(self.id, hash.as_ref())?;
        stored.map(|()| node.meta())
    }
}

impl Upload for S3Upload {
    fn offset(&self) -> u64 {
        self.offset
    }

    fn prefix_hash(&self) -> Option<Sha256State> {
        self.prefix.clone()
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        let result: io::Result<()> = (|| {
            while !data.is_empty() {
                let take = (SEGMENT - self.buf.len()).min(data.len());
                if self.buf.capacity() == 0 {
                    self.buf.reserve_exact(SEGMENT.min(take.max(64 << 10)));
                }
                self.buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.buf.len() == SEGMENT {
                    self.put_buffer()?;
                    while self.puts.len() > IN_FLIGHT {
                        self.settle_oldest()?;
                    }
                }
            }
            // What is stored shows as soon as it is: a reader (follow, the viewer) sees it grow.
            self.settle_finished()
        })();
        if let Err(e) = &result {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()));
        }
        result
    }

    fn finish(self: Box<Self>, hash: Option<Sha256State>) -> io::Result<Meta> {
        (*self).end(hash)
    }

    fn abandon(self: Box<Self>, hash: Option<Sha256State>) -> io::Result<Meta> {
        // What arrived stays (a resumed upload continues from it); the hash covers it.
        (*self).end(hash)
    }
}

pub(crate) struct S3Download {
    inner: Arc<Inner>,
    segments: Vec<Segment>,
    /// The compressed object being read, if any.
    packed: Option<(String, Arc<SeekableReader>)>,
    len: u64,
    pos: u64,
    /// Fetched bytes from `pos` on, not yet read.
    have: Bytes,
    /// The next chunk, fetched ahead: where it starts and the task.
    ahead: Option<(u64, JoinHandle<io::Result<Bytes>>)>,
}

impl S3Download {
    pub(crate) fn new(inner: Arc<Inner>, segments: Vec<Segment>, len: u64, pos: u64) -> Self {
        S3Download {
            inner,
            segments,
            packed: None,
            len,
            pos: pos.min(len),
            have: Bytes::new(),
            ahead: None,
        }
    }

    /// Starts fetching the chunk at `pos`: up to [`CHUNK`] bytes of the segment holding it
    /// (at once, for an inline segment).
    fn fetch(&mut self, pos: u64) -> Option<(u64, JoinHandle<io::Result<Bytes>>)> {
        if pos >= self.len {
            return None;
        }
        let seg = segment_at(&self.segments, pos)?.clone();
        let from = pos - seg.start;
        let to = (from + CHUNK).min(seg.len).min(self.len - seg.start);
        if seg.zsize.is_some() {
            let reader = match &self.packed {
                Some((k, r)) if *k == seg.key => Ok(Arc::clone(r)),
                _ => packed_reader(&self.inner, &seg).map(Arc::new),
            };
            if let Ok(r) = &reader {
                self.packed = Some((seg.key.clone(), Arc::clone(r)));
            }
            let task = self.inner.rt.spawn_blocking(move || {
                read_packed(&*reader?, seg.off + from, (to - from) as usize)
            });
            return Some((pos, task));
        }
        let inner = Arc::clone(&self.inner);
        let task = self
            .inner
            .rt
            .spawn(async move { range_of(&inner, &seg, from..to).await });
        Some((pos, task))
    }
}

/// Up to `max` original bytes of a compressed object from `from` (at most a frame's worth).
fn read_packed(r: &SeekableReader, from: u64, max: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; max.min(seekable::FRAME)];
    let n = r.read_at(&mut buf, from)?;
    buf.truncate(n);
    Ok(Bytes::from(buf))
}

/// The segment holding byte `pos` of the file (segments are in file order, each starting where
/// the one before ends): a binary search, so a busy log of thousands of appends reads fast.
fn segment_at(segments: &[Segment], pos: u64) -> Option<&Segment> {
    let i = segments.partition_point(|s| s.start + s.len <= pos);
    segments.get(i).filter(|s| s.start <= pos)
}

/// Bytes `range` (relative to the segment's start) of an inline segment; `None` for one in an
/// object.
fn inline_range(seg: &Segment, range: &std::ops::Range<u64>) -> Option<Bytes> {
    let d = seg.data.as_ref()?;
    let end = (range.end as usize).min(d.len());
    Some(d.slice((range.start as usize).min(end)..end))
}

/// Bytes `range` (relative to the segment's start) of a segment: from its inline data, or a
/// ranged GET of its object.
async fn range_of(inner: &Inner, seg: &Segment, range: std::ops::Range<u64>) -> io::Result<Bytes> {
    match inline_range(seg, &range) {
        Some(b) => Ok(b),
        None => {
            inner
                .get_range(&seg.key, seg.off + range.start..seg.off + range.end)
                .await
        }
    }
}

impl Download for S3Download {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        if self.have.is_empty() {
            let (at, task) = match self.ahead.take() {
                Some((at, task)) if at == self.pos => (at, task),
                other => {
                    if let Some((_, t)) = other {
                        t.abort();
                    }
                    self.fetch(self.pos).ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "no segment holds this part of the file",
                        )
                    })?
                }
            };
            let bytes = self.inner.rt.block_on(task).map_err(io::Error::other)??;
            if bytes.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "an object of this file is shorter than recorded",
                ));
            }
            self.have = bytes;
            self.ahead = self.fetch(at + self.have.len() as u64);
        }
        let n = buf.len().min(self.have.len());
        buf[..n].copy_from_slice(&self.have[..n]);
        self.have = self.have.slice(n..);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Drop for S3Download {
    fn drop(&mut self) {
        if let Some((_, t)) = self.ahead.take() {
            t.abort();
        }
    }
}

/// Bytes fetched at least per ranged GET of a [`S3Reader`] (a viewer's page or a search's
/// chunk then costs one request, not several).
const READ_AHEAD: u64 = 256 << 10;

/// A file opened for reads at any offset: its segments as they were when opened (objects are
/// immutable and outlive a grace period, so the bytes stay readable), and the last range
/// fetched.
pub(crate) struct S3Reader {
    inner: Arc<Inner>,
    segments: Vec<Segment>,
    /// The compressed object last read, if any.
    packed: std::sync::Mutex<Option<(String, Arc<SeekableReader>)>>,
    /// The whole file as one compressed object, for a search that skips frames.
    whole: std::sync::OnceLock<Option<Arc<SeekableReader>>>,
    len: u64,
    modified: Option<std::time::SystemTime>,
    id: i64,
    last: std::sync::Mutex<Option<(u64, Bytes)>>,
}

impl S3Reader {
    pub(crate) fn new(
        inner: Arc<Inner>,
        segments: Vec<Segment>,
        len: u64,
        modified: Option<std::time::SystemTime>,
        id: i64,
    ) -> Self {
        S3Reader {
            inner,
            segments,
            packed: std::sync::Mutex::new(None),
            whole: std::sync::OnceLock::new(),
            len,
            modified,
            id,
            last: std::sync::Mutex::new(None),
        }
    }
}

impl S3Reader {
    /// The reader of `seg`'s compressed object (kept for the next read).
    fn packed(&self, seg: &Segment) -> io::Result<Arc<SeekableReader>> {
        let mut p = self.packed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, r)) = p.as_ref() {
            if *k == seg.key {
                return Ok(Arc::clone(r));
            }
        }
        let r = Arc::new(packed_reader(&self.inner, seg)?);
        *p = Some((seg.key.clone(), Arc::clone(&r)));
        Ok(r)
    }
}

impl crate::store::Reader for S3Reader {
    fn seek_index(&self) -> Option<&SeekableReader> {
        self.whole
            .get_or_init(|| match self.segments.as_slice() {
                [seg] if seg.zsize.is_some() && seg.off == 0 && seg.len == self.len => {
                    packed_reader(&self.inner, seg).ok().map(Arc::new)
                }
                _ => None,
            })
            .as_deref()
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn modified(&self) -> Option<std::time::SystemTime> {
        self.modified
    }

    fn identity(&self) -> u64 {
        self.id as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        if let Some(seg) = segment_at(&self.segments, offset).filter(|s| s.zsize.is_some()) {
            let from = offset - seg.start;
            let max = (seg.len - from).min(self.len - offset);
            let want = buf.len().min(usize::try_from(max).unwrap_or(usize::MAX));
            return self.packed(seg)?.read_at(&mut buf[..want], seg.off + from);
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let cached = match last.as_ref() {
            Some((at, b)) if *at <= offset && offset < at + b.len() as u64 => {
                b.slice((offset - at) as usize..)
            }
            _ => {
                let seg = segment_at(&self.segments, offset).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "no segment holds this part of the file",
                    )
                })?;
                let from = offset - seg.start;
                let to = (from + (buf.len() as u64).max(READ_AHEAD))
                    .min(seg.len)
                    .min(self.len - seg.start);
                let bytes = match inline_range(seg, &(from..to)) {
                    Some(b) => b,
                    None => {
                        let (inner, seg) = (Arc::clone(&self.inner), seg.clone());
                        self.inner
                            .rt
                            .block_on(
                                self.inner
                                    .rt
                                    .spawn(async move { range_of(&inner, &seg, from..to).await }),
                            )
                            .map_err(io::Error::other)??
                    }
                };
                if bytes.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "an object of this file is shorter than recorded",
                    ));
                }
                *last = Some((offset, bytes.clone()));
                bytes
            }
        };
        let n = buf.len().min(cached.len());
        buf[..n].copy_from_slice(&cached[..n]);
        Ok(n)
    }
}
