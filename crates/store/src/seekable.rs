//! Seekable zstd: how a quiet file is stored compressed at rest, on both back-ends.
//!
//! The file is a sequence of independent zstd frames of at most [`FRAME`] bytes of the original
//! each (cut at a line end where there is one), so any byte is read by decompressing one frame;
//! `zstd -d` of the whole file gives back the original. Around the data frames sit three
//! *skippable* frames, which every zstd decoder passes over:
//!
//! ```text
//! [header: 0x184D2A5B "LGAZ" 1, length u64, SHA-256 state]     what the file is
//! [data frame 0] [data frame 1] ...                               the bytes
//! [index: 0x184D2A5C "LGAI" 1, per data frame: lines, flags, filter size; then the filters]
//! [seek table: 0x184D2A5E, the zstd seekable format's footer]     where each frame is
//! ```
//!
//! The seek table is the zstd project's *seekable format* (every frame listed, the skippable
//! ones with 0 decompressed bytes), so other seekable readers find the frames too.
//!
//! The index keeps, per data frame, its line count (a search that skips frames still numbers
//! lines) and a Bloom filter of the frame's 5-byte grams, ASCII case folded: a literal search
//! decompresses only frames that hold every gram of the literal (the way Loki's blooms and
//! ClickHouse's `ngrambf` indexes skip data). A filter is built at 256 Kibit and folded in half
//! while it stays sparse, so a quiet frame costs bytes, not kilobytes.
//!
//! Everything here reads hostile input: a `.zst` found in the archive may be anybody's. Sizes
//! are checked against the file before anything is allocated.

use crate::sha::{Sha256State, STATE_BYTES};
use std::io::{self, Write};
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Original bytes per frame at most (1 MiB): reading any offset decompresses at most this.
pub const FRAME: usize = 1 << 20;
/// The compression level. Measured on 1 MiB frames (bench/compression.sh, 2026-12-02): level
/// 3 gives 7.8× on an nginx access log and compacts 80 MB/s, level 6 9.4× at 52 MB/s, reads
/// as fast; compaction is a background job over quiet files, so the space wins.
pub const LEVEL: i32 = 6;

const HEADER_MAGIC: u32 = 0x184D_2A5B;
const INDEX_MAGIC: u32 = 0x184D_2A5C;
const SEEK_TABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
const FOOTER: usize = 9;
const HEADER_PAYLOAD: usize = 4 + 1 + 8 + STATE_BYTES;
/// Bytes of a header frame: what a listing reads to learn a compressed file's length.
pub const HEADER_BYTES: usize = 8 + HEADER_PAYLOAD;

/// Bytes of a gram: 5 (4 would saturate on hexadecimal ids: every 4-hex-digit gram is in every
/// frame of a log with a trace id per line).
pub const GRAM: usize = 5;
const GRAM_SHIFT: usize = 8 * (GRAM - 1);
/// Bloom filter bits before folding (2^18 = 32 KiB) and the fill a fold may reach. One probe
/// per gram: at the 1-2 bits per gram a filter can afford, a second probe makes it worse.
const BLOOM_BITS_LOG2: u32 = 18;
const BLOOM_MIN_BYTES_LOG2: u32 = 6;
const FOLD_FILL: f64 = 0.7;
/// Frame flag: the frame ends inside a line (a line longer than [`FRAME`]).
const CONTINUES: u8 = 1;

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a seekable zstd file of logarchive: {what}"),
    )
}

fn u32_at(b: &[u8], at: usize) -> io::Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| bad("cut short"))
}

/// A gram's filter position (splitmix64's finaliser spreads all its bytes over it).
fn probe(gram: u64) -> u32 {
    let mut z = gram ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 32) as u32
}

/// The grams a literal `needle` must have in a frame that holds it: its [`GRAM`]-byte windows,
/// ASCII case folded (so they serve case-sensitive and -insensitive searches alike). Empty for a
/// needle shorter than that (no frame can be skipped for it).
pub fn grams(needle: &[u8]) -> Vec<u64> {
    let mut out: Vec<u64> = needle
        .windows(GRAM)
        .map(|w| {
            w.iter().fold(0u64, |g, &b| {
                (g >> 8) | (u64::from(b.to_ascii_lowercase()) << GRAM_SHIFT)
            })
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

struct Bloom {
    bits: Vec<u64>,
}

impl Bloom {
    fn new() -> Bloom {
        Bloom {
            bits: vec![0; 1 << (BLOOM_BITS_LOG2 - 6)],
        }
    }

    fn clear(&mut self) {
        self.bits.iter_mut().for_each(|w| *w = 0);
    }

    /// Adds the grams of `data` (frame bytes; windows across a line end are left out: a
    /// line-oriented search never looks for one).
    fn add(&mut self, data: &[u8]) {
        let mask = (1u32 << BLOOM_BITS_LOG2) - 1;
        let (mut gram, mut run) = (0u64, 0usize);
        for &b in data {
            if b == b'\n' {
                run = 0;
                continue;
            }
            gram = (gram >> 8) | (u64::from(b.to_ascii_lowercase()) << GRAM_SHIFT);
            run += 1;
            if run >= GRAM {
                let p = probe(gram) & mask;
                self.bits[(p >> 6) as usize] |= 1 << (p & 63);
            }
        }
    }

    /// The filter folded as small as it stays useful: `(log2 of its bytes, bytes)`.
    fn folded(&self) -> (u8, Vec<u8>) {
        let mut words = self.bits.clone();
        while words.len() > 1 << (BLOOM_MIN_BYTES_LOG2 - 3) {
            let half = words.len() / 2;
            let ones: u32 = (0..half)
                .map(|i| (words[i] | words[i + half]).count_ones())
                .sum();
            if f64::from(ones) > FOLD_FILL * (half * 64) as f64 {
                break;
            }
            for i in 0..half {
                words[i] |= words[i + half];
            }
            words.truncate(half);
        }
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        (bytes.len().trailing_zeros() as u8, bytes)
    }
}

/// Whether a filter of `bytes` (a power of two) may hold `gram`.
fn may_hold(filter: &[u8], gram: u64) -> bool {
    let mask = (filter.len() as u32 * 8).wrapping_sub(1);
    let p = probe(gram) & mask;
    filter[(p >> 3) as usize] & (1 << (p & 7)) != 0
}

fn skippable(magic: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&magic.to_le_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// What compressing a file gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressed {
    /// Original bytes.
    pub raw: u64,
    /// Bytes written (frames, filters and tables).
    pub stored: u64,
    /// Data frames.
    pub frames: u64,
}

/// Compresses what `read` gives (the whole file, from its first byte) into `out` as seekable
/// zstd, and proves the result: every frame is decompressed again as it is made, and the SHA-256
/// of what came back must equal `expect` (the hash the store keeps for the file) with the same
/// length. On a mismatch (the file changed, or the compressor erred) the output is to be thrown
/// away: `InvalidData`.
pub fn compress(
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    out: &mut impl Write,
    expect: &Sha256State,
) -> io::Result<Compressed> {
    let mut cctx = zstd::bulk::Compressor::new(LEVEL)?;
    cctx.include_checksum(true)?;
    let mut dctx = zstd::bulk::Decompressor::new()?;
    let header = {
        let mut p = Vec::with_capacity(HEADER_PAYLOAD);
        p.extend_from_slice(b"LGAZ\x01");
        p.extend_from_slice(&expect.len().to_le_bytes());
        p.extend_from_slice(&expect.to_bytes());
        skippable(HEADER_MAGIC, &p)
    };
    out.write_all(&header)?;
    let mut table: Vec<(u32, u32)> = vec![(header.len() as u32, 0)];
    let mut index = b"LGAI\x01\0\0\0\0".to_vec();
    let mut filters = Vec::new();
    let mut stored = header.len() as u64;
    let mut check = Sha256State::new();
    let mut bloom = Bloom::new();
    let mut buf = vec![0u8; FRAME];
    let (mut filled, mut eof, mut frames) = (0usize, false, 0u32);
    while !eof || filled > 0 {
        while !eof && filled < FRAME {
            match read(&mut buf[filled..]) {
                Ok(0) => eof = true,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        // Cut after the last line end; a frame of one long line is cut where it is full.
        let cut = if eof && filled < FRAME {
            filled
        } else {
            buf[..filled]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(filled, |i| i + 1)
        };
        let data = &buf[..cut];
        let frame = cctx.compress(data)?;
        let back = dctx.decompress(&frame, cut)?;
        if back != data {
            return Err(bad("a frame did not decompress to its bytes"));
        }
        check.update(&back);
        out.write_all(&frame)?;
        stored += frame.len() as u64;
        table.push((frame.len() as u32, cut as u32));
        bloom.clear();
        bloom.add(data);
        let (log2, filter) = bloom.folded();
        let lines = data.iter().filter(|&&b| b == b'\n').count() as u32;
        let flags = if data.last() != Some(&b'\n') && !(eof && cut == filled) {
            CONTINUES
        } else {
            0
        };
        index.extend_from_slice(&lines.to_le_bytes());
        index.push(flags);
        index.push(log2);
        filters.extend_from_slice(&filter);
        frames += 1;
        buf.copy_within(cut..filled, 0);
        filled -= cut;
    }
    if check.len() != expect.len() || check.digest() != expect.digest() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the compressed file does not give back the file ({} bytes read, {} expected, \
                 or another SHA-256): the file changed or the compressor erred",
                check.len(),
                expect.len()
            ),
        ));
    }
    index[5..9].copy_from_slice(&frames.to_le_bytes());
    index.extend_from_slice(&filters);
    let index = skippable(INDEX_MAGIC, &index);
    out.write_all(&index)?;
    stored += index.len() as u64;
    table.push((index.len() as u32, 0));
    let mut seek = Vec::with_capacity(table.len() * 8 + FOOTER);
    for (c, d) in &table {
        seek.extend_from_slice(&c.to_le_bytes());
        seek.extend_from_slice(&d.to_le_bytes());
    }
    seek.extend_from_slice(&(table.len() as u32).to_le_bytes());
    seek.push(0);
    seek.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    let seek = skippable(SEEK_TABLE_MAGIC, &seek);
    out.write_all(&seek)?;
    stored += seek.len() as u64;
    out.flush()?;
    Ok(Compressed {
        raw: expect.len(),
        stored,
        frames: u64::from(frames),
    })
}

/// Reads bytes at an offset (a file, an object's ranges).
pub trait ReadAt: Send + Sync {
    /// Reads into `buf` at `offset`; fewer bytes only at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

fn read_exact_at(src: &dyn ReadAt, buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match src.read_at(&mut buf[done..], offset) {
            Ok(0) => return Err(bad("cut short")),
            Ok(n) => {
                done += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The header of a compressed file: its original length and SHA-256 state, from its first
/// [`HEADER_BYTES`] bytes. `None` when the bytes are not a header of ours.
pub fn read_header(first: &[u8]) -> Option<Sha256State> {
    if first.len() < HEADER_BYTES
        || u32_at(first, 0).ok()? != HEADER_MAGIC
        || u32_at(first, 4).ok()? as usize != HEADER_PAYLOAD
        || &first[8..13] != b"LGAZ\x01"
    {
        return None;
    }
    let len = u64::from_le_bytes(first[13..21].try_into().ok()?);
    Sha256State::from_bytes(&first[21..21 + STATE_BYTES]).filter(|s| s.len() == len)
}

/// One data frame: where its bytes are in the original and in the file.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Offset of its first byte in the original.
    pub raw_start: u64,
    /// Its original bytes.
    pub raw_len: u32,
    /// Offset of the frame in the compressed file.
    pub start: u64,
    /// Its compressed bytes.
    pub len: u32,
    /// Line ends in it.
    pub lines: u32,
    continues: bool,
    /// Where its filter is in the filters.
    filter: Range<usize>,
}

/// A compressed file's tables: its frames and their filters.
#[derive(Debug)]
pub struct Index {
    /// Original length and SHA-256.
    pub sha: Sha256State,
    /// The data frames in order.
    pub frames: Vec<Frame>,
    /// Where the filters are in the file, and their bytes; read only by a search.
    filters_at: u64,
    filters: std::sync::OnceLock<Vec<u8>>,
    /// Bytes of the compressed file.
    pub stored: u64,
}

impl Index {
    /// Reads the tables of a compressed file of `len` bytes.
    pub fn read(src: &dyn ReadAt, len: u64) -> io::Result<Index> {
        let too_short = || bad("too short");
        if len < (HEADER_BYTES + FOOTER + 8) as u64 {
            return Err(too_short());
        }
        let mut foot = [0u8; FOOTER];
        read_exact_at(src, &mut foot, len - FOOTER as u64)?;
        if u32_at(&foot, 5)? != SEEKABLE_MAGIC || foot[4] & 0x80 != 0 {
            return Err(bad("no seek table"));
        }
        let entries = u64::from(u32_at(&foot, 0)?);
        let table_len = 8 + entries * 8 + FOOTER as u64;
        if entries < 2 || table_len > len - HEADER_BYTES as u64 {
            return Err(bad("a seek table that does not fit"));
        }
        let mut table = vec![0u8; table_len as usize];
        read_exact_at(src, &mut table, len - table_len)?;
        if u32_at(&table, 0)? != SEEK_TABLE_MAGIC || u64::from(u32_at(&table, 4)?) != table_len - 8
        {
            return Err(bad("a broken seek table"));
        }
        let mut header = [0u8; HEADER_BYTES];
        read_exact_at(src, &mut header, 0)?;
        let sha = read_header(&header).ok_or_else(|| bad("no header"))?;
        let mut frames = Vec::with_capacity(entries as usize - 2);
        let (mut start, mut raw_start) = (0u64, 0u64);
        let mut index_at = None;
        for i in 0..entries as usize {
            let c = u32_at(&table, 8 + i * 8)?;
            let d = u32_at(&table, 12 + i * 8)?;
            if i == 0 {
                if c as usize != HEADER_BYTES || d != 0 {
                    return Err(bad("a header frame of another size"));
                }
            } else if i + 1 == entries as usize {
                if d != 0 {
                    return Err(bad("no index frame"));
                }
                index_at = Some((start, c));
            } else {
                if d as usize > FRAME || c == 0 {
                    return Err(bad("a frame too large"));
                }
                frames.push(Frame {
                    raw_start,
                    raw_len: d,
                    start,
                    len: c,
                    lines: 0,
                    continues: false,
                    filter: 0..0,
                });
                raw_start += u64::from(d);
            }
            start += u64::from(c);
        }
        if start != len - table_len || raw_start != sha.len() {
            return Err(bad("a seek table that does not add up"));
        }
        let (at, size) = index_at.ok_or_else(too_short)?;
        // The frames' records only: the filters are read when a search wants them.
        let records = 17 + 6 * frames.len() as u64;
        if records > u64::from(size) {
            return Err(too_short());
        }
        let mut index = vec![0u8; records as usize];
        read_exact_at(src, &mut index, at)?;
        if u32_at(&index, 0)? != INDEX_MAGIC
            || u64::from(u32_at(&index, 4)?) + 8 != u64::from(size)
            || index.get(8..13) != Some(b"LGAI\x01")
            || u32_at(&index, 13)? as usize != frames.len()
        {
            return Err(bad("a broken index"));
        }
        let mut filter_at = 0usize;
        for (i, f) in frames.iter_mut().enumerate() {
            let pos = 17 + 6 * i;
            f.lines = u32_at(&index, pos)?;
            let flags = index[pos + 4];
            let log2 = u32::from(index[pos + 5]);
            if !(BLOOM_MIN_BYTES_LOG2..=BLOOM_BITS_LOG2 - 3).contains(&log2) {
                return Err(bad("a filter of another size"));
            }
            f.continues = flags & CONTINUES != 0;
            f.filter = filter_at..filter_at + (1usize << log2);
            filter_at = f.filter.end;
        }
        if records + filter_at as u64 != u64::from(size) {
            return Err(bad("filters that do not add up"));
        }
        Ok(Index {
            sha,
            frames,
            filters_at: at + records,
            filters: std::sync::OnceLock::new(),
            stored: len,
        })
    }

    /// The original length.
    pub fn len(&self) -> u64 {
        self.sha.len()
    }

    /// Whether the original is empty.
    pub fn is_empty(&self) -> bool {
        self.sha.is_empty()
    }

    /// The frame holding original offset `at`, if any.
    pub fn frame_at(&self, at: u64) -> Option<usize> {
        let i = self.frames.partition_point(|f| f.raw_start <= at);
        let f = self.frames.get(i.checked_sub(1)?)?;
        (at < f.raw_start + u64::from(f.raw_len)).then_some(i - 1)
    }

    /// The runs of frames (a run: frames joined by lines that cross from one into the next)
    /// whose filters may hold every one of `grams`: the only places a line holding the literal
    /// can be. Every run when `grams` is empty.
    pub fn candidates(&self, src: &dyn ReadAt, grams: &[u64]) -> io::Result<Vec<Range<usize>>> {
        let filters: &[u8] = if grams.is_empty() {
            &[]
        } else if let Some(f) = self.filters.get() {
            f
        } else {
            let len = self.frames.last().map_or(0, |f| f.filter.end);
            let mut buf = vec![0u8; len];
            read_exact_at(src, &mut buf, self.filters_at)?;
            self.filters.get_or_init(|| buf)
        };
        let mut out = Vec::new();
        let mut start = 0;
        for (i, f) in self.frames.iter().enumerate() {
            if f.continues && i + 1 < self.frames.len() {
                continue;
            }
            let run = start..i + 1;
            start = i + 1;
            let hit = grams.iter().all(|&g| {
                self.frames[run.clone()]
                    .iter()
                    .any(|f| may_hold(&filters[f.filter.clone()], g))
            });
            if hit {
                out.push(run);
            }
        }
        Ok(out)
    }

    /// Lines before frame `i`.
    pub fn lines_before(&self, i: usize) -> u64 {
        self.frames[..i.min(self.frames.len())]
            .iter()
            .map(|f| u64::from(f.lines))
            .sum()
    }
}

/// Random access to a compressed file's original bytes: one frame decompressed per read that
/// leaves the last one (kept for the next read, as readers go forward).
pub struct SeekableReader {
    src: Box<dyn ReadAt>,
    index: Arc<Index>,
    last: Mutex<Option<(usize, Arc<Vec<u8>>)>>,
}

impl std::fmt::Debug for SeekableReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeekableReader")
            .field("len", &self.index.len())
            .finish()
    }
}

impl SeekableReader {
    /// Reads a compressed file of `len` bytes from `src`.
    pub fn open(src: Box<dyn ReadAt>, len: u64) -> io::Result<SeekableReader> {
        let index = Arc::new(Index::read(&*src, len)?);
        Ok(SeekableReader {
            src,
            index,
            last: Mutex::new(None),
        })
    }

    /// Reads a compressed file from `src` whose tables were read before.
    pub fn with_index(src: Box<dyn ReadAt>, index: Arc<Index>) -> SeekableReader {
        SeekableReader {
            src,
            index,
            last: Mutex::new(None),
        }
    }

    /// Its tables.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The runs of frames that may hold a literal of these `grams` ([`Index::candidates`]).
    pub fn candidates(&self, grams: &[u64]) -> io::Result<Vec<Range<usize>>> {
        self.index.candidates(&*self.src, grams)
    }

    /// The original bytes of frame `i`.
    pub fn frame(&self, i: usize) -> io::Result<Arc<Vec<u8>>> {
        if let Some((j, data)) = &*self.last.lock().unwrap_or_else(|p| p.into_inner()) {
            if *j == i {
                return Ok(Arc::clone(data));
            }
        }
        let f = self
            .index
            .frames
            .get(i)
            .ok_or_else(|| bad("no such frame"))?;
        let mut comp = vec![0u8; f.len as usize];
        read_exact_at(&*self.src, &mut comp, f.start)?;
        let data = zstd::bulk::decompress(&comp, f.raw_len as usize)?;
        if data.len() != f.raw_len as usize {
            return Err(bad("a frame of another length"));
        }
        let data = Arc::new(data);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((i, Arc::clone(&data)));
        Ok(data)
    }

    /// Reads original bytes at `offset`; 0 at the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Some(i) = self.index.frame_at(offset) else {
            return Ok(0);
        };
        let data = self.frame(i)?;
        let from = (offset - self.index.frames[i].raw_start) as usize;
        let n = buf.len().min(data.len() - from);
        buf[..n].copy_from_slice(&data[from..from + n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: usize) -> Vec<u8> {
        let mut s = String::new();
        for i in 0..lines {
            s.push_str(&format!(
                "2026-12-02 10:{:02}:{:02} INFO req-{:016x} GET /api/v1/items/{} 200 {}ms\n",
                i / 60 % 60,
                i % 60,
                id(i),
                i % 977,
                i % 91
            ));
        }
        s.into_bytes()
    }

    fn id(i: usize) -> u64 {
        (i as u64 + 1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17)
    }

    fn sha(b: &[u8]) -> Sha256State {
        let mut s = Sha256State::new();
        s.update(b);
        s
    }

    fn pack(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pos = 0;
        compress(
            |buf| {
                let n = buf.len().min(data.len() - pos).min(100_000);
                buf[..n].copy_from_slice(&data[pos..pos + n]);
                pos += n;
                Ok(n)
            },
            &mut out,
            &sha(data),
        )
        .unwrap();
        out
    }

    struct Bytes(Vec<u8>);
    impl ReadAt for Bytes {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let from = (offset as usize).min(self.0.len());
            let n = buf.len().min(self.0.len() - from);
            buf[..n].copy_from_slice(&self.0[from..from + n]);
            Ok(n)
        }
    }

    #[test]
    fn any_offset_reads_back_and_zstd_decodes_the_whole() {
        let data = log(60_000);
        assert!(data.len() > 3 * FRAME);
        let z = pack(&data);
        // A trace id per line is 8 bytes no compressor can shrink: ~4× here.
        assert!(z.len() * 3 < data.len(), "{} of {}", z.len(), data.len());
        let r = SeekableReader::open(Box::new(Bytes(z.clone())), z.len() as u64).unwrap();
        assert_eq!(r.index().len(), data.len() as u64);
        assert!(r.index().frames.len() >= 4);
        let lines: u64 = r.index().lines_before(usize::MAX);
        assert_eq!(lines, 60_000);
        for at in [0, 1, FRAME as u64 - 1, FRAME as u64, data.len() as u64 - 3] {
            let mut buf = [0u8; 100];
            let n = r.read_at(&mut buf, at).unwrap();
            assert!(n > 0);
            assert_eq!(&buf[..n], &data[at as usize..at as usize + n]);
        }
        assert_eq!(r.read_at(&mut [0u8; 4], data.len() as u64).unwrap(), 0);
        // Every frame ends at a line end.
        for f in &r.index().frames {
            let end = (f.raw_start + u64::from(f.raw_len)) as usize;
            assert_eq!(data[end - 1], b'\n');
        }
        assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), data);
    }

    #[test]
    fn the_filter_skips_frames_without_the_literal_and_keeps_those_with_it() {
        let data = log(60_000);
        let z = pack(&data);
        let src = Bytes(z.clone());
        let index = Index::read(&src, z.len() as u64).unwrap();
        let id = format!("req-{:016x}", id(45_000));
        let at = data
            .windows(id.len())
            .position(|w| w == id.as_bytes())
            .unwrap() as u64;
        let want = index.frame_at(at).unwrap();
        let runs = index
            .candidates(&src, &grams(id.to_uppercase().as_bytes()))
            .unwrap();
        assert_eq!(runs, vec![want..want + 1], "only the frame with it");
        let count = |g: &[u64]| index.candidates(&src, g).unwrap().len();
        assert_eq!(count(&grams(b" INFO ")), index.frames.len());
        assert_eq!(count(&grams(b"no such words here")), 0);
        assert_eq!(count(&[]), index.frames.len());
        let filters: usize = index.frames.iter().map(|f| f.filter.len()).sum();
        assert!(filters * 5 < z.len(), "{filters} of {}", z.len());
    }

    #[test]
    fn long_lines_span_frames_as_one_run_and_empty_files_pack() {
        let mut data = vec![b'x'; FRAME * 2 + 10];
        data.extend_from_slice(b"needle\nand more\n");
        let z = pack(&data);
        let src = Bytes(z.clone());
        let index = Index::read(&src, z.len() as u64).unwrap();
        assert_eq!(index.frames.len(), 3);
        assert_eq!(
            index.candidates(&src, &grams(b"xxneedle")).unwrap(),
            vec![0..3]
        );
        // A frame of few grams folds its filter to the least.
        assert_eq!(index.frames[0].filter.len(), 1 << BLOOM_MIN_BYTES_LOG2);
        assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), data);

        let z = pack(b"");
        let index = Index::read(&Bytes(z.clone()), z.len() as u64).unwrap();
        assert!(index.is_empty() && index.frames.is_empty());
        assert!(zstd::stream::decode_all(&z[..]).unwrap().is_empty());
    }

    #[test]
    fn a_changed_source_is_refused_and_hostile_files_are_errors() {
        let data = log(100);
        let mut out = Vec::new();
        let mut pos = 0;
        let err = compress(
            |buf| {
                let n = buf.len().min(data.len() - pos);
                buf[..n].copy_from_slice(&data[pos..pos + n]);
                pos += n;
                Ok(n)
            },
            &mut out,
            &sha(&data[1..]),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let z = pack(&data);
        for cut in [0, 5, HEADER_BYTES, z.len() - 1] {
            assert!(Index::read(&Bytes(z[..cut].to_vec()), cut as u64).is_err());
        }
        for i in 0..z.len() {
            let mut bad = z.clone();
            bad[i] ^= 0x41;
            // Never a panic; a read that succeeds gives a frame of the stated length.
            if let Ok(r) = SeekableReader::open(Box::new(Bytes(bad)), z.len() as u64) {
                let mut buf = [0u8; 64];
                let _ = r.read_at(&mut buf, 10);
            }
        }
        let mut big = z.clone();
        let n = big.len();
        big[n - 9..n - 5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Index::read(&Bytes(big), n as u64).is_err());
    }
}
