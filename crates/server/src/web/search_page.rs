//! The search page, streamed: the form and the name matches first, then each content match as
//! it is found (highlighted, with its context lines), then the summary: totals, matches per
//! agent, and a histogram of the matches over time whose bars narrow the time range. The
//! summary is written last but shown at the top (CSS `order`). Leaving the page (or "Stop")
//! cancels the search.

use super::api::{self, SearchParams};
use super::archive::{encode_component, ArchivePath};
use super::error::WebError;
use super::pages::{count, size, took, FileRow, Nav, PageCaller, PageResult, S};
use super::search::{self, Hit, SearchStats};
use super::time::format_ms;
use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::Response;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

#[derive(Template)]
#[template(path = "search_head.html")]
struct SearchHead {
    nav: Nav,
    p: SearchForm,
    files: Vec<FileRow>,
    error: Option<String>,
    content: bool,
}

/// The form's values, for redisplay and for the links that narrow it.
#[derive(Default, Clone)]
struct SearchForm {
    q: String,
    agent: String,
    from: String,
    to: String,
    content: String,
    regex: bool,
    case: bool,
    context: usize,
}

impl SearchForm {
    /// This search with other values of `agent`, `from` and `to`.
    fn url(&self, agent: &str, from: &str, to: &str) -> String {
        let mut u = format!(
            "/search?q={}&agent={}&from={}&to={}&content={}",
            encode_component(&self.q),
            encode_component(agent),
            encode_component(from),
            encode_component(to),
            encode_component(&self.content)
        );
        if self.regex {
            u.push_str("&regex=true");
        }
        if self.case {
            u.push_str("&case=true");
        }
        if self.context > 0 {
            u.push_str(&format!("&context={}", self.context));
        }
        u
    }
}

/// A piece of a matching line: matched or not.
struct Seg {
    text: String,
    hit: bool,
}

/// A context line and its number.
struct Ctx {
    n: u64,
    text: String,
}

#[derive(Template)]
#[template(path = "search_hit.html")]
struct SearchHit {
    path: String,
    url: String,
    line: u64,
    segs: Vec<Seg>,
    before: Vec<Ctx>,
    after: Vec<Ctx>,
}

impl SearchHit {
    fn of(h: Hit) -> SearchHit {
        let p = ArchivePath::parse(&h.path).unwrap_or_else(|_| ArchivePath::root());
        let first_before = h.line.saturating_sub(h.before.len() as u64);
        SearchHit {
            url: format!(
                "/view{}?around={}&ln={}#l{}",
                p.url(),
                h.offset,
                h.line,
                h.line
            ),
            segs: segments(&h.text, &h.matches),
            before: numbered(first_before, h.before),
            after: numbered(h.line + 1, h.after),
            path: h.path,
            line: h.line,
        }
    }
}

fn numbered(first: u64, lines: Vec<String>) -> Vec<Ctx> {
    (first..)
        .zip(lines)
        .map(|(n, text)| Ctx { n, text })
        .collect()
}

/// `text` cut at the matched ranges (ranges not on character boundaries are ignored).
fn segments(text: &str, ranges: &[[usize; 2]]) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut at = 0;
    for &[s, e] in ranges {
        if s < at || e > text.len() || !text.is_char_boundary(s) || !text.is_char_boundary(e) {
            continue;
        }
        if s > at {
            out.push(Seg {
                text: text[at..s].to_string(),
                hit: false,
            });
        }
        out.push(Seg {
            text: text[s..e].to_string(),
            hit: true,
        });
        at = e;
    }
    if at < text.len() {
        out.push(Seg {
            text: text[at..].to_string(),
            hit: false,
        });
    }
    out
}

/// What the page counts while the hits stream by.
#[derive(Default)]
struct Tally {
    per_agent: BTreeMap<String, u64>,
    files: HashSet<String>,
    times: Vec<i64>,
}

impl Tally {
    fn add(&mut self, h: &Hit) {
        let agent = h.path.split('/').nth(1).unwrap_or_default();
        match self.per_agent.get_mut(agent) {
            Some(n) => *n += 1,
            None => {
                self.per_agent.insert(agent.to_string(), 1);
            }
        }
        if !self.files.contains(&h.path) {
            self.files.insert(h.path.clone());
        }
        self.times.push(h.time_ms);
    }
}

struct AgentCount {
    name: String,
    n: u64,
    url: String,
}

#[derive(Template)]
#[template(path = "search_tail.html")]
struct SearchTail {
    content: bool,
    stats: SearchStats,
    files_with_matches: u64,
    size: String,
    per_agent: Vec<AgentCount>,
    histogram: Option<Histogram>,
    max_matches: u64,
    timeout_s: u64,
}

impl SearchTail {
    fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "{} in {} of {} searched ({}) in {}",
            count(s.matches, "match", "matches"),
            count(self.files_with_matches, "file", "files"),
            count(s.files_searched, "file", "files"),
            self.size,
            took(s.elapsed_ms)
        )
    }
}

/// Matches over time: bars of equal time steps, each a link narrowing the search to its step.
struct Histogram {
    width: f64,
    height: f64,
    bars: Vec<HBar>,
    /// Time labels under the first and last bar, and the highest count.
    start: String,
    end: String,
    top: u64,
    step: String,
}

struct HBar {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    n: u64,
    url: String,
    title: String,
}

/// Time steps a histogram may use, with their names.
const STEPS: &[(i64, &str)] = &[
    (1_000, "1 s"),
    (5_000, "5 s"),
    (15_000, "15 s"),
    (60_000, "1 min"),
    (300_000, "5 min"),
    (900_000, "15 min"),
    (3_600_000, "1 h"),
    (3 * 3_600_000, "3 h"),
    (6 * 3_600_000, "6 h"),
    (86_400_000, "1 day"),
    (7 * 86_400_000, "1 week"),
    (30 * 86_400_000, "30 days"),
    (365 * 86_400_000, "365 days"),
];

/// At most this many bars.
const MAX_BARS: i64 = 60;

/// `2024-07-23T10:04:05`, as the form's time fields take it.
fn form_time(ms: i64) -> String {
    format_ms(ms).replacen(' ', "T", 1)
}

fn histogram(times: &[i64], form: &SearchForm) -> Option<Histogram> {
    let (&min, &max) = (times.iter().min()?, times.iter().max()?);
    let &(step, step_name) = STEPS
        .iter()
        .find(|(s, _)| (max - min.div_euclid(*s) * s) / s < MAX_BARS)
        .unwrap_or(&STEPS[STEPS.len() - 1]);
    let first = min.div_euclid(step) * step;
    let n = ((max - first) / step + 1).clamp(1, 10 * MAX_BARS) as usize;
    let mut counts = vec![0u64; n];
    for &t in times {
        let i = ((t - first) / step) as usize;
        if let Some(c) = counts.get_mut(i.min(n - 1)) {
            *c += 1;
        }
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1);
    let (width, height, base) = (760.0, 110.0, 90.0);
    let slot = width / n as f64;
    let bars = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, &c)| {
            let from = first + i as i64 * step;
            let to = from + step - 1;
            let h = (c as f64 / top as f64 * (base - 4.0)).max(2.0);
            HBar {
                x: i as f64 * slot + 1.0,
                y: base - h,
                w: (slot - 2.0).max(1.0),
                h,
                n: c,
                url: form.url(&form.agent, &form_time(from), &form_time(to)),
                title: format!("{} from {}", count(c, "match", "matches"), format_ms(from)),
            }
        })
        .collect();
    Some(Histogram {
        width,
        height,
        bars,
        start: format_ms(first),
        end: format_ms(first + n as i64 * step),
        top,
        step: step_name.to_string(),
    })
}

pub(super) async fn page(
    PageCaller(c): PageCaller,
    State(st): S,
    Query(p): Query<SearchParams>,
) -> PageResult {
    let form = SearchForm {
        q: p.q.clone().unwrap_or_default(),
        agent: p.agent.clone().unwrap_or_default(),
        from: p.from.clone().unwrap_or_default(),
        to: p.to.clone().unwrap_or_default(),
        content: p.content.clone().unwrap_or_default(),
        regex: api::truthy(&p.regex),
        case: api::truthy(&p.case),
        context: p.context.unwrap_or(0).min(search::MAX_CONTEXT),
    };
    let any = p.q.as_deref().is_some_and(|s| !s.trim().is_empty())
        || p.agent.as_deref().is_some_and(|s| !s.trim().is_empty())
        || p.content().is_some()
        || p.from.as_deref().is_some_and(|s| !s.is_empty())
        || p.to.as_deref().is_some_and(|s| !s.is_empty());
    let mut error = None;
    let mut files = Vec::new();
    let mut rx = None;
    if any {
        let limit = p.limit.unwrap_or(200).clamp(1, 10_000);
        let started = async {
            let q = p.name_query(limit)?;
            let names = if p.content().is_some() {
                Vec::new()
            } else {
                api::name_search(&st, q).await?
            };
            let rx = api::start_content_search(&st, &p, &c.name).await?;
            Ok::<_, WebError>((names, rx))
        };
        match started.await {
            Ok((names, r)) => {
                files = names.iter().map(FileRow::of).collect();
                rx = r;
            }
            Err(WebError::BadRequest(m)) => error = Some(m),
            Err(e) => return Err(e.into()),
        }
    }
    let content = rx.is_some();
    let head = SearchHead {
        nav: Nav::of(&c, "search"),
        p: form.clone(),
        files,
        error,
        content,
    }
    .render()
    .map_err(WebError::from)?;
    let (max_matches, timeout_s) = (
        st.config.search_max_matches,
        st.config.search_timeout.as_secs(),
    );
    let metrics = Arc::clone(&st.metrics);
    let stream = streamed(head, rx, move |stats: &SearchStats, tally: &Tally| {
        metrics.on_search(stats.elapsed_ms as f64 / 1000.0);
        SearchTail {
            content,
            files_with_matches: tally.files.len() as u64,
            size: size(stats.bytes_searched),
            per_agent: tally
                .per_agent
                .iter()
                .map(|(a, &n)| AgentCount {
                    url: form.url(a, &form.from, &form.to),
                    name: a.clone(),
                    n,
                })
                .collect(),
            histogram: histogram(&tally.times, &form),
            stats: stats.clone(),
            max_matches,
            timeout_s,
        }
        .render()
        .unwrap_or_default()
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(stream)
        .map_err(|e| WebError::Internal(e.to_string()))?)
}

/// How long the search page goes without writing anything.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// The state of the streamed body.
struct Stream<F> {
    head: Option<String>,
    rx: Option<tokio::sync::mpsc::Receiver<search::Event>>,
    tally: Tally,
    tail: F,
    done: bool,
}

/// The body of the streamed search page.
fn streamed(
    head: String,
    rx: Option<tokio::sync::mpsc::Receiver<search::Event>>,
    tail: impl Fn(&SearchStats, &Tally) -> String + Send + 'static,
) -> Body {
    let state = Stream {
        head: Some(head),
        rx,
        tally: Tally::default(),
        tail,
        done: false,
    };
    Body::from_stream(futures_util::stream::unfold(state, |mut s| async move {
        type Chunk = Result<Bytes, std::convert::Infallible>;
        let out = |b: String| -> Chunk { Ok(Bytes::from(b)) };
        if s.done {
            return None;
        }
        if let Some(h) = s.head.take() {
            return Some((out(h), s));
        }
        let Some(r) = s.rx.as_mut() else {
            s.done = true;
            let t = (s.tail)(&SearchStats::default(), &s.tally);
            return Some((out(t), s));
        };
        // A search that finds nothing for a while writes a newline each second: the only way
        // to learn that the reader closed the page, which cancels it.
        let next = match tokio::time::timeout(HEARTBEAT, r.recv()).await {
            Ok(next) => next,
            Err(_) => return Some((Ok(Bytes::from_static(b"\n")), s)),
        };
        match next? {
            search::Event::Hit(h) => {
                s.tally.add(&h);
                let row = SearchHit::of(h).render().unwrap_or_default();
                Some((out(row), s))
            }
            search::Event::Done(stats) => {
                s.done = true;
                s.rx = None;
                let t = (s.tail)(&stats, &s.tally);
                Some((out(t), s))
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_are_cut_out_for_highlighting() {
        let segs = segments("a bc bc d", &[[2, 4], [5, 7], [3, 9], [8, 30]]);
        let parts: Vec<(&str, bool)> = segs.iter().map(|s| (s.text.as_str(), s.hit)).collect();
        assert_eq!(
            parts,
            [
                ("a ", false),
                ("bc", true),
                (" ", false),
                ("bc", true),
                (" d", false)
            ]
        );
        // Not on a character boundary: left whole.
        let segs = segments("é", &[[1, 2]]);
        assert_eq!((segs.len(), segs[0].hit), (1, false));
    }

    #[test]
    fn the_histogram_steps_cover_the_matches() {
        let form = SearchForm {
            content: "x".into(),
            ..Default::default()
        };
        let t0 = super::super::time::parse_time("2024-07-23T10:00:00", false).unwrap();
        // Over ten minutes: 15-second steps; each bar links to its own step.
        let times: Vec<i64> = (0..600).step_by(7).map(|s| t0 + s * 1000).collect();
        let h = histogram(&times, &form).unwrap();
        assert_eq!(h.step, "15 s");
        let total: u64 = h.bars.iter().map(|b| b.n).sum();
        assert_eq!(total, times.len() as u64);
        assert!(
            h.bars[0].url.contains("from=2024-07-23T10%3A00%3A00"),
            "{}",
            h.bars[0].url
        );
        assert!(
            h.bars[0].url.contains("to=2024-07-23T10%3A00%3A14"),
            "{}",
            h.bars[0].url
        );
        // One instant: one bar.
        let h = histogram(&[t0, t0], &form).unwrap();
        assert_eq!(h.bars.len(), 1);
        assert_eq!(h.bars[0].n, 2);
        assert!(histogram(&[], &form).is_none());
        // Years apart: still a bounded number of bars.
        let h = histogram(&[0, t0], &form).unwrap();
        assert!(h.bars.len() <= 2 && h.width > 0.0);
    }
}
