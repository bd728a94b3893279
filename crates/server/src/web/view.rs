//! Reading a log a page at a time, by byte offset: whatever the file's size, a page costs one
//! positioned read of at most [`PAGE`] bytes (plus a line count when asked for a line number).

use super::error::WebError;
use logarchive_ftp::server::Reader;
use serde::Serialize;

/// Bytes per page.
pub const PAGE: u64 = 64 * 1024;
/// Most bytes counted for line numbers in one request (the rest of a huge file's count is
/// left unknown rather than making a page slow).
const COUNT_LINES_UP_TO: u64 = 64 << 20;
/// Files whose line counts are remembered.
const LINE_CACHE_FILES: usize = 4096;

/// Remembers, per file, how many lines precede some offset, so paging a log (or reloading its
/// end while it grows) counts only what is new instead of the whole file every time.
#[derive(Default)]
pub struct LineCache {
    known: std::sync::Mutex<std::collections::HashMap<u64, (u64, u64)>>,
}

impl LineCache {
    /// Lines before `offset` (a line start) of `f`, counting at most [`COUNT_LINES_UP_TO`]
    /// bytes.
    fn lines_before(&self, f: &dyn Reader, offset: u64) -> Result<Option<u64>, WebError> {
        let key = f.identity();
        let mut map = self.known.lock().unwrap_or_else(|p| p.into_inner());
        // The nearest known point at or before `offset` (a shrunk file forgets its count).
        let (from, lines) = match map.get(&key) {
            Some(&(at, n)) if at <= offset && at <= f.len() => (at, n),
            _ => (0, 0),
        };
        if offset - from > COUNT_LINES_UP_TO {
            return Ok(None);
        }
        drop(map);
        let n = lines + count_lines(f, from, offset)?;
        map = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= LINE_CACHE_FILES {
            map.clear();
        }
        map.insert(key, (offset, n));
        Ok(Some(n))
    }
}

/// One page of a file: whole lines (unless a single line is longer than a page).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page {
    /// The file's size when read.
    pub size: u64,
    /// Byte offset of the first byte shown.
    pub offset: u64,
    /// Byte offset just after the last byte shown (the next page starts here).
    pub end: u64,
    /// Line number of the first line shown, where known (1-based).
    pub first_line: Option<u64>,
    /// The text (invalid UTF-8 replaced).
    pub text: String,
    /// The local names the file had where it came from (a rotated log's `service.log.1`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub local_names: Vec<String>,
}

/// Where to open a file.
#[derive(Debug, Clone, Copy)]
pub enum At {
    /// The last page.
    End,
    /// The page starting at the line containing this byte; `line` is its number if known.
    Offset { offset: u64, line: Option<u64> },
    /// The page ending just before this byte (a line start): paging backwards. `line` is the
    /// number of the line starting at `end`, if known.
    Before { end: u64, line: Option<u64> },
    /// The page showing the line containing this byte with up to [`CONTEXT_LINES`] lines
    /// above it (a search hit); `line` is its number if known.
    Around { offset: u64, line: Option<u64> },
    /// The page starting at this line (1-based): found by counting newlines from the start.
    Line(u64),
}

/// Lines shown above a line opened with [`At::Around`].
pub const CONTEXT_LINES: usize = 20;
/// Bytes looked at for those lines (long lines give fewer).
const CONTEXT_BYTES: u64 = 16 * 1024;

fn read_at(f: &dyn Reader, offset: u64, len: u64) -> Result<Vec<u8>, WebError> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WebError::Internal(format!("reading a log: {e}"))),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Newlines in `[from, end)`, counted in 1 MiB reads.
fn count_lines(f: &dyn Reader, from: u64, end: u64) -> Result<u64, WebError> {
    let mut n = 0;
    let mut pos = from;
    while pos < end {
        let chunk = read_at(f, pos, (end - pos).min(1 << 20))?;
        if chunk.is_empty() {
            break;
        }
        n += memchr::memchr_iter(b'\n', &chunk).count() as u64;
        pos += chunk.len() as u64;
    }
    Ok(n)
}

/// The start of the line containing `offset`: the byte after the previous newline, looked for
/// at most a page back (a longer line starts mid-way).
fn line_start(f: &dyn Reader, offset: u64) -> Result<u64, WebError> {
    if offset == 0 {
        return Ok(0);
    }
    let from = offset.saturating_sub(PAGE);
    let back = read_at(f, from, offset - from)?;
    Ok(match back.iter().rposition(|b| *b == b'\n') {
        Some(i) => from + i as u64 + 1,
        None if from == 0 => 0,
        None => offset,
    })
}

/// The offset where line `line` (1-based) starts, or the file's size if it has fewer lines.
fn offset_of_line(f: &dyn Reader, size: u64, line: u64) -> Result<u64, WebError> {
    if line <= 1 {
        return Ok(0);
    }
    let mut seen = 0;
    let mut pos = 0;
    while pos < size {
        let chunk = read_at(f, pos, (size - pos).min(1 << 20))?;
        if chunk.is_empty() {
            break;
        }
        for i in memchr::memchr_iter(b'\n', &chunk) {
            seen += 1;
            if seen == line - 1 {
                return Ok(pos + i as u64 + 1);
            }
        }
        pos += chunk.len() as u64;
    }
    Ok(size)
}

/// Reads the page at `at`. Blocking: call from `spawn_blocking`.
pub fn read_page(f: &dyn Reader, lines: &LineCache, at: At) -> Result<Page, WebError> {
    let size = f.len();
    let (start, mut first_line) = match at {
        At::End => {
            // The first line that starts within the last page (the end of one line longer
            // than a page).
            let from = size.saturating_sub(PAGE);
            let s = if from == 0 {
                0
            } else {
                let tail = read_at(f, from - 1, (size - from + 1).min(PAGE + 1))?;
                match tail[..tail.len().saturating_sub(1)]
                    .iter()
                    .position(|b| *b == b'\n')
                {
                    Some(i) => from + i as u64,
                    None => from,
                }
            };
            (s, lines.lines_before(f, s)?.map(|n| n + 1))
        }
        At::Offset { offset, line } => {
            let offset = offset.min(size);
            let s = line_start(f, offset)?;
            let known = if s == offset { line } else { None };
            (
                s,
                match known {
                    Some(l) => Some(l),
                    None => lines.lines_before(f, s)?.map(|n| n + 1),
                },
            )
        }
        At::Around { offset, line } => {
            let offset = offset.min(size);
            let s = line_start(f, offset)?;
            let from = s.saturating_sub(CONTEXT_BYTES);
            let back = read_at(f, from, s - from)?;
            // `back` ends with the newline before line `s`; the start of the line
            // CONTEXT_LINES above is just after the (CONTEXT_LINES + 1)th newline from its end.
            let newlines: Vec<usize> = memchr::memrchr_iter(b'\n', &back)
                .take(CONTEXT_LINES + 1)
                .collect();
            let start = match newlines.get(CONTEXT_LINES) {
                Some(&i) => from + i as u64 + 1,
                None if from == 0 => 0,
                // Fewer lines fit in CONTEXT_BYTES: from the first whole one.
                None => newlines.last().map_or(s, |&i| from + i as u64 + 1),
            };
            let above = back[(start - from) as usize..]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            let known = if s == offset { line } else { None };
            let first = match known.and_then(|l| l.checked_sub(above)) {
                Some(l) => Some(l),
                None => lines.lines_before(f, start)?.map(|n| n + 1),
            };
            (start, first)
        }
        At::Line(n) => (offset_of_line(f, size, n)?, Some(n.max(1))),
        At::Before { end, line } => {
            let end = end.min(size);
            let from = end.saturating_sub(PAGE);
            let back = read_at(f, from, end - from)?;
            // The first line that starts at or after `from`, so the page ends exactly at `end`.
            let skip = if from == 0 {
                0
            } else {
                match back[..back.len().saturating_sub(1)]
                    .iter()
                    .position(|b| *b == b'\n')
                {
                    Some(i) => i + 1,
                    None => 0,
                }
            };
            let start = from + skip as u64;
            let text = &back[skip..];
            let lines_before = text.iter().filter(|b| **b == b'\n').count() as u64;
            let first = line.and_then(|l| l.checked_sub(lines_before));
            return Ok(Page {
                size,
                offset: start,
                end,
                first_line: if start == 0 { Some(1) } else { first },
                text: String::from_utf8_lossy(text).into_owned(),
                local_names: Vec::new(),
            });
        }
    };
    if start == 0 {
        first_line = Some(1);
    }
    let mut bytes = read_at(f, start, PAGE.min(size - start))?;
    let mut end = start + bytes.len() as u64;
    // End on a whole line unless that would leave nothing (a line longer than a page).
    if end < size {
        if let Some(i) = bytes.iter().rposition(|b| *b == b'\n') {
            bytes.truncate(i + 1);
            end = start + bytes.len() as u64;
        }
    }
    Ok(Page {
        size,
        offset: start,
        end,
        first_line,
        text: String::from_utf8_lossy(&bytes).into_owned(),
        local_names: Vec::new(),
    })
}

/// A log level found in a line, for colouring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    None,
}

impl Level {
    pub fn css(self) -> &'static str {
        match self {
            Level::Error => "lv-error",
            Level::Warn => "lv-warn",
            Level::Info => "lv-info",
            Level::Debug => "lv-debug",
            Level::None => "",
        }
    }

    /// One letter for the viewer's level filter: `e`, `w`, `i`, `d`, or empty.
    pub fn letter(self) -> &'static str {
        match self {
            Level::Error => "e",
            Level::Warn => "w",
            Level::Info => "i",
            Level::Debug => "d",
            Level::None => "",
        }
    }
}

/// The first level word in a line's first 160 bytes: `ERROR`, `[error]`, `level=warn`, `E/`...
pub fn level_of(line: &str) -> Level {
    let head = match line.char_indices().nth(160) {
        Some((i, _)) => &line[..i],
        None => line,
    };
    for word in head.split(|c: char| !c.is_ascii_alphabetic()) {
        let l = match word {
            "ERROR" | "Error" | "error" | "ERR" | "FATAL" | "Fatal" | "fatal" | "CRITICAL"
            | "CRIT" | "crit" | "critical" | "SEVERE" | "PANIC" | "panic" | "EMERG" | "ALERT" => {
                Level::Error
            }
            "WARN" | "Warn" | "warn" | "WARNING" | "Warning" | "warning" => Level::Warn,
            "INFO" | "Info" | "info" | "NOTICE" | "notice" => Level::Info,
            "DEBUG" | "Debug" | "debug" | "TRACE" | "trace" | "FINE" | "VERBOSE" => Level::Debug,
            _ => continue,
        };
        return l;
    }
    Level::None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file as the store's local back-end opens it.
    struct FileReader(std::fs::File, std::fs::Metadata);

    impl Reader for FileReader {
        fn len(&self) -> u64 {
            self.1.len()
        }
        fn modified(&self) -> Option<std::time::SystemTime> {
            self.1.modified().ok()
        }
        fn identity(&self) -> u64 {
            std::os::unix::fs::MetadataExt::ino(&self.1)
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            std::os::unix::fs::FileExt::read_at(&self.0, buf, offset)
        }
    }

    fn open(path: &std::path::Path) -> FileReader {
        let f = std::fs::File::open(path).unwrap();
        let m = f.metadata().unwrap();
        FileReader(f, m)
    }

    fn file(content: &[u8]) -> (tempfile::NamedTempFile, FileReader) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(content).unwrap();
        let f = open(t.path());
        (t, f)
    }

    #[test]
    fn pages_are_whole_lines_and_chain() {
        let lc = LineCache::default();
        let mut content = Vec::new();
        for i in 1..=20_000 {
            content.extend(format!("line {i} INFO something happened\n").as_bytes());
        }
        let (_t, f) = file(&content);
        let end = read_page(&f, &lc, At::End).unwrap();
        assert_eq!(end.end, content.len() as u64);
        assert!(end.text.starts_with("line "), "{}", &end.text[..20]);
        assert!(end.text.ends_with("line 20000 INFO something happened\n"));
        let first: u64 = end.text[5..].split(' ').next().unwrap().parse().unwrap();
        assert_eq!(end.first_line, Some(first));
        // Walking back from the end visits every line exactly once.
        let mut lines = end.text.lines().count();
        let mut p = end;
        while p.offset > 0 {
            let q = read_page(
                &f,
                &lc,
                At::Before {
                    end: p.offset,
                    line: p.first_line,
                },
            )
            .unwrap();
            assert_eq!(q.end, p.offset, "pages must chain");
            assert!(q.offset < q.end);
            lines += q.text.lines().count();
            let first: u64 = q.text[5..].split(' ').next().unwrap().parse().unwrap();
            assert_eq!(q.first_line, Some(first));
            p = q;
        }
        assert_eq!(lines, 20_000);
        assert_eq!(p.first_line, Some(1));
        let l = read_page(&f, &lc, At::Line(12_345)).unwrap();
        assert!(l.text.starts_with("line 12345 INFO"));
        assert_eq!(l.first_line, Some(12_345));
        // An offset mid-line opens at that line's start.
        let mid = read_page(
            &f,
            &lc,
            At::Offset {
                offset: l.offset + 3,
                line: None,
            },
        )
        .unwrap();
        assert_eq!(mid.offset, l.offset);
    }

    #[test]
    fn a_hit_opens_with_lines_above_it() {
        let lc = LineCache::default();
        let content: String = (1..=5000).map(|i| format!("line {i} x\n")).collect();
        let (_t, f) = file(content.as_bytes());
        let at = content.find("line 2500 x").unwrap() as u64;
        for line in [Some(2500), None] {
            let p = read_page(&f, &lc, At::Around { offset: at, line }).unwrap();
            let want_first = 2500 - CONTEXT_LINES as u64;
            assert!(
                p.text.starts_with(&format!("line {want_first} x\n")),
                "{line:?}"
            );
            assert_eq!(p.first_line, Some(want_first), "{line:?}");
        }
        // Near the start: what there is above it.
        let at = content.find("line 3 x").unwrap() as u64;
        let p = read_page(
            &f,
            &lc,
            At::Around {
                offset: at,
                line: Some(3),
            },
        )
        .unwrap();
        assert_eq!((p.offset, p.first_line), (0, Some(1)));
        // Long lines: fewer of them, starting at a whole line.
        let long: String = (1..=100)
            .map(|i| format!("{i} {}\n", "y".repeat(2000)))
            .collect();
        let (_t, f) = file(long.as_bytes());
        let at = long.find("\n90 ").unwrap() as u64 + 1;
        let p = read_page(
            &f,
            &lc,
            At::Around {
                offset: at,
                line: Some(90),
            },
        )
        .unwrap();
        let first: u64 = p.text.split(' ').next().unwrap().parse().unwrap();
        assert!((82..90).contains(&first), "{first}");
        assert_eq!(p.first_line, Some(first));
    }

    #[test]
    fn a_line_longer_than_a_page_still_shows() {
        let lc = LineCache::default();
        let content = vec![b'x'; 3 * PAGE as usize];
        let (_t, f) = file(&content);
        let p = read_page(&f, &lc, At::End).unwrap();
        assert_eq!((p.offset, p.end), (2 * PAGE, 3 * PAGE));
        let p = read_page(
            &f,
            &lc,
            At::Offset {
                offset: 0,
                line: None,
            },
        )
        .unwrap();
        assert_eq!((p.offset, p.end), (0, PAGE));
        let (_t, f) = file(b"");
        let p = read_page(&f, &lc, At::End).unwrap();
        assert_eq!((p.offset, p.end, p.text.as_str()), (0, 0, ""));
    }

    #[test]
    fn line_numbers_stay_right_while_a_file_grows() {
        let lc = LineCache::default();
        let mut t = tempfile::NamedTempFile::new().unwrap();
        let mut n = 0;
        for round in 0..5 {
            for _ in 0..10_000 {
                n += 1;
                writeln!(t, "line {n} of round {round}").unwrap();
            }
            t.flush().unwrap();
            let f = open(t.path());
            let p = read_page(&f, &lc, At::End).unwrap();
            let first: u64 = p.text[5..].split(' ').next().unwrap().parse().unwrap();
            assert_eq!(p.first_line, Some(first), "round {round}");
            // An offset in the middle counts from the remembered point or from the start.
            let mid = read_page(
                &f,
                &lc,
                At::Offset {
                    offset: p.offset / 2,
                    line: None,
                },
            )
            .unwrap();
            let first: u64 = mid.text[5..].split(' ').next().unwrap().parse().unwrap();
            assert_eq!(mid.first_line, Some(first), "round {round}, middle");
        }
    }

    #[test]
    fn levels() {
        assert_eq!(level_of("2024-07-23 10:00:00 ERROR boom"), Level::Error);
        assert_eq!(level_of("[warn] disk"), Level::Warn);
        assert_eq!(level_of("ts=1 level=info msg=x"), Level::Info);
        assert_eq!(level_of("DEBUG x"), Level::Debug);
        assert_eq!(level_of("an errorless line"), Level::None);
    }
}
