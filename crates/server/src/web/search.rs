//! Content search: ripgrep's engine over the files a name search left, on a few threads,
//! streaming hits as they are found, bounded by time and by match count, and cancelled as soon
//! as whoever reads the hits goes away.

use super::archive::{Archive, ArchivePath};
use super::error::WebError;
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
}

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

/// Starts a search over `files`; events arrive on the returned channel, `Done` last. Dropping
/// the receiver cancels the search.
pub fn start(
    archive: Arc<Archive>,
    files: Vec<Entry>,
    q: ContentQuery,
    threads: usize,
) -> Result<mpsc::Receiver<Event>, WebError> {
    let matcher = RegexMatcherBuilder::new()
        .case_insensitive(!q.case_sensitive)
        .fixed_strings(!q.regex)
        .line_terminator(Some(b'\n'))
        .build(&q.pattern)
        .map_err(|e| WebError::BadRequest(format!("bad pattern: {e}")))?;
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
    });
    let started = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (s, m, a, tx) = (
                Arc::clone(&shared),
                matcher.clone(),
                Arc::clone(&archive),
                tx.clone(),
            );
            std::thread::spawn(move || worker(&s, &m, &a, &tx))
        })
        .collect();
    std::thread::spawn(move || {
        for w in workers {
            let _ = w.join();
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
        let _ = tx.blocking_send(Event::Done(stats));
    });
    Ok(rx)
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
        .binary_detection(BinaryDetection::quit(0))
        .build();
    while s.go_on() {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        let Some(entry) = s.files.get(i) else { break };
        let Ok(path) = ArchivePath::parse(&entry.path) else {
            continue;
        };
        let Ok(open) = archive.open_file(&path) else {
            continue;
        };
        let mut sink = HitSink {
            s,
            tx,
            path: &entry.path,
        };
        // Errors (a file that vanished mid-read) only end that file's search.
        let _ = searcher.search_file(matcher, &open.file, &mut sink);
        s.files_searched.fetch_add(1, Ordering::Relaxed);
        s.bytes_searched
            .fetch_add(open.meta.len(), Ordering::Relaxed);
    }
}

struct HitSink<'a> {
    s: &'a Shared,
    tx: &'a mpsc::Sender<Event>,
    path: &'a str,
}

impl Sink for HitSink<'_> {
    type Error = std::io::Error;

    fn matched(
        &mut self,
        _searcher: &grep_searcher::Searcher,
        m: &SinkMatch<'_>,
    ) -> Result<bool, std::io::Error> {
        if !self.s.go_on() {
            return Ok(false);
        }
        let n = self.s.matches.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.s.max {
            self.s.stop.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        let text = String::from_utf8_lossy(m.bytes());
        let text = text.trim_end_matches(['\n', '\r']);
        let text = match text.char_indices().nth(MAX_LINE_CHARS) {
            Some((i, _)) => format!("{}…", &text[..i]),
            None => text.to_string(),
        };
        let hit = Hit {
            path: self.path.to_string(),
            line: m.line_number().unwrap_or(0),
            offset: m.absolute_byte_offset(),
            text,
        };
        if self.tx.blocking_send(Event::Hit(hit)).is_err() {
            // Nobody reads the results any more: cancel the whole search.
            self.s.stop.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        if n == self.s.max {
            self.s.stop.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }
}
