//! The dashboard's data: each agent's status document (published by the agent to
//! `/<agent>/.logarchive/status.json`), what the catalog holds per agent, and a chart of archived
//! bytes per agent per day, drawn server-side as SVG.

use super::archive::Archive;
use super::error::WebError;
use super::time::format_day;
use crate::catalog::{AgentTotals, Catalog};
use crate::store::StoredBytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// An agent's status document as far as the server reads it. Agent-controlled: every field is
/// optional, and everything is escaped where shown.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct AgentStatus {
    /// The agent's name as the server knows it: the account folder the document is in. What the
    /// document itself claimed, when that differs, is in `claimed_agent_id`.
    pub agent_id: Option<String>,
    /// Claimed by the agent (not checked by the server).
    pub host: Option<String>,
    pub addresses: Vec<String>,
    pub version: Option<String>,
    pub files_archived: Option<u64>,
    pub bytes_archived: Option<u64>,
    pub backlog_files: Option<u64>,
    pub backlog_bytes: Option<u64>,
    pub oldest_pending: Option<String>,
    pub unstorable: Option<u64>,
    pub lost: Option<u64>,
    /// Bytes seen on the agent that could not be archived (e.g. inside logrotate's
    /// copytruncate window).
    pub lost_bytes: Option<u64>,
    /// Local copies of generations the archive holds (not stored again).
    pub already_archived: Option<u64>,
    /// How far behind its writer the file furthest behind is.
    pub max_lag_seconds: Option<u64>,
    pub max_lag_bytes: Option<u64>,
    /// The files furthest behind, worst first.
    pub lagging: Vec<LagStatus>,
    pub last_error: Option<String>,
    pub last_scan_ms: Option<i64>,
    /// When the agent last published this document: never later than the server saw the file
    /// written (an agent's clock, or a hostile document, cannot make it look fresh).
    pub updated_at_ms: Option<i64>,
    /// The agent id the document claimed, when it is not the folder it was published in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_agent_id: Option<String>,
}

impl AgentStatus {
    /// Holds a parsed document to what the server can vouch for: the agent is the account
    /// folder it was published in; times are clamped to when the server saw the file written.
    fn vouched(mut self, agent: &str, written_ms: i64) -> AgentStatus {
        if self.agent_id.as_deref() != Some(agent) {
            self.claimed_agent_id = self.agent_id.take().filter(|c| !c.is_empty());
        }
        self.agent_id = Some(agent.to_string());
        let clamp = |t: Option<i64>| t.map(|t| t.clamp(0, written_ms));
        self.updated_at_ms = Some(clamp(self.updated_at_ms).unwrap_or(written_ms));
        self.last_scan_ms = clamp(self.last_scan_ms);
        self
    }
}

/// A file behind its writer, as an agent reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct LagStatus {
    pub path: String,
    pub bytes: u64,
    pub seconds: u64,
}

/// One agent on the dashboard.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    pub agent: String,
    /// What the archive holds for it.
    pub archive: AgentTotals,
    /// Bytes the store takes for its files (compressed files as compressed; on S3 also
    /// what waits inline), as last measured (every minute); `null` before the first measure.
    pub stored_bytes: Option<u64>,
    /// Its last status document, if it published one that parses.
    pub status: Option<AgentStatus>,
}

/// Bytes free and total on the archive's file system.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Disk {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

pub fn disk(root: &Path) -> Option<Disk> {
    let s = rustix::fs::statvfs(root).ok()?;
    Some(Disk {
        free_bytes: s.f_bavail.saturating_mul(s.f_frsize),
        total_bytes: s.f_blocks.saturating_mul(s.f_frsize),
    })
}

/// Status documents are small; a bigger one is ignored rather than read.
const MAX_STATUS_BYTES: u64 = 256 * 1024;

pub fn agents(
    archive: &Archive,
    catalog: &Catalog,
    stored: &StoredBytes,
) -> Result<Vec<AgentView>, WebError> {
    let mut totals: BTreeMap<String, AgentTotals> = catalog
        .agent_totals()?
        .into_iter()
        .map(|t| (t.agent.clone(), t))
        .collect();
    // Agents that published a status but have no file yet appear too.
    let (dirs, _) = catalog.list("/")?;
    for d in dirs {
        let name = d.trim_start_matches('/').to_string();
        totals.entry(name.clone()).or_insert(AgentTotals {
            agent: name,
            files: 0,
            bytes: 0,
            last_archived_ms: None,
        });
    }
    Ok(totals
        .into_iter()
        .map(|(agent, archive_totals)| AgentView {
            status: status_of(archive, &agent),
            stored_bytes: stored.of(&agent),
            agent,
            archive: archive_totals,
        })
        .collect())
}

/// One agent, as [`agents`] gives it: `None` if the archive knows nothing of it.
pub fn agent(
    archive: &Archive,
    catalog: &Catalog,
    stored: &StoredBytes,
    name: &str,
) -> Result<Option<AgentView>, WebError> {
    let totals = catalog.agent_totals_of(name)?;
    let status = status_of(archive, name);
    let known = totals.files > 0
        || status.is_some()
        || catalog
            .list("/")?
            .0
            .iter()
            .any(|d| d.trim_start_matches('/') == name);
    Ok(known.then(|| AgentView {
        agent: name.to_string(),
        archive: totals,
        stored_bytes: stored.of(name),
        status,
    }))
}

/// The agent's last status document, if it published one that parses.
fn status_of(archive: &Archive, agent: &str) -> Option<AgentStatus> {
    let rel = Path::new(agent)
        .join(logarchive_ftp::names::SCRATCH_DIR)
        .join("status.json");
    archive
        .read_small_with_time(&rel, MAX_STATUS_BYTES)
        .and_then(|(b, written)| {
            serde_json::from_slice::<AgentStatus>(&b)
                .ok()
                .map(|s| s.vouched(agent, written))
        })
}

/// Days shown in the chart.
pub const CHART_DAYS: i64 = 14;
const COLOURS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
];

/// A chart ready for the template (which escapes every text in it).
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub width: f64,
    pub height: f64,
    pub bars: Vec<Bar>,
    pub legend: Vec<Legend>,
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone)]
pub struct Bar {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    pub colour: &'static str,
    pub title: String,
}

#[derive(Debug, Clone)]
pub struct Legend {
    pub x: f64,
    pub y: f64,
    pub colour: &'static str,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Label {
    pub x: String,
    pub y: f64,
    pub text: String,
}

/// Stacked bars: bytes archived per day (last [`CHART_DAYS`] days), one colour per agent.
pub fn chart(rows: &[(String, i64, u64)], today: i64) -> Chart {
    let first = today - CHART_DAYS + 1;
    let mut agents: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    agents.sort_unstable();
    agents.dedup();
    let mut per_day = vec![0u64; CHART_DAYS as usize];
    for (_, day, bytes) in rows {
        if (first..=today).contains(day) {
            per_day[(day - first) as usize] += bytes;
        }
    }
    let max = per_day.iter().copied().max().unwrap_or(0).max(1);
    let (w, h, left, bottom, top) = (700.0, 220.0, 70.0, 30.0, 10.0);
    let bar_w = (w - left - 10.0) / CHART_DAYS as f64;
    let scale = (h - bottom - top) / max as f64;
    let mut c = Chart {
        width: w,
        height: h + 20.0 * ((agents.len() as f64) / 4.0).ceil(),
        ..Chart::default()
    };
    c.labels.push(Label {
        x: "4".into(),
        y: top + 10.0,
        text: logarchive_ftp::rate::human_bytes(max),
    });
    c.labels.push(Label {
        x: "4".into(),
        y: top + (h - bottom - top) / 2.0 + 4.0,
        text: logarchive_ftp::rate::human_bytes(max / 2),
    });
    c.labels.push(Label {
        x: "4".into(),
        y: h - bottom,
        text: "0".into(),
    });
    let mut stacked = vec![0u64; CHART_DAYS as usize];
    for (ai, agent) in agents.iter().enumerate() {
        let colour = COLOURS[ai % COLOURS.len()];
        for (agent_name, day, bytes) in rows.iter().filter(|r| r.0 == *agent) {
            if !(first..=today).contains(day) {
                continue;
            }
            let i = (day - first) as usize;
            let x = left + i as f64 * bar_w + 2.0;
            let y0 = h - bottom - stacked[i] as f64 * scale;
            let bh = *bytes as f64 * scale;
            stacked[i] += bytes;
            c.bars.push(Bar {
                x: format!("{x:.1}"),
                y: format!("{:.1}", y0 - bh),
                w: format!("{:.1}", bar_w - 4.0),
                h: format!("{bh:.1}"),
                colour,
                title: format!(
                    "{agent_name} {}: {}",
                    format_day(*day),
                    logarchive_ftp::rate::human_bytes(*bytes)
                ),
            });
        }
        c.legend.push(Legend {
            x: left + (ai % 4) as f64 * 160.0,
            y: h + 12.0 + (ai / 4) as f64 * 20.0,
            colour,
            name: agent.to_string(),
        });
    }
    for i in 0..CHART_DAYS {
        c.labels.push(Label {
            x: format!("{:.1}", left + i as f64 * bar_w + 2.0),
            y: h - bottom + 16.0,
            text: format_day(first + i)[5..].to_string(),
        });
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_stacks_days_and_ignores_old_ones() {
        let rows = vec![
            ("a".to_string(), 100, 1000),
            ("b".to_string(), 100, 3000),
            ("b".to_string(), 50, 5000),
        ];
        let c = chart(&rows, 100);
        assert_eq!(c.bars.len(), 2);
        assert_eq!(c.legend.len(), 2);
        let total: f64 = c.bars.iter().map(|b| b.h.parse::<f64>().unwrap()).sum();
        assert!(
            (total - 180.0).abs() < 0.5,
            "the tallest day fills the chart: {total}"
        );
    }
}
