//! Content search: ripgrep's engine over the files a name search left, on a few threads,
//! streaming hits as they are found, bounded by time and by match count, and cancelled as soon
//! as whoever reads the hits goes away. The deadline and the cancellation are checked at every
//! read of a file (64 KiB), not only between files, and a reader too slow to take the hits
//! cannot hold the threads past the deadline. A search holds a [`SearchPermit`] until its last
//! thread has stopped: their number is bounded (see [`super::workers`]).

use super::archive::{Archive, ArchivePath};
use super::error::WebError;
use super::workers::{self, SearchPermit};
use crate::catalog::Entry;
use grep_regex::RegexMatcherBuilder;
use grep_searcher::{BinaryDetection, SearcherBuilder, Sink, SinkMatch};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What to look for.
#[derive(Debug, Clone)]
pub struct ContentQuery {
    pub pattern: String,
    pub regex: bool,
    pub case_sensitive: bool,
    pub max_matches: u64,
    pub timeout: Duration,
    /// Lines of context shown before and after each match (at most [`MAX_CONTEXT`]).
    pub context: usize,
    /// Only lines whose time (see [`Hit::time_ms`]) is in this range, inclusive.
    pub window: Option<(i64, i64)>,
}

/// The most context lines a match may carry on each side.
pub const MAX_CONTEXT: usize = 10;

/// One matching line.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hit {
    pub path: String,
    /// 1-based.
    pub line: u64,
    /// Byte offset of the line's start.
    pub offset: u64,
    /// The line (at most 400 characters, invalid UTF-8 replaced).
    pub text: String,
    /// Where the pattern matched in `text`: byte ranges `[start, end)`.
    pub matches: Vec<[usize; 2]>,
    /// The line's time: the date and time near its start (`2024-07-23 10:04:05` or
    /// `2024-07-23T10:04:05`, read as UTC), else the file's last modification (epoch ms).
    pub time_ms: i64,
    /// Lines just before it (with `context`), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<String>,
    /// Lines just after it (with `context`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

/// A line as shown: at most [`MAX_LINE_CHARS`] characters, without its line end.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\n', '\r']);
    match text.char_indices().nth(MAX_LINE_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The date and time a log line starts with (within its first 40 bytes), as epoch ms (UTC).
pub fn line_time(line: &str) -> Option<i64> {
    let b = line.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    (0..40.min(b.len())).find_map(|i| {
        let ok = digits(i..i + 4)
            && b.get(i + 4) == Some(&b'-')
            && digits(i + 5..i + 7)
            && b.get(i + 7) == Some(&b'-')
            && digits(i + 8..i + 10)
            && matches!(b.get(i + 10), Some(b' ' | b'T'))
            && digits(i + 11..i + 13)
            && b.get(i + 13) == Some(&b':')
            && digits(i + 14..i + 16);
        if !ok {
            return None;
        }
        let secs = b.get(i + 16) == Some(&b':') && digits(i + 17..i + 19);
        let end = if secs { i + 19 } else { i + 16 };
        super::time::parse_time(&line[i..end], false).ok()
    })
}

/// How a search ended.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SearchStats {
    pub files_searched: u64,
    pub bytes_searched: u64,
    pub matches: u64,
    /// Stopped at the match limit.
    pub hit_limit: bool,
    /// Stopped at the time limit.
    pub timed_out: bool,
    pub elapsed_ms: u64,
}

pub enum Event {
    Hit(Hit),
    Done(SearchStats),
}

const MAX_LINE_CHARS: usize = 400;

/// A running search: its events (`Done` last) and its end. Dropping `events` cancels it.
pub struct Running {
    pub events: mpsc::Receiver<Event>,
    /// Ends once every worker has stopped; yields the final statistics.
    pub finished: std::thread::JoinHandle<SearchStats>,
}

/// The largest compiled pattern (and lazy DFA cache) a search may use: a hostile pattern such
/// as `\w{3000}` would otherwise take seconds of CPU and tens of megabytes to compile.
pub const MAX_PROGRAM: usize = 1 << 20;

/// The longest line a search holds in memory (per thread); a file with a longer one is searched
/// up to it.
pub const MAX_LINE: usize = 16 << 20;

/// Starts a search over `files` on `threads` threads, which hold `permit` until the last one
/// stops. Compiles the pattern: call it on a blocking thread.
pub fn start(
    archive: Arc<Archive>,
    files: Vec<Entry>,
    q: ContentQuery,
    threads: usize,
    permit: SearchPermit,
) -> Result<Running, WebError> {
    let matcher = RegexMatcherBuilder::new()
        .case_insensitive(!q.case_sensitive)
        .fixed_strings(!q.regex)
        .line_terminator(Some(b'\n'))
        .size_limit(MAX_PROGRAM)
        .dfa_size_limit(MAX_PROGRAM)
        .build(&q.pattern)
        .map_err(|e| {
            let e = e.to_string();
            if e.contains("size limit") || e.contains("too big") {
                WebError::BadRequest(format!(
                    "the pattern is too complex (its compiled form exceeds {} KiB); simplify it",
                    MAX_PROGRAM / 1024
                ))
            } else {
                WebError::BadRequest(format!("bad pattern: {e}"))
            }
        })?;
    let (tx, rx) = mpsc::channel(256);
    let shared = Arc::new(Shared {
        files,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        matches: AtomicU64::new(0),
        files_searched: AtomicU64::new(0),
        bytes_searched: AtomicU64::new(0),
        timed_out: AtomicBool::new(false),
        deadline: Instant::now() + q.timeout,
        max: q.max_matches,
        context: q.context.min(MAX_CONTEXT),
        window: q.window,
        grams: if q.regex {
            Vec::new()
        } else {
            logarchive_store::seekable::grams(q.pattern.as_bytes())
        },
    });
    let started = Instant::now();
    let mut helpers = Vec::new();
    for _ in 1..threads.max(1) {
        let (s, m, a, tx) = (
            Arc::clone(&shared),
            matcher.clone(),
            Arc::clone(&archive),
            tx.clone(),
        );
        match workers::spawn("search", move || worker(&s, &m, &a, &tx)) {
            Ok(h) => helpers.push(h),
            // Fewer threads than asked for still finish the search.
            Err(e) => tracing::debug!("search thread: {e}"),
        }
    }
    // The first thread searches too, then waits for the others and reports.
    let finished = workers::spawn("search", move || {
        let _permit = permit;
        worker(&shared, &matcher, &archive, &tx);
        for h in helpers {
            let _ = h.join();
        }
        let matches = shared.matches.load(Ordering::Relaxed).min(shared.max);
        let stats = SearchStats {
            files_searched: shared.files_searched.load(Ordering::Relaxed),
            bytes_searched: shared.bytes_searched.load(Ordering::Relaxed),
            matches,
            hit_limit: matches >= shared.max,
            timed_out: shared.timed_out.load(Ordering::Relaxed),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        // The reader gets a little longer than the search for the totals.
        send(&shared, &tx, Event::Done(stats.clone()), DONE_GRACE);
        stats
    })?;
    Ok(Running {
        events: rx,
        finished,
    })
}

/// How long past the deadline the totals may wait for a slow reader.
const DONE_GRACE: Duration = Duration::from_secs(5);

/// Hands `event` to the reader, waiting while its queue is full, but never past the search's
/// deadline (+ `grace`): a reader that stopped reading cannot hold the threads. `false`: the
/// reader is gone or too slow; the search stops.
fn send(s: &Shared, tx: &mpsc::Sender<Event>, event: Event, grace: Duration) -> bool {
    let mut event = event;
    let mut pause = Duration::from_millis(1);
    loop {
        match tx.try_send(event) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => break,
            Err(mpsc::error::TrySendError::Full(back)) => {
                if Instant::now() >= s.deadline + grace {
                    s.timed_out.store(true, Ordering::Relaxed);
                    break;
                }
                event = back;
                std::thread::park_timeout(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }
    s.stop.store(true, Ordering::Relaxed);
    false
}

struct Shared {
    files: Vec<Entry>,
    next: AtomicUsize,
    stop: AtomicBool,
    matches: AtomicU64,
    files_searched: AtomicU64,
    bytes_searched: AtomicU64,
    timed_out: AtomicBool,
    deadline: Instant,
    max: u64,
    context: usize,
    window: Option<(i64, i64)>,
    /// The grams every line holding a literal pattern has (empty for a regex): frames of a
    /// compressed file whose filters lack one are not read.
    grams: Vec<u64>,
}

impl Shared {
    /// Whether to go on; records why not.
    fn go_on(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if Instant::now() >= self.deadline {
            self.timed_out.store(true, Ordering::Relaxed);
            self.stop.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }
}

fn worker(
    s: &Shared,
    matcher: &grep_regex::RegexMatcher,
    archive: &Archive,
    tx: &mpsc::Sender<Event>,
) {
    let mut searcher = SearcherBuilder::new()
        .line_number(true)
        .before_context(s.context)
        .after_context(s.context)
        .binary_detection(BinaryDetection::quit(0))
        .heap_limit(Some(MAX_LINE))
        .build();
    while s.go_on() {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        let Some(entry) = s.files.get(i) else { break };
        let Ok(path) = ArchivePath::parse(&entry.path) else {
            continue;
        };
        let Ok(open) = archive.open_file_blocking(&path) else {
            continue;
        };
        // A compressed file: only the runs of frames that may hold the literal, each with the
        // lines before it counted from the index. Else the whole file (and what was appended
        // since it was opened, where the store shows it).
        let parts: Vec<(u64, u64, u64)> = match open.seek_index() {
            Some(r) if !s.grams.is_empty() => {
                let index = r.index();
                // Filters that cannot be read: every frame is read instead.
                let runs = r
                    .candidates(&s.grams)
                    .unwrap_or_else(|_| std::iter::once(0..index.frames.len()).collect());
                runs.into_iter()
                    .map(|run| {
                        let (a, b) = (&index.frames[run.start], &index.frames[run.end - 1]);
                        let end = b.raw_start + u64::from(b.raw_len);
                        (a.raw_start, end, index.lines_before(run.start))
                    })
                    .collect()
            }
            _ => vec![(0, u64::MAX, 0)],
        };
        for (start, end, lines_before) in parts {
            if !s.go_on() {
                break;
            }
            let mut sink = HitSink {
                s,
                tx,
                matcher,
                entry,
                before: Vec::new(),
                pending: None,
                base_line: lines_before,
                base_offset: start,
            };
            // Errors (a file that vanished mid-read, a line over MAX_LINE, the deadline) only
            // end that file's search.
            let reader = Checked {
                s,
                tx,
                file: &open,
                pos: start,
                end,
            };
            let _ = searcher.search_reader(matcher, reader, &mut sink);
            sink.flush();
        }
        s.files_searched.fetch_add(1, Ordering::Relaxed);
    }
}

/// A file read that stops when the search does (deadline, match limit, reader gone), at the
/// next read rather than at the end of the file.
struct Checked<'a> {
    s: &'a Shared,
    tx: &'a mpsc::Sender<Event>,
    file: &'a super::archive::OpenFile,
    pos: u64,
    /// Where to stop (`u64::MAX`: at the end, however far that has grown).
    end: u64,
}

impl std::io::Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.tx.is_closed() {
            // Whoever read the hits has gone, though no hit has told us yet.
            self.s.stop.store(true, Ordering::Relaxed);
        }
        if !self.s.go_on() {
            return Err(std::io::Error::other("the search stopped"));
        }
        // Also what was appended since the file was opened (where the store shows it).
        let want = buf
            .len()
            .min(usize::try_from(self.end - self.pos).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        self.s.bytes_searched.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

struct HitSink<'a> {
    s: &'a Shared,
    tx: &'a mpsc::Sender<Event>,
    matcher: &'a grep_regex::RegexMatcher,
    entry: &'a Entry,
    /// Context lines seen since the last match.
    before: Vec<String>,
    /// The last match, waiting for the context after it.
    pending: Option<Hit>,
    /// Lines and bytes before where this read started (a part of a compressed file).
    base_line: u64,
    base_offset: u64,
}

impl HitSink<'_> {
    /// Sends the match waiting for its context, if any. `false`: the search has stopped.
    fn flush(&mut self) -> bool {
        match self.pending.take() {
            Some(hit) => send(self.s, self.tx, Event::Hit(hit), Duration::ZERO),
            None => true,
        }
    }

    /// Where the pattern matches in `text`.
    fn ranges(&self, text: &str) -> Vec<[usize; 2]> {
        use grep_matcher::Matcher;
        let mut out = Vec::new();
        let _ = self.matcher.find_iter(text.as_bytes(), |m| {
            if m.start() < m.end() {
                out.push([m.start(), m.end()]);
            }
            out.len() < 64
        });
        out
    }
}

impl Sink for HitSink<'_> {
    type Error = std::io::Error;

    fn matched(
        &mut self,
        _searcher: &grep_searcher::Searcher,
        m: &SinkMatch<'_>,
    ) -> Result<bool, std::io::Error> {
        if !self.s.go_on() || !self.flush() {
            // Nobody reads the results any more (or too slowly): the search has stopped.
            return Ok(false);
        }
        let text = shown(m.bytes());
        let time_ms = line_time(&text).unwrap_or(self.entry.modified_ms);
        if let Some((from, to)) = self.s.window {
            if time_ms < from || time_ms > to {
                self.before.clear();
                return Ok(true);
            }
        }
        let n = self.s.matches.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.s.max {
            self.s.stop.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        self.pending = Some(Hit {
            path: self.entry.path.clone(),
            line: m.line_number().unwrap_or(0) + self.base_line,
            offset: m.absolute_byte_offset() + self.base_offset,
            matches: self.ranges(&text),
            text,
            time_ms,
            before: std::mem::take(&mut self.before),
            after: Vec::new(),
        });
        if n == self.s.max {
            self.flush();
            self.s.stop.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    fn context(
        &mut self,
        _searcher: &grep_searcher::Searcher,
        c: &grep_searcher::SinkContext<'_>,
    ) -> Result<bool, std::io::Error> {
        let line = shown(c.bytes());
        match (c.kind(), self.pending.as_mut()) {
            (grep_searcher::SinkContextKind::After, Some(hit)) => hit.after.push(line),
            (grep_searcher::SinkContextKind::Before, _) => self.before.push(line),
            _ => {}
        }
        Ok(true)
    }

    fn context_break(
        &mut self,
        _searcher: &grep_searcher::Searcher,
    ) -> Result<bool, std::io::Error> {
        self.before.clear();
        Ok(self.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive holding `files` (name, content) in `agent01`, and their catalog entries.
    fn archive_of(files: &[(String, &str)]) -> (tempfile::TempDir, Arc<Archive>, Vec<Entry>) {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("agent01");
        std::fs::create_dir_all(&dir).unwrap();
        let mut entries = Vec::new();
        for (name, body) in files {
            std::fs::write(dir.join(name), body).unwrap();
            entries.push(Entry {
                path: format!("/agent01/{name}"),
                agent: "agent01".into(),
                size: body.len() as u64,
                sha256: None,
                modified_ms: 0,
                archived_ms: 0,
                appended_ms: None,
            });
        }
        // The archive reads through the store, which waits on a runtime (one for all tests).
        static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        let rt = RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap());
        let _in = rt.enter();
        let store = logarchive_ftp::server::LocalStorage::open(d.path()).unwrap();
        let archive = Arc::new(Archive::new(Arc::new(store)));
        (d, archive, entries)
    }

    /// Starts a search with a permit of its own.
    fn search(
        archive: Arc<Archive>,
        files: Vec<Entry>,
        pattern: &str,
        regex: bool,
        timeout: Duration,
        threads: usize,
    ) -> Running {
        let q = ContentQuery {
            pattern: pattern.into(),
            regex,
            case_sensitive: false,
            max_matches: u64::MAX,
            timeout,
            context: 0,
            window: None,
        };
        let permit = crate::web::workers::Workers::new(1, 1, 1)
            .search("t")
            .unwrap();
        start(archive, files, q, threads, permit).unwrap()
    }

    /// One big file of long runs of letters and a pattern with no literal to skip by, that
    /// must be tried at every position: ~4 s for the whole file here, far past the deadline.
    #[test]
    fn the_deadline_holds_inside_one_hostile_file() {
        let line = format!("{}\n", "a".repeat(4000));
        let body = line.repeat((64 << 20) / line.len());
        let (_d, archive, files) = archive_of(&[("hostile.log".into(), &body)]);
        let t = Instant::now();
        let timeout = Duration::from_millis(300);
        let mut s = search(archive, files, "[a-z]{100}[0-9]", true, timeout, 1);
        while let Some(e) = s.events.blocking_recv() {
            if let Event::Done(_) = e {
                break;
            }
        }
        let stats = s.finished.join().unwrap();
        assert!(stats.timed_out, "{stats:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{:?}: the deadline was not kept",
            t.elapsed()
        );
        assert!(stats.bytes_searched < body.len() as u64, "{stats:?}");
    }

    fn hits(mut s: Running) -> (Vec<Hit>, SearchStats) {
        let mut out = Vec::new();
        while let Some(e) = s.events.blocking_recv() {
            match e {
                Event::Hit(h) => out.push(h),
                Event::Done(_) => break,
            }
        }
        (out, s.finished.join().unwrap())
    }

    /// A compressed file is searched frame by frame: a literal reads only the frames whose
    /// filters may hold it, and its hits have the same line numbers and offsets as in the
    /// plain file; a regex reads every frame.
    #[test]
    fn a_compressed_file_is_searched_only_where_the_literal_may_be() {
        let body: String = (0..120_000u64)
            .map(|i| {
                format!(
                    "2026-12-02 10:00:{:02} INFO trace={:016x} GET /items/{} 200\n",
                    i % 60,
                    (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    i % 1000
                )
            })
            .collect();
        let id = format!("{:016x}", 100_001u64.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (d, archive, files) = archive_of(&[("big.log".into(), &body)]);
        let (plain, _) = hits(search(
            Arc::clone(&archive),
            files.clone(),
            &id,
            false,
            Duration::from_secs(60),
            1,
        ));
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].line, 100_001);
        let store = logarchive_ftp::server::LocalStorage::open(d.path()).unwrap();
        let root = logarchive_ftp::server::VirtualPath::default();
        let packed = store
            .compress_quiet(&root, Duration::ZERO, &|_| false)
            .unwrap();
        assert_eq!(packed.files, 1);
        assert!(d.path().join("agent01/big.log.zst").exists());

        let (found, stats) = hits(search(
            Arc::clone(&archive),
            files.clone(),
            &id.to_uppercase(),
            false,
            Duration::from_secs(60),
            1,
        ));
        assert_eq!(found.len(), 1, "{stats:?}");
        assert_eq!(
            (found[0].line, found[0].offset),
            (plain[0].line, plain[0].offset)
        );
        assert_eq!(found[0].text, plain[0].text);
        assert!(
            stats.bytes_searched * 4 < body.len() as u64,
            "frames were read that cannot hold it: {stats:?}"
        );
        let (found, stats) = hits(search(
            archive,
            files,
            &format!("trace={}", &id[..12]),
            true,
            Duration::from_secs(60),
            1,
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, 100_001);
        assert_eq!(
            stats.bytes_searched,
            body.len() as u64,
            "a regex reads it all"
        );
    }

    #[test]
    fn dropping_the_receiver_cancels_the_search() {
        let line = "a line that matches\n".repeat(10_000);
        let files: Vec<_> = (0..200).map(|i| (format!("f{i}.log"), &line[..])).collect();
        let (_d, archive, files) = archive_of(&files);
        let mut s = search(
            archive,
            files,
            "matches",
            false,
            Duration::from_secs(600),
            2,
        );
        assert!(matches!(s.events.blocking_recv(), Some(Event::Hit(_))));
        drop(s.events);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(s.finished.join().unwrap()));
        let stats = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the search did not stop after its reader left");
        assert!(stats.files_searched < 200, "{stats:?}");
        assert!(stats.matches < 2_000_000);
    }
}
