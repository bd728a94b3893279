//! The dashboard (every agent online or not, its backlog, lag and last error; archived bytes
//! per day; the latest uploads) and each agent's status page.

use super::api;
use super::archive::encode_component;
use super::dashboard::{self, AgentStatus, AgentView, Chart};
use super::error::WebError;
use super::pages::{count, size, FileRow, Nav, PageCaller, PageResult, S};
use super::time::format_ms;
use askama::Template;
use axum::extract::{Path, State};
use std::sync::Arc;

/// An agent that published its status within this long is online (it publishes every minute
/// by default: `status_interval`).
pub const ONLINE_WITHIN_MS: i64 = 5 * 60_000;

/// A past time for people: `just now`, `4 min ago`, `3 h ago`, `2 days ago`.
pub fn ago(now_ms: i64, t_ms: i64) -> String {
    let s = (now_ms - t_ms).max(0) / 1000;
    match s {
        0..=44 => "just now".into(),
        45..=3599 => format!("{} min ago", (s + 30) / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => count((s / 86_400) as u64, "day ago", "days ago"),
    }
}

/// A time shown relative to now, with the exact UTC time on hover.
pub struct When {
    pub rel: String,
    pub exact: String,
}

impl When {
    fn of(now_ms: i64, t: Option<i64>) -> When {
        match t {
            Some(t) => When {
                rel: ago(now_ms, t),
                exact: format!("{} UTC", format_ms(t)),
            },
            None => When {
                rel: "never".into(),
                exact: String::new(),
            },
        }
    }
}

struct AgentRow {
    name: String,
    url: String,
    status_url: String,
    host: String,
    online: bool,
    last_seen: When,
    files: u64,
    bytes: String,
    /// Bytes the store takes, and the ratio.
    stored: String,
    backlog: String,
    /// Worst lag of a file behind its writer.
    lag: String,
    lag_title: String,
    behind: bool,
    last_error: String,
}

impl AgentRow {
    fn of(a: &AgentView, now: i64) -> AgentRow {
        let s = a.status.clone().unwrap_or_default();
        AgentRow {
            name: a.agent.clone(),
            url: format!("/browse/{}", encode_component(&a.agent)),
            status_url: format!("/agents/{}", encode_component(&a.agent)),
            host: host(&s),
            online: online(&s, now),
            last_seen: When::of(now, s.updated_at_ms),
            files: a.archive.files,
            bytes: size(a.archive.bytes),
            stored: stored(a.archive.bytes, a.stored_bytes),
            backlog: backlog(&s),
            behind: s.max_lag_seconds.is_some_and(|x| x >= 60),
            lag: lag(&s),
            lag_title: s
                .lagging
                .iter()
                .map(|l| format!("{}: {} s, {}", l.path, l.seconds, size(l.bytes)))
                .collect::<Vec<_>>()
                .join("\n"),
            last_error: s.last_error.unwrap_or_default(),
        }
    }
}

/// `"150 MB (8.0×)"`: what the store takes for `bytes` of files, and the compression ratio.
fn stored(bytes: u64, stored: Option<u64>) -> String {
    match stored {
        None => "—".into(),
        Some(s) if s > 0 && bytes > s => format!("{} ({:.1}×)", size(s), bytes as f64 / s as f64),
        Some(s) => size(s),
    }
}

fn online(s: &AgentStatus, now: i64) -> bool {
    s.updated_at_ms
        .is_some_and(|t| now.saturating_sub(t) <= ONLINE_WITHIN_MS)
}

fn host(s: &AgentStatus) -> String {
    match &s.claimed_agent_id {
        Some(id) => format!("{} (claims to be {id})", s.host.as_deref().unwrap_or("—")),
        None => s.host.clone().unwrap_or_else(|| "—".into()),
    }
}

fn backlog(s: &AgentStatus) -> String {
    match (s.backlog_files, s.backlog_bytes) {
        (Some(f), Some(b)) => format!("{}, {}", count(f, "file", "files"), size(b)),
        _ => "—".into(),
    }
}

fn lag(s: &AgentStatus) -> String {
    match (s.max_lag_seconds, s.max_lag_bytes) {
        (Some(0), Some(0)) => "none".to_string(),
        (Some(secs), Some(b)) => format!("{secs} s, {}", size(b)),
        _ => "—".into(),
    }
}

struct RecentRow {
    f: FileRow,
    archived: When,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    nav: Nav,
    agents: Vec<AgentRow>,
    online: usize,
    recent: Vec<RecentRow>,
    chart: Chart,
    files: u64,
    bytes: String,
    stored: String,
    disk: String,
}

pub(super) async fn dashboard(PageCaller(c): PageCaller, State(st): S) -> PageResult {
    let d = api::dashboard_data(&st).await?;
    let c2 = Arc::clone(&st.catalog);
    let recent = tokio::task::spawn_blocking(move || c2.recent(15))
        .await
        .map_err(WebError::from)??;
    let now = api::now_ms();
    let agents: Vec<AgentRow> = d.agents.iter().map(|a| AgentRow::of(a, now)).collect();
    super::pages::html(&DashboardPage {
        nav: Nav::of(&c, "dashboard"),
        online: agents.iter().filter(|a| a.online).count(),
        agents,
        recent: recent
            .iter()
            .map(|e| RecentRow {
                f: FileRow::of(e),
                archived: When::of(now, Some(e.archived_ms)),
            })
            .collect(),
        chart: dashboard::chart(&d.daily_bytes, now / 86_400_000),
        files: d.files,
        bytes: size(d.bytes),
        stored: stored(d.bytes, d.stored_bytes),
        disk: d.disk.map_or("unknown".into(), |d| {
            format!("{} free of {}", size(d.free_bytes), size(d.total_bytes))
        }),
    })
}

/// One line of an agent's status page.
struct Fact {
    label: &'static str,
    value: String,
    id: &'static str,
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    nav: Nav,
    name: String,
    browse_url: String,
    online: bool,
    last_seen: When,
    facts: Vec<Fact>,
    last_error: String,
    lagging: Vec<(String, String, String)>,
}

/// An agent's status document in full.
pub(super) async fn agent(
    PageCaller(c): PageCaller,
    State(st): S,
    Path(name): Path<String>,
) -> PageResult {
    let st2 = Arc::clone(&st);
    let a = tokio::task::spawn_blocking(move || {
        dashboard::agent(&st2.archive, &st2.catalog, &st2.stored, &name)
    })
    .await
    .map_err(WebError::from)??
    .ok_or(WebError::NotFound)?;
    let now = api::now_ms();
    let s = a.status.clone().unwrap_or_default();
    let opt = |v: Option<u64>| v.map_or("—".to_string(), |v| v.to_string());
    let facts = vec![
        Fact {
            label: "Host (claimed)",
            value: host(&s),
            id: "host",
        },
        Fact {
            label: "Addresses",
            value: if s.addresses.is_empty() {
                "—".into()
            } else {
                s.addresses.join(", ")
            },
            id: "addresses",
        },
        Fact {
            label: "Version",
            value: s.version.clone().unwrap_or_else(|| "—".into()),
            id: "version",
        },
        Fact {
            label: "In the archive",
            value: format!(
                "{}, {}",
                count(a.archive.files, "file", "files"),
                size(a.archive.bytes)
            ),
            id: "archived",
        },
        Fact {
            label: "Stored (compressed)",
            value: stored(a.archive.bytes, a.stored_bytes),
            id: "stored",
        },
        Fact {
            label: "Backlog",
            value: backlog(&s),
            id: "backlog",
        },
        Fact {
            label: "Oldest waiting",
            value: s.oldest_pending.clone().unwrap_or_else(|| "—".into()),
            id: "oldest",
        },
        Fact {
            label: "Worst lag",
            value: lag(&s),
            id: "lag",
        },
        Fact {
            label: "Copies already archived",
            value: opt(s.already_archived),
            id: "already",
        },
        Fact {
            label: "Cannot be stored",
            value: opt(s.unstorable),
            id: "unstorable",
        },
        Fact {
            label: "Lost before archived",
            value: match (s.lost, s.lost_bytes) {
                (None, None) => "—".into(),
                (n, b) => format!(
                    "{}, {}",
                    count(n.unwrap_or(0), "file", "files"),
                    size(b.unwrap_or(0))
                ),
            },
            id: "lost",
        },
        Fact {
            label: "Last scan",
            value: When::of(now, s.last_scan_ms).rel,
            id: "scan",
        },
    ];
    super::pages::html(&AgentPage {
        nav: Nav::of(&c, "dashboard"),
        browse_url: format!("/browse/{}", encode_component(&a.agent)),
        name: a.agent.clone(),
        online: online(&s, now),
        last_seen: When::of(now, s.updated_at_ms),
        facts,
        last_error: s.last_error.clone().unwrap_or_default(),
        lagging: s
            .lagging
            .iter()
            .map(|l| (l.path.clone(), format!("{} s", l.seconds), size(l.bytes)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_people_say_them() {
        let now = 1_000_000_000_000;
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now, now + 5000), "just now", "a clock ahead");
        assert_eq!(ago(now, now - 90_000), "2 min ago");
        assert_eq!(ago(now, now - 3 * 3_600_000), "3 h ago");
        assert_eq!(ago(now, now - 86_400_000), "1 day ago");
        assert_eq!(ago(now, now - 9 * 86_400_000), "9 days ago");
        let s = AgentStatus {
            updated_at_ms: Some(now - ONLINE_WITHIN_MS),
            ..Default::default()
        };
        assert!(online(&s, now));
        assert!(!online(&s, now + 1));
        assert!(!online(&AgentStatus::default(), now));
    }
}
