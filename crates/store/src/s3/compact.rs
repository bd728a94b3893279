//! Compression at rest on S3: a quiet file's segments (8 MiB upload objects, appends packed
//! with other files' bytes, inline tails) become one seekable-zstd object
//! ([`crate::seekable`]), and reads of it decompress one frame at a time.
//!
//! Invariants, kept here:
//! - The new object's key is garbage before its upload starts and stops being garbage in the
//!   transaction that swaps the segment map ([`MetaStore::compacted`](super::meta::MetaStore::compacted)); so a kill at any moment
//!   leaves either the old segments or the new one, and an unfinished object is collected.
//! - The swap happens only if the segments that were compressed are still exactly the file's
//!   bytes `0..len` (an append meanwhile added segments after `len`: they stay; a rewrite or a
//!   pack changed them: the pass is retried later), and only after every frame decompressed to
//!   the bytes read and their SHA-256 equals the file's.
//! - The old objects become garbage in that transaction (those no other segment names) and
//!   are deleted a grace period later: a reader that opened the file before reads on.

use super::meta::{now_ms, Segment};
use super::transfer::S3Reader;
use super::{store_error, Inner, LiveKey};
use crate::seekable::{self, Index, ReadAt, SeekableReader};
use crate::sha::Sha256State;
use bytes::Bytes;
use object_store::ObjectStore;
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Files compressed per pass at most (the next pass takes the rest).
const PER_PASS: usize = 64;
/// Bytes per part of the compressed object's multipart upload.
const PART: usize = 8 << 20;
/// Parsed tables of compressed objects kept (objects are immutable, keys never reused).
const INDEXES: usize = 1024;

/// An object read at offsets (ranged GETs), from a blocking thread.
struct ObjectAt {
    inner: Arc<Inner>,
    key: String,
}

impl ReadAt for ObjectAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (inner, key) = (Arc::clone(&self.inner), self.key.clone());
        let range = offset..offset + buf.len() as u64;
        let bytes = self
            .inner
            .rt
            .block_on(
                self.inner
                    .rt
                    .spawn(async move { inner.get_range(&key, range).await }),
            )
            .map_err(io::Error::other)??;
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    }
}

/// The parsed tables of compressed objects, by key.
#[derive(Debug, Default)]
pub(crate) struct Indexes {
    map: Mutex<HashMap<String, Arc<Index>>>,
}

/// A reader of the compressed object of segment `seg` (its tables read once per key). Blocking.
pub(crate) fn packed_reader(inner: &Arc<Inner>, seg: &Segment) -> io::Result<SeekableReader> {
    let zsize = seg
        .zsize
        .ok_or_else(|| io::Error::other("not a compressed segment"))?;
    let src = Box::new(ObjectAt {
        inner: Arc::clone(inner),
        key: seg.key.clone(),
    });
    let cached = inner
        .indexes
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&seg.key)
        .cloned();
    let index = match cached {
        Some(i) => i,
        None => {
            let i = Arc::new(Index::read(&*src, zsize)?);
            let mut m = inner.indexes.map.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() >= INDEXES {
                m.clear();
            }
            m.insert(seg.key.clone(), Arc::clone(&i));
            i
        }
    };
    Ok(SeekableReader::with_index(src, index))
}

/// Hands the compressed bytes to the multipart upload in parts, from the blocking thread that
/// makes them.
struct Parts {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl Parts {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let part = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PART)));
        self.tx
            .blocking_send(part)
            .map_err(|_| io::Error::other("the upload of the compressed object stopped"))
    }
}

impl Write for Parts {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PART {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// What a compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// Files compressed.
    pub files: u64,
    /// Their original bytes.
    pub raw_bytes: u64,
    /// Their compressed bytes.
    pub stored_bytes: u64,
    /// Files that could not be compressed this time (the store unreachable, ...).
    pub failed: u64,
    /// Of those, files whose bytes do not give their SHA-256 (damaged: `fsck --full`).
    pub corrupt: u64,
    /// The first few errors, with the file's row.
    pub errors: Vec<String>,
}

impl Inner {
    /// Compresses up to [`PER_PASS`] files unchanged for `quiet` whose names `skip` does not
    /// refuse.
    pub(crate) async fn compact(
        self: &Arc<Self>,
        quiet: Duration,
        skip: fn(&str) -> bool,
    ) -> io::Result<CompactReport> {
        let _one = self.compacting.lock().await;
        let before = now_ms() - quiet.as_millis() as i64;
        let mut report = CompactReport::default();
        let files = self.meta.quiet_files(before, PER_PASS * 4)?;
        for (id, name) in files.into_iter().filter(|(_, n)| !skip(n)).take(PER_PASS) {
            if self.failed_compactions().contains(&id) {
                continue;
            }
            match self.compact_file(id).await {
                Ok(Some((raw, stored))) => {
                    self.stats
                        .compacted
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    report.files += 1;
                    report.raw_bytes += raw;
                    report.stored_bytes += stored;
                }
                Ok(None) => {}
                Err(e) => {
                    report.failed += 1;
                    if e.kind() == io::ErrorKind::InvalidData {
                        report.corrupt += 1;
                        // Bytes that do not give the file's SHA-256: not tried again until a
                        // restart; fsck --full names the file.
                        self.failed_compactions().insert(id);
                    }
                    if report.errors.len() < 10 {
                        report.errors.push(format!("{name} (row {id}): {e}"));
                    }
                }
            }
        }
        Ok(report)
    }

    fn failed_compactions(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<i64>> {
        self.bad_compactions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Compresses one file into a new object and swaps it in. `None`: the file changed
    /// meanwhile (tried again next pass).
    async fn compact_file(self: &Arc<Self>, id: i64) -> io::Result<Option<(u64, u64)>> {
        let node = self.meta.node(id)?;
        let segments = self.meta.segments(id)?;
        let len = node.size;
        if segments.iter().map(|s| s.len).sum::<u64>() != len {
            return Ok(None);
        }
        let key = LiveKey::new(self, self.new_key());
        self.meta.pending(&key.key)?;
        let upload = self
            .timed(
                &self.stats.puts,
                self.store.put_multipart(&self.path(&key.key)),
            )
            .await?;
        let mut parts = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let reader = S3Reader::new(Arc::clone(self), segments.clone(), len, None, id);
        let expect = node.sha.clone();
        let job = tokio::task::spawn_blocking(move || -> io::Result<seekable::Compressed> {
            use crate::store::Reader;
            let read_all = |f: &mut dyn FnMut(&[u8])| -> io::Result<()> {
                let mut buf = vec![0u8; 1 << 20];
                let mut pos = 0;
                while pos < len {
                    let n = reader.read_at(&mut buf, pos)?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut short"));
                    }
                    f(&buf[..n]);
                    pos += n as u64;
                }
                Ok(())
            };
            let expect = match expect {
                Some(h) => h,
                None => {
                    let mut h = Sha256State::new();
                    read_all(&mut |b| h.update(b))?;
                    h
                }
            };
            let mut out = Parts {
                tx,
                buf: Vec::with_capacity(PART),
            };
            let mut pos = 0u64;
            seekable::compress(
                |buf| {
                    let n = reader.read_at(buf, pos)?;
                    pos += n as u64;
                    Ok(n)
                },
                &mut out,
                &expect,
            )
        });
        let mut sent = Ok(());
        while let Some(part) = rx.recv().await {
            if let Err(e) = parts.wait_for_capacity(2).await {
                // The compressing thread stops at its next part.
                sent = Err(store_error(e));
                break;
            }
            parts.put(part);
        }
        drop(rx);
        let done = match (job.await.map_err(io::Error::other)?, sent) {
            (Ok(done), Ok(())) => done,
            (Err(e), _) | (_, Err(e)) => {
                let _ = parts.abort().await;
                return Err(e);
            }
        };
        self.timed(&self.stats.puts, parts.finish()).await?;
        let swapped = self
            .meta
            .compacted(id, &segments, len, &key.key, done.stored)?;
        Ok(swapped.then_some((done.raw, done.stored)))
    }
}
