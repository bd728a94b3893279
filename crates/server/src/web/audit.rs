//! The audit trail for administrators: the page `/admin/audit` and its JSON twin
//! `GET /api/v1/audit` (`crate::audit` records and stores it).

use super::error::WebError;
use super::pages::{html, Nav, PageCaller, PageResult, S};
use super::WebState;
use crate::audit::{AuditRow, Query, MAX_ROWS};
use askama::Template;
use axum::extract::{Query as Params, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/admin/audit", get(page))
        .route("/api/v1/audit", get(api))
}

/// Rows a page shows unless `limit` says otherwise.
const PAGE_ROWS: usize = 100;

/// The filters of the page and the API; empty ones are ignored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct AuditParams {
    /// The account that acted (for a failed login: the name tried), exactly.
    pub who: Option<String>,
    /// An action (`account.change`) or a group of them (`account`, `web`, `file`, `ftp`).
    pub action: Option<String>,
    /// An account or path, exactly; ending in `/`: everything below that folder.
    pub target: Option<String>,
    /// Only rows older than this id (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Rows at most (default 100, at most 1000).
    pub limit: Option<usize>,
}

impl AuditParams {
    fn query(&self) -> Query {
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Query {
            actor: text(&self.who),
            action: text(&self.action),
            target: text(&self.target),
            before: self.before,
            limit: self.limit.unwrap_or(PAGE_ROWS).clamp(1, MAX_ROWS),
        }
    }
}

/// A page of the audit trail, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditRow>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

async fn read(st: &Arc<WebState>, p: &AuditParams) -> Result<AuditPage, WebError> {
    let q = p.query();
    let audit = Arc::clone(&st.audit);
    let limit = q.limit;
    let events = tokio::task::spawn_blocking(move || audit.query(&q)).await??;
    let next_before = (events.len() == limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(AuditPage {
        events,
        next_before,
    })
}

/// The audit trail (admin): account changes, web logins and failed logins, FTP deletions and
/// renames, newest first.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditParams), responses((status = 200, body = AuditPage), (status = 403), (status = 503)))]
pub(super) async fn api(
    c: super::auth::Caller,
    State(st): S,
    Params(p): Params<AuditParams>,
) -> Result<Json<AuditPage>, WebError> {
    c.require_admin()?;
    Ok(Json(read(&st, &p).await?))
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditTemplate {
    nav: Nav,
    who: String,
    action: String,
    target: String,
    /// Each row with its time as people read it.
    rows: Vec<(String, AuditRow)>,
    /// The link to the next (older) page, filters kept.
    older: Option<String>,
}

async fn page(
    PageCaller(c): PageCaller,
    State(st): S,
    Params(p): Params<AuditParams>,
) -> PageResult {
    c.require_admin()?;
    let found = read(&st, &p).await?;
    let older = found.next_before.map(|b| {
        let mut link = url_query(&[
            ("who", p.who.as_deref().unwrap_or("")),
            ("action", p.action.as_deref().unwrap_or("")),
            ("target", p.target.as_deref().unwrap_or("")),
        ]);
        link.push_str(&format!("&before={b}"));
        link
    });
    html(&AuditTemplate {
        nav: Nav::of(&c, "audit"),
        who: p.who.unwrap_or_default(),
        action: p.action.unwrap_or_default(),
        target: p.target.unwrap_or_default(),
        rows: found
            .events
            .into_iter()
            .map(|r| (super::time::format_ms(r.at_ms), r))
            .collect(),
        older,
    })
}

/// `/admin/audit?k=v&...` with the values percent-encoded.
fn url_query(pairs: &[(&str, &str)]) -> String {
    let mut s = String::from("/admin/audit?");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(&super::archive::encode_component(v));
    }
    s
}
