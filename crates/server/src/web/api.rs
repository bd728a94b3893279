//! `/api/v1/`: everything the pages show or do, as JSON, for a session cookie or HTTP basic
//! auth. The OpenAPI document at `/api/v1/openapi.json` is generated from these handlers'
//! annotations, so it cannot drift from them.

use super::archive::ArchivePath;
use super::auth::Caller;
use super::dashboard::{self, AgentView, Disk};
use super::download;
use super::error::WebError;
use super::search::{self, ContentQuery, Hit, SearchStats};
use super::time::parse_time;
use super::users::{self, UserForm, UserView};
use super::view::{self, At, Page};
use super::WebState;
use crate::catalog::{Entry, NameQuery};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, OpenApi, ToSchema};

type S = State<Arc<WebState>>;

pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/recent", get(recent))
        // The root with and without its slash: `/api/v1/browse/` is where a client that joins
        // paths lands.
        .route("/api/v1/browse", get(browse_root))
        .route("/api/v1/browse/", get(browse_root))
        .route("/api/v1/browse/{*path}", get(browse))
        .route("/api/v1/search", get(search_api))
        .route("/api/v1/view/{*path}", get(view_api))
        .route("/api/v1/follow/{*path}", get(follow))
        .route("/api/v1/download", get(download_root))
        .route("/api/v1/download/", get(download_root))
        .route("/api/v1/download/{*path}", get(download_any))
        .route("/api/v1/users", get(users_list).post(users_add))
        .route(
            "/api/v1/users/{name}",
            get(users_get).patch(users_update).delete(users_remove),
        )
        .route(
            "/api/v1/users/{name}/password",
            axum::routing::post(users_reset_password),
        )
        .route("/api/v1/sessions", get(sessions))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "logarchive",
        description = "Archived logs: browse, search, view, download; users and FTP sessions (admin). \
                       Authenticate with HTTP basic auth (a web user) or a session cookie; state-changing \
                       requests with a cookie also need the session's X-CSRF-Token header."
    ),
    paths(
        healthz,
        metrics,
        agents,
        recent,
        browse_root,
        browse,
        search_api,
        view_api,
        follow,
        download_root,
        download_any,
        users_list,
        users_add,
        users_get,
        users_update,
        users_remove,
        users_reset_password,
        sessions,
        super::audit::api
    ),
    components(schemas(
        Entry,
        AgentView,
        Disk,
        Dashboard,
        Listing,
        SearchResult,
        ContentResult,
        Hit,
        SearchStats,
        Page,
        UserView,
        UserForm,
        NewUserResult,
        PasswordResult,
        FtpSession,
        super::audit::AuditPage,
        crate::audit::AuditRow
    ))
)]
pub struct ApiDoc;

async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
struct HealthQuery {
    /// Liveness only: 200 whenever the process answers (for a probe that restarts it).
    live: Option<String>,
}

/// Readiness (and liveness): `200 ready` when the catalog and the store answer; `503 alive, not
/// ready: WHY` while either does not (a load balancer takes the server out; it comes back by
/// itself). With `?live`, 200 whenever the process answers.
#[utoipa::path(get, path = "/healthz", params(HealthQuery), responses((status = 200, description = "ready (or, with ?live, alive)"), (status = 503, description = "alive, not ready: the catalog or the store does not answer")))]
async fn healthz(State(st): S, Query(q): Query<HealthQuery>) -> Response {
    if q.live.is_some() {
        return (StatusCode::OK, "alive\n").into_response();
    }
    let c = Arc::clone(&st.catalog);
    let catalog = match tokio::task::spawn_blocking(move || c.ping()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err("the catalog does not answer".to_string()),
    };
    let why = match catalog {
        Ok(()) => st.ready.check().await.err(),
        Err(e) => Some(e),
    };
    match why {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("alive, not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(st): S) -> Response {
    let c = Arc::clone(&st.catalog);
    let files = tokio::task::spawn_blocking(move || c.count())
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(0);
    let sessions = st.ftp.sessions();
    let transfers = sessions
        .iter()
        .filter(|s| s.transfer_path.is_some())
        .count();
    let disk = st.archive_root.as_deref().and_then(dashboard::disk);
    let mut counters = vec![
        (
            "logarchive_web_password_checks_total",
            "argon2 password verifications for web logins and API basic auth.",
            st.auth.password_checks_run(),
        ),
        (
            "logarchive_password_checks_total",
            "argon2 password verifications for FTP and the web together.",
            st.users.password_checks_run(),
        ),
    ];
    if let Some(s3) = &st.s3 {
        let n = s3.stats();
        counters.extend([
            (
                "logarchive_store_puts_total",
                "PUT requests to the object store.",
                n.puts(),
            ),
            (
                "logarchive_store_gets_total",
                "GET requests to the object store.",
                n.gets(),
            ),
            (
                "logarchive_store_deletes_total",
                "DELETE requests to the object store.",
                n.deletes(),
            ),
            (
                "logarchive_store_errors_total",
                "Object store requests that failed after retries.",
                n.errors(),
            ),
            (
                "logarchive_store_request_microseconds_total",
                "Time spent waiting for the object store, all requests together.",
                n.busy_micros(),
            ),
            (
                "logarchive_store_compacted_files_total",
                "Files rewritten as one compressed object.",
                n.compacted(),
            ),
        ]);
    }
    // Bytes of small uploads and appends waiting for the packer: grows while the object store
    // is out of reach, and should come back to near 0 within seconds otherwise.
    let inline = st.s3.as_ref().map(|s3| {
        (
            "logarchive_store_inline_bytes",
            "Bytes of small uploads and appends waiting in the metadata to be packed into an object.",
            s3.inline_bytes().unwrap_or(0) as f64,
        )
    });
    let body = st.metrics.render(
        &counters,
        &[
            (
                "logarchive_ftp_sessions",
                "Open FTP sessions.",
                sessions.len() as f64,
            ),
            (
                "logarchive_ftp_transfers",
                "FTP transfers in progress.",
                transfers as f64,
            ),
            (
                "logarchive_catalog_files",
                "Files in the catalog.",
                files as f64,
            ),
            (
                "logarchive_archive_free_bytes",
                "Free bytes on the archive's file system.",
                disk.map_or(0.0, |d| d.free_bytes as f64),
            ),
        ]
        .into_iter()
        .chain(inline)
        .collect::<Vec<_>>(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// What the dashboard shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    pub agents: Vec<AgentView>,
    pub disk: Option<Disk>,
    pub files: u64,
    pub bytes: u64,
    /// Bytes the store takes for all of it (compressed files as compressed), as last measured.
    pub stored_bytes: Option<u64>,
    /// (agent, day since 1970-01-01, bytes archived that day), last 14 days.
    pub daily_bytes: Vec<(String, i64, u64)>,
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(super) async fn dashboard_data(st: &Arc<WebState>) -> Result<Dashboard, WebError> {
    let st2 = Arc::clone(st);
    tokio::task::spawn_blocking(move || {
        let agents = dashboard::agents(&st2.archive, &st2.catalog, &st2.stored)?;
        let since = (now_ms() / 86_400_000 - dashboard::CHART_DAYS + 1) * 86_400_000;
        Ok(Dashboard {
            files: agents.iter().map(|a| a.archive.files).sum(),
            bytes: agents.iter().map(|a| a.archive.bytes).sum(),
            stored_bytes: agents
                .iter()
                .map(|a| a.stored_bytes)
                .try_fold(0u64, |t, s| s.map(|s| t + s)),
            agents,
            disk: st2.archive_root.as_deref().and_then(dashboard::disk),
            daily_bytes: st2.catalog.daily_bytes(since)?,
        })
    })
    .await?
}

/// Every agent: its status document and what the archive holds for it; totals, disk space.
#[utoipa::path(get, path = "/api/v1/agents", responses((status = 200, body = Dashboard)))]
async fn agents(_: Caller, State(st): S) -> Result<Json<Dashboard>, WebError> {
    Ok(Json(dashboard_data(&st).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RecentParams {
    /// At most this many (default 20, at most 1000).
    pub limit: Option<usize>,
}

/// The most recently archived files.
#[utoipa::path(get, path = "/api/v1/recent", params(RecentParams), responses((status = 200, body = [Entry])))]
async fn recent(
    _: Caller,
    State(st): S,
    Query(p): Query<RecentParams>,
) -> Result<Json<Vec<Entry>>, WebError> {
    let limit = p.limit.unwrap_or(20).min(1000);
    let c = Arc::clone(&st.catalog);
    Ok(Json(
        tokio::task::spawn_blocking(move || c.recent(limit)).await??,
    ))
}

/// A folder: its sub-folders and files.
#[derive(Debug, Serialize, ToSchema)]
pub struct Listing {
    pub path: String,
    /// Sub-folders' full paths.
    pub dirs: Vec<String>,
    pub files: Vec<Entry>,
    /// The local names files in it had where they came from (rotated logs: `service.log.1`),
    /// by path; files without any are left out.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub local_names: std::collections::BTreeMap<String, Vec<String>>,
    /// What each sub-folder holds at any depth, by path. A folder too big to total within
    /// [`DIR_TOTALS_BUDGET`] files read is left out.
    pub dir_totals: std::collections::BTreeMap<String, crate::catalog::DirTotals>,
}

/// Most catalog rows read to total a listing's sub-folders: ~0.1 s (measured 50 ms per
/// 100,000 rows, `cargo bench -p logarchive-server -- totals`).
pub const DIR_TOTALS_BUDGET: usize = 200_000;

pub(super) async fn listing(st: &Arc<WebState>, p: &ArchivePath) -> Result<Listing, WebError> {
    let c = Arc::clone(&st.catalog);
    let dir = p.display();
    let ((dirs, files), names, dir_totals) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::catalog::CatalogError>((
            c.list(&dir)?,
            c.aliases_in(&dir)?,
            c.dir_totals(&dir, DIR_TOTALS_BUDGET)?,
        ))
    })
    .await??;
    if dirs.is_empty() && files.is_empty() && !p.is_root() && !st.archive.is_dir(p).await {
        return Err(WebError::NotFound);
    }
    Ok(Listing {
        path: p.display(),
        dirs,
        files,
        local_names: names.into_iter().collect(),
        dir_totals,
    })
}

/// The archive's top level: one folder per agent.
#[utoipa::path(get, path = "/api/v1/browse", responses((status = 200, body = Listing)))]
async fn browse_root(_: Caller, State(st): S) -> Result<Json<Listing>, WebError> {
    Ok(Json(listing(&st, &ArchivePath::root()).await?))
}

/// A folder of the archive.
#[utoipa::path(get, path = "/api/v1/browse/{path}", params(("path" = String, Path, description = "folder, e.g. agent01/Logs")), responses((status = 200, body = Listing), (status = 404)))]
async fn browse(
    _: Caller,
    State(st): S,
    Path(path): Path<String>,
) -> Result<Json<Listing>, WebError> {
    Ok(Json(listing(&st, &ArchivePath::parse(&path)?).await?))
}

/// Search parameters (the page's form sends the same).
#[derive(Debug, Clone, Default, Deserialize, IntoParams, ToSchema)]
#[serde(default)]
pub struct SearchParams {
    /// Name: a substring (any case), or a glob with `*`, `?`, `[...]`.
    pub q: Option<String>,
    /// Only this agent's files.
    pub agent: Option<String>,
    /// Modified at or after (UTC `YYYY-MM-DD[THH:MM[:SS]]` or epoch ms). With `content`: also
    /// only lines whose time (their own date and time, else their file's modification) is at
    /// or after it.
    pub from: Option<String>,
    /// Modified at or before. With `content`: lines whose time is at or before it, in files
    /// modified at any time after `from` (a file written on holds older lines too).
    pub to: Option<String>,
    /// Archived at or after.
    pub archived_from: Option<String>,
    /// Archived at or before.
    pub archived_to: Option<String>,
    /// Text to look for inside the files the other filters leave.
    pub content: Option<String>,
    /// `true`: `content` is a regular expression (default: a literal).
    pub regex: Option<String>,
    /// `true`: case-sensitive content search (default: any case).
    pub case: Option<String>,
    /// Most files listed by name (default 200, at most 10000).
    pub limit: Option<usize>,
    /// Most content matches (default and upper bound: the server's limit).
    pub max_matches: Option<u64>,
    /// Lines of context before and after each content match (0-10, default 0).
    pub context: Option<usize>,
}

pub(super) fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "on" | "1" | "yes"))
}

fn opt(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A time bound of the query, if given (a date alone: its first or, with `end_of_day`, its
/// last millisecond).
fn bound(v: &Option<String>, end_of_day: bool) -> Result<Option<i64>, WebError> {
    opt(v)
        .map(|s| parse_time(s, end_of_day))
        .transpose()
        .map_err(WebError::BadRequest)
}

impl SearchParams {
    pub fn content(&self) -> Option<&str> {
        // Not trimmed: leading spaces may matter in a log line.
        self.content.as_deref().filter(|s| !s.is_empty())
    }

    pub fn name_query(&self, limit: usize) -> Result<NameQuery, WebError> {
        Ok(NameQuery {
            name: opt(&self.q).unwrap_or("").to_string(),
            agent: opt(&self.agent).map(str::to_string),
            modified_from_ms: bound(&self.from, false)?,
            modified_to_ms: bound(&self.to, true)?,
            archived_from_ms: bound(&self.archived_from, false)?,
            archived_to_ms: bound(&self.archived_to, true)?,
            limit,
        })
    }

    /// The time range `from`..`to` asks for, if either is given.
    fn window(&self) -> Result<Option<(i64, i64)>, WebError> {
        Ok(match (bound(&self.from, false)?, bound(&self.to, true)?) {
            (None, None) => None,
            (f, t) => Some((f.unwrap_or(i64::MIN), t.unwrap_or(i64::MAX))),
        })
    }

    pub fn content_query(&self, st: &WebState) -> Result<Option<ContentQuery>, WebError> {
        let window = self.window()?;
        Ok(self.content().map(|c| ContentQuery {
            pattern: c.to_string(),
            regex: truthy(&self.regex),
            case_sensitive: truthy(&self.case),
            max_matches: self
                .max_matches
                .unwrap_or(st.config.search_max_matches)
                .clamp(1, st.config.search_max_matches),
            timeout: st.config.search_timeout,
            context: self.context.unwrap_or(0).min(search::MAX_CONTEXT),
            window,
        }))
    }
}

pub(super) async fn name_search(st: &Arc<WebState>, q: NameQuery) -> Result<Vec<Entry>, WebError> {
    let c = Arc::clone(&st.catalog);
    Ok(tokio::task::spawn_blocking(move || c.search(&q)).await??)
}

/// Starts the content search of a request: the candidates are the newest files the name
/// filters leave.
pub(super) async fn start_content_search(
    st: &Arc<WebState>,
    p: &SearchParams,
    user: &str,
) -> Result<Option<tokio::sync::mpsc::Receiver<search::Event>>, WebError> {
    let Some(cq) = p.content_query(st)? else {
        return Ok(None);
    };
    // Busy before any work: a place among the searches running, server-wide and the caller's.
    let permit = st.workers.search(user)?;
    let mut q = p.name_query(st.config.search_max_files)?;
    // `to` bounds the lines' times: a file written after it may still hold older lines.
    q.modified_to_ms = None;
    let files = name_search(st, q).await?;
    // Compiling a pattern is CPU work: not on the async workers.
    let (archive, threads) = (Arc::clone(&st.archive), st.config.search_threads);
    let running =
        tokio::task::spawn_blocking(move || search::start(archive, files, cq, threads, permit))
            .await??;
    Ok(Some(running.events))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContentResult {
    pub hits: Vec<Hit>,
    pub stats: SearchStats,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    /// Files matching the name, agent and time filters (newest first).
    pub files: Vec<Entry>,
    /// With `content`: the matching lines.
    pub content: Option<ContentResult>,
}

/// Search by name, agent and time, and optionally by content.
#[utoipa::path(get, path = "/api/v1/search", params(SearchParams), responses((status = 200, body = SearchResult), (status = 400)))]
async fn search_api(
    c: Caller,
    State(st): S,
    Query(p): Query<SearchParams>,
) -> Result<Json<SearchResult>, WebError> {
    let limit = p.limit.unwrap_or(200).clamp(1, 10_000);
    let files = name_search(&st, p.name_query(limit)?).await?;
    let content = match start_content_search(&st, &p, &c.name).await? {
        None => None,
        Some(mut rx) => {
            let mut hits = Vec::new();
            let mut stats = SearchStats::default();
            while let Some(ev) = rx.recv().await {
                match ev {
                    search::Event::Hit(h) => hits.push(h),
                    search::Event::Done(s) => stats = s,
                }
            }
            st.metrics.on_search(stats.elapsed_ms as f64 / 1000.0);
            Some(ContentResult { hits, stats })
        }
    };
    Ok(Json(SearchResult { files, content }))
}

/// Where to open a file in the viewer.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(default)]
pub struct ViewParams {
    /// Open at the line holding this byte offset.
    pub offset: Option<u64>,
    /// Show the page ending just before this offset (paging backwards).
    pub before: Option<u64>,
    /// Open at this line (1-based; counts lines from the start).
    pub line: Option<u64>,
    /// Open at the line holding this byte offset with the lines above it (a search hit).
    pub around: Option<u64>,
    /// The line number at `offset`/`before`/`around`, when the caller knows it.
    pub ln: Option<u64>,
}

impl ViewParams {
    pub fn at(&self) -> At {
        if let Some(end) = self.before {
            At::Before { end, line: self.ln }
        } else if let Some(offset) = self.around {
            At::Around {
                offset,
                line: self.ln,
            }
        } else if let Some(offset) = self.offset {
            At::Offset {
                offset,
                line: self.ln,
            }
        } else if let Some(l) = self.line {
            At::Line(l)
        } else {
            At::End
        }
    }
}

pub(super) async fn read_page(
    st: &Arc<WebState>,
    p: &ArchivePath,
    at: At,
) -> Result<Page, WebError> {
    let open = st.archive.open_file(p).await?;
    let st = Arc::clone(st);
    let path = p.display();
    tokio::task::spawn_blocking(move || {
        let mut page = view::read_page(open.reader(), &st.lines, at)?;
        page.local_names = st.catalog.aliases(&path)?;
        Ok(page)
    })
    .await?
}

/// A page (64 KiB of whole lines) of a file: at its end by default.
#[utoipa::path(get, path = "/api/v1/view/{path}", params(("path" = String, Path, description = "file"), ViewParams), responses((status = 200, body = Page), (status = 404)))]
async fn view_api(
    _: Caller,
    State(st): S,
    Path(path): Path<String>,
    Query(v): Query<ViewParams>,
) -> Result<Json<Page>, WebError> {
    Ok(Json(
        read_page(&st, &ArchivePath::parse(&path)?, v.at()).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct FollowParams {
    /// Send what is appended after this offset.
    pub offset: u64,
}

/// Appended bytes: whole lines, at most 64 KiB per event.
const FOLLOW_CHUNK: u64 = 64 * 1024;

/// Server-sent events with what is appended to a growing file: `append` events carry
/// `{"offset", "end", "text"}`; a `reset` event says the file was replaced or truncated.
#[utoipa::path(get, path = "/api/v1/follow/{path}", params(("path" = String, Path, description = "file"), FollowParams), responses((status = 200, description = "text/event-stream")))]
async fn follow(
    _: Caller,
    State(st): S,
    Path(path): Path<String>,
    Query(f): Query<FollowParams>,
) -> Result<Response, WebError> {
    let p = ArchivePath::parse(&path)?;
    let mut known = Arc::new(st.archive.open_file(&p).await?);
    let mut identity = known.identity();
    let display = p.display();
    let mut events = st.ftp.subscribe();
    // Appends another server takes (a shared catalog) are told through the catalog.
    let mut changes = st.catalog.changes();
    let st2 = Arc::clone(&st);
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(4);
    tokio::spawn(async move {
        let mut offset = f.offset;
        loop {
            // Whatever is there beyond `offset`, in whole lines.
            let opened = st2.archive.open_file(&p).await.map(Arc::new);
            let (file, size, same) = match opened {
                Ok(o) => {
                    let size = o.len();
                    let mut same = o.identity() == identity;
                    if !same && size >= offset {
                        // Compressed at rest, or made a plain file again to grow: another
                        // file that holds the same bytes up to here is the same log.
                        let (old, new) = (Arc::clone(&known), Arc::clone(&o));
                        same = tokio::task::spawn_blocking(move || {
                            same_bytes_before(&old, &new, offset)
                        })
                        .await
                        .unwrap_or(false);
                        if same {
                            identity = o.identity();
                            known = Arc::clone(&o);
                        }
                    }
                    (Some(o), size, same)
                }
                Err(_) => (None, 0, false),
            };
            if !same || size < offset {
                let _ = tx
                    .send(SseEvent::default().event("reset").data("replaced"))
                    .await;
                return;
            }
            if let Some(file) = file.filter(|_| size > offset) {
                let from = offset;
                let chunk = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; (size - from).min(FOLLOW_CHUNK) as usize];
                    let n = file.read_at(&mut buf, from).unwrap_or(0);
                    buf.truncate(n);
                    buf
                })
                .await
                .unwrap_or_default();
                // Hold back a partial last line unless it alone fills a chunk.
                let cut = match chunk.iter().rposition(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None if chunk.len() as u64 == FOLLOW_CHUNK => chunk.len(),
                    None => 0,
                };
                if cut > 0 {
                    let end = offset + cut as u64;
                    let data = serde_json::json!({
                        "offset": offset,
                        "end": end,
                        "text": String::from_utf8_lossy(&chunk[..cut]),
                    });
                    if tx
                        .send(SseEvent::default().event("append").data(data.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    offset = end;
                    continue;
                }
            }
            // Wait for an FTP change of this file, or look again in a second (files changed
            // by other means).
            let wait =
                async {
                    loop {
                        match events.recv().await {
                            Ok(logarchive_ftp::server::FtpEvent::Appended { path, .. })
                            | Ok(logarchive_ftp::server::FtpEvent::UploadCompleted {
                                path, ..
                            }) if path == display => return,
                            Ok(logarchive_ftp::server::FtpEvent::Renamed { to, .. })
                                if to == display =>
                            {
                                return
                            }
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await
                            }
                        }
                    }
                };
            let elsewhere = async {
                let Some(rx) = changes.as_mut() else {
                    return std::future::pending::<()>().await;
                };
                loop {
                    match rx.recv().await {
                        Ok(p) if &*p == display.as_str() || &*p == "*" => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            tokio::select! {
                _ = wait => {}
                _ = elsewhere => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Whether two opened files hold the same bytes just before `offset` (the last 4 KiB of what a
/// follower has seen).
fn same_bytes_before(
    old: &super::archive::OpenFile,
    new: &super::archive::OpenFile,
    offset: u64,
) -> bool {
    let n = offset.min(4096) as usize;
    let read = |f: &super::archive::OpenFile| {
        let mut buf = vec![0u8; n];
        let mut done = 0;
        while done < n {
            match f.read_at(&mut buf[done..], offset - n as u64 + done as u64) {
                Ok(0) | Err(_) => return None,
                Ok(k) => done += k,
            }
        }
        Some(buf)
    };
    matches!((read(old), read(new)), (Some(a), Some(b)) if a == b)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default)]
pub struct DownloadParams {
    /// `true`: show a file as plain text in the browser instead of saving it.
    pub inline: Option<String>,
}

pub(super) async fn download(
    st: &Arc<WebState>,
    p: ArchivePath,
    headers: &HeaderMap,
    inline: bool,
) -> Result<Response, WebError> {
    if p.is_root() || st.archive.is_dir(&p).await {
        let permit = st.workers.transfer()?;
        let (archive, catalog) = (Arc::clone(&st.archive), Arc::clone(&st.catalog));
        return tokio::task::spawn_blocking(move || {
            download::zip_response(archive, catalog, &p, permit)
        })
        .await?;
    }
    let open = st.archive.open_file(&p).await?;
    download::file_response(open, p.name(), headers, inline, &st.workers)
}

/// The whole archive as a zip.
#[utoipa::path(get, path = "/api/v1/download", responses((status = 200, description = "application/zip")))]
async fn download_root(_: Caller, State(st): S, headers: HeaderMap) -> Result<Response, WebError> {
    download(&st, ArchivePath::root(), &headers, false).await
}

/// A file (Range, ETag) or a folder (a zip, streamed).
#[utoipa::path(get, path = "/api/v1/download/{path}", params(("path" = String, Path, description = "file or folder"), DownloadParams), responses((status = 200), (status = 206), (status = 304), (status = 404), (status = 416)))]
async fn download_any(
    _: Caller,
    State(st): S,
    Path(path): Path<String>,
    Query(d): Query<DownloadParams>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    download(&st, ArchivePath::parse(&path)?, &headers, truthy(&d.inline)).await
}

fn csrf_header(h: &HeaderMap) -> Option<&str> {
    h.get("x-csrf-token").and_then(|v| v.to_str().ok())
}

/// Every account (admin).
#[utoipa::path(get, path = "/api/v1/users", responses((status = 200, body = [UserView]), (status = 403)))]
async fn users_list(c: Caller, State(st): S) -> Result<Json<Vec<UserView>>, WebError> {
    c.require_admin()?;
    Ok(Json(users::list(&st.users)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewUserResult {
    pub user: UserView,
    /// The generated password, when none was given: shown this once.
    pub password: Option<String>,
}

pub(super) async fn blocking_users<T: Send + 'static>(
    st: &Arc<WebState>,
    f: impl FnOnce(&WebState) -> Result<T, WebError> + Send + 'static,
) -> Result<T, WebError> {
    // argon2 hashing and the users file write block: off the async threads.
    let st = Arc::clone(st);
    tokio::task::spawn_blocking(move || f(&st)).await?
}

/// Adds an account (admin). Presets by `role`: agent, viewer, admin.
#[utoipa::path(post, path = "/api/v1/users", request_body = UserForm, responses((status = 201, body = NewUserResult), (status = 400), (status = 409)))]
async fn users_add(
    c: Caller,
    State(st): S,
    headers: HeaderMap,
    Json(f): Json<UserForm>,
) -> Result<Response, WebError> {
    c.require_admin()?;
    c.check_csrf(csrf_header(&headers))?;
    let by = c.clone();
    let (user, password) = blocking_users(&st, move |st| users::add(st, &by, &f)).await?;
    tracing::info!(by = c.name, user = user.name, "user added");
    Ok((StatusCode::CREATED, Json(NewUserResult { user, password })).into_response())
}

/// One account (admin).
#[utoipa::path(get, path = "/api/v1/users/{name}", params(("name" = String, Path)), responses((status = 200, body = UserView), (status = 404)))]
async fn users_get(
    c: Caller,
    State(st): S,
    Path(name): Path<String>,
) -> Result<Json<UserView>, WebError> {
    c.require_admin()?;
    let rec = st.users.get(&name).ok_or(WebError::NotFound)?;
    Ok(Json(UserView::of(&name, &rec)))
}

/// Changes an account (admin): permissions, home, limits, addresses, enabled, web role.
#[utoipa::path(patch, path = "/api/v1/users/{name}", params(("name" = String, Path)), request_body = UserForm, responses((status = 200, body = UserView), (status = 400), (status = 404)))]
async fn users_update(
    c: Caller,
    State(st): S,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(f): Json<UserForm>,
) -> Result<Json<UserView>, WebError> {
    c.require_admin()?;
    c.check_csrf(csrf_header(&headers))?;
    let (by, n) = (c.clone(), name.clone());
    let keep = c.token.clone().filter(|_| c.name == name);
    let v = blocking_users(&st, move |st| {
        users::update(st, &by, &n, &f, keep.as_deref())
    })
    .await?;
    tracing::info!(by = c.name, user = name, "user changed");
    Ok(Json(v))
}

/// Removes an account (admin); its sessions end.
#[utoipa::path(delete, path = "/api/v1/users/{name}", params(("name" = String, Path)), responses((status = 204), (status = 404)))]
async fn users_remove(
    c: Caller,
    State(st): S,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, WebError> {
    c.require_admin()?;
    c.check_csrf(csrf_header(&headers))?;
    let (by, n) = (c.clone(), name.clone());
    blocking_users(&st, move |st| users::remove(st, &by, &n)).await?;
    tracing::info!(by = c.name, user = name, "user removed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordResult {
    /// The new password: shown this once.
    pub password: String,
}

/// Sets a new random password (admin); the account's web sessions end.
#[utoipa::path(post, path = "/api/v1/users/{name}/password", params(("name" = String, Path)), responses((status = 200, body = PasswordResult), (status = 404)))]
async fn users_reset_password(
    c: Caller,
    State(st): S,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PasswordResult>, WebError> {
    c.require_admin()?;
    c.check_csrf(csrf_header(&headers))?;
    let (by, n) = (c.clone(), name.clone());
    let keep = c.token.clone().filter(|_| c.name == name);
    let password = blocking_users(&st, move |st| {
        users::reset_password(st, &by, &n, keep.as_deref())
    })
    .await?;
    tracing::info!(by = c.name, user = name, "password reset");
    Ok(Json(PasswordResult { password }))
}

/// A live FTP session.
#[derive(Debug, Serialize, ToSchema)]
pub struct FtpSession {
    pub id: u64,
    pub address: String,
    pub user: Option<String>,
    pub since_ms: i64,
    pub transfer_path: Option<String>,
    pub transfer_upload: Option<bool>,
    pub transfer_bytes: Option<u64>,
    /// Bytes per second since the transfer started.
    pub transfer_rate: Option<f64>,
}

pub(super) fn ftp_sessions(st: &WebState) -> Vec<FtpSession> {
    st.ftp
        .sessions()
        .into_iter()
        .map(|s| FtpSession {
            id: s.id,
            address: s.addr.to_string(),
            user: s.user,
            since_ms: s
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            transfer_path: s.transfer_path,
            transfer_upload: s.transfer_upload,
            transfer_bytes: s.transfer_bytes,
            transfer_rate: s.transfer_rate,
        })
        .collect()
}

/// Live FTP sessions (admin).
#[utoipa::path(get, path = "/api/v1/sessions", responses((status = 200, body = [FtpSession]), (status = 403)))]
async fn sessions(c: Caller, State(st): S) -> Result<Json<Vec<FtpSession>>, WebError> {
    c.require_admin()?;
    Ok(Json(ftp_sessions(&st)))
}
