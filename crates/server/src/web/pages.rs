//! The HTML pages. Templates (askama) escape every value; nothing agent-controlled is ever
//! marked safe. A little plain JS (assets/app.js) adds the theme switch, following a growing
//! file and the search's stop button; every page works without it.

use super::api::{self, SearchParams, ViewParams};
use super::archive::{encode_component, ArchivePath};
use super::auth::{cross_origin, Caller};
use super::dashboard::{self, Chart};
use super::error::{PageError, WebError};
use super::search;
use super::time::format_ms;
use super::users::{self, UserForm, UserView};
use super::view::level_of;
use super::WebState;
use crate::catalog::Entry;
use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;

type S = State<Arc<WebState>>;
type PageResult = Result<Response, PageError>;

pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/", get(dashboard_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/browse", get(browse_root))
        .route("/browse/", get(browse_root))
        .route("/browse/{*path}", get(browse_page))
        .route("/search", get(search_page))
        .route("/view/{*path}", get(view_page))
        .route("/download", get(download_root))
        .route("/download/", get(download_root))
        .route("/download/{*path}", get(download_page))
        .route("/admin/users", get(admin_page).post(admin_add))
        .route("/admin/users/{name}", post(admin_update))
        .route("/admin/users/{name}/delete", post(admin_remove))
        .route("/admin/users/{name}/password", post(admin_password))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
}

fn html(t: &impl Template) -> PageResult {
    let mut r = Html(t.render().map_err(WebError::from)?).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

/// The page frame's data.
pub struct Nav {
    pub user: String,
    pub admin: bool,
    pub csrf: String,
}

impl Nav {
    fn of(c: &Caller) -> Nav {
        Nav {
            user: c.name.clone(),
            admin: c.is_admin(),
            csrf: c.csrf.clone().unwrap_or_default(),
        }
    }
}

/// A caller of a page: the same authentication as the API (session or basic auth), but an
/// anonymous visitor is redirected to the login form instead of getting a 401.
struct PageCaller(Caller);

impl FromRequestParts<Arc<WebState>> for PageCaller {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<WebState>,
    ) -> Result<Self, PageError> {
        let c = Caller::from_request_parts(parts, state).await?;
        Ok(PageCaller(c))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub status: u16,
    pub message: String,
}

/// `1 file`, `2 files`.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration for people: `under 1 ms`, `340 ms`, `2.5 s`.
fn took(ms: u64) -> String {
    match ms {
        0 => "under 1 ms".into(),
        1..=999 => format!("{ms} ms"),
        _ => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

fn size(n: u64) -> String {
    logarchive_ftp::rate::human_bytes(n)
}

// ---- login ----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
}

async fn login_page() -> PageResult {
    html(&LoginPage { error: None })
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login(
    State(st): S,
    axum::extract::ConnectInfo(super::Peer(addr)): axum::extract::ConnectInfo<super::Peer>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> PageResult {
    // Login CSRF: a browser posting from another site names it in Origin.
    if cross_origin(&headers) {
        return Err(WebError::Forbidden("cross-origin login refused").into());
    }
    let ip = logarchive_ftp::server::canonical_ip(addr.ip());
    match st
        .auth
        .verify(&st.users, &f.username, &f.password, ip)
        .await
    {
        Ok(_) => {
            st.metrics
                .web_logins
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let stamp = st
                .users
                .get(&f.username)
                .map(|r| crate::users::credentials(&r.password))
                .unwrap_or(0);
            let (token, _) = st.auth.open_session(&f.username, stamp);
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = header::HeaderValue::from_str(&st.auth.set_cookie(&token)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            Ok(r)
        }
        Err(e) => {
            st.metrics
                .web_login_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (status, msg) = match e {
                WebError::LockedOut => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed logins: try again later.",
                ),
                WebError::Unauthorized => (StatusCode::UNAUTHORIZED, "Wrong name or password."),
                other => return Err(other.into()),
            };
            let mut r = html(&LoginPage {
                error: Some(msg.into()),
            })?;
            *r.status_mut() = status;
            Ok(r)
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    PageCaller(c): PageCaller,
    State(st): S,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    c.check_csrf(f.csrf.as_deref())?;
    if let Some(t) = st.auth.session_token(&headers) {
        st.auth.close_session(&t);
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = header::HeaderValue::from_str(&st.auth.clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

// ---- dashboard ----

struct AgentRow {
    name: String,
    url: String,
    host: String,
    last_seen: String,
    files: u64,
    bytes: String,
    backlog: String,
    /// Worst lag of a file behind its writer.
    lag: String,
    lag_title: String,
    behind: bool,
    last_error: String,
    stale: bool,
}

struct FileRow {
    name: String,
    path: String,
    view_url: String,
    download_url: String,
    dir_url: String,
    dir: String,
    agent: String,
    size: String,
    size_raw: u64,
    modified: String,
    modified_raw: i64,
    archived: String,
    /// The local names it had (rotated logs), for people: `service.log.1, service.log.2.gz`.
    aka: String,
}

impl FileRow {
    fn of(e: &Entry) -> FileRow {
        let p = ArchivePath::parse(&e.path).unwrap_or_else(|_| ArchivePath::root());
        let parent = p.parent();
        FileRow {
            name: p.name().to_string(),
            path: e.path.clone(),
            view_url: format!("/view{}", p.url()),
            download_url: format!("/download{}", p.url()),
            dir_url: format!("/browse{}", parent.url()),
            dir: parent.display(),
            agent: e.agent.clone(),
            size: size(e.size),
            size_raw: e.size,
            modified: format_ms(e.modified_ms),
            modified_raw: e.modified_ms,
            archived: format_ms(e.archived_ms),
            aka: String::new(),
        }
    }

    /// With the file names (last parts) of its local names.
    fn with_names(mut self, names: Option<&Vec<String>>) -> FileRow {
        if let Some(n) = names {
            self.aka = n
                .iter()
                .map(|n| n.rsplit('/').next().unwrap_or(n))
                .collect::<Vec<_>>()
                .join(", ");
        }
        self
    }
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    nav: Nav,
    agents: Vec<AgentRow>,
    recent: Vec<FileRow>,
    chart: Chart,
    files: u64,
    bytes: String,
    disk: String,
}

async fn dashboard_page(PageCaller(c): PageCaller, State(st): S) -> PageResult {
    let d = api::dashboard_data(&st).await?;
    let c2 = Arc::clone(&st.catalog);
    let recent = tokio::task::spawn_blocking(move || c2.recent(15))
        .await
        .map_err(WebError::from)??;
    let now = api::now_ms();
    let agents = d
        .agents
        .iter()
        .map(|a| {
            let s = a.status.clone().unwrap_or_default();
            let backlog = match (s.backlog_files, s.backlog_bytes) {
                (Some(f), Some(b)) => format!("{f} files, {}", size(b)),
                _ => "—".into(),
            };
            let lag = match (s.max_lag_seconds, s.max_lag_bytes) {
                (Some(0), Some(0)) => "none".to_string(),
                (Some(secs), Some(b)) => format!("{secs} s, {}", size(b)),
                _ => "—".into(),
            };
            let lag_title = s
                .lagging
                .iter()
                .map(|l| format!("{}: {} s, {}", l.path, l.seconds, size(l.bytes)))
                .collect::<Vec<_>>()
                .join("\n");
            AgentRow {
                name: a.agent.clone(),
                behind: s.max_lag_seconds.is_some_and(|x| x >= 60),
                lag,
                lag_title,
                url: format!("/browse/{}", encode_component(&a.agent)),
                host: match &s.claimed_agent_id {
                    Some(id) => format!("{} (claims to be {id})", s.host.as_deref().unwrap_or("—")),
                    None => s.host.clone().unwrap_or_else(|| "—".into()),
                },
                last_seen: s.updated_at_ms.map_or("never".into(), format_ms),
                stale: s
                    .updated_at_ms
                    .is_none_or(|t| now.saturating_sub(t) > 10 * 60_000),
                files: a.archive.files,
                bytes: size(a.archive.bytes),
                backlog,
                last_error: s.last_error.unwrap_or_default(),
            }
        })
        .collect();
    html(&DashboardPage {
        nav: Nav::of(&c),
        agents,
        recent: recent.iter().map(FileRow::of).collect(),
        chart: dashboard::chart(&d.daily_bytes, now / 86_400_000),
        files: d.files,
        bytes: size(d.bytes),
        disk: d.disk.map_or("unknown".into(), |d| {
            format!("{} free of {}", size(d.free_bytes), size(d.total_bytes))
        }),
    })
}

// ---- browse ----

struct Crumb {
    name: String,
    url: String,
}

fn crumbs(p: &ArchivePath) -> Vec<Crumb> {
    p.crumbs()
        .into_iter()
        .map(|(name, q)| Crumb {
            name,
            url: format!("/browse{}", q.url()),
        })
        .collect()
}

struct DirRow {
    name: String,
    url: String,
}

#[derive(Template)]
#[template(path = "browse.html")]
struct BrowsePage {
    nav: Nav,
    crumbs: Vec<Crumb>,
    path: String,
    zip_url: String,
    dirs: Vec<DirRow>,
    files: Vec<FileRow>,
    sort: String,
}

impl BrowsePage {
    fn counts(&self) -> String {
        format!(
            "{}, {}",
            count(self.dirs.len() as u64, "folder", "folders"),
            count(self.files.len() as u64, "file", "files")
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BrowseParams {
    sort: Option<String>,
}

async fn browse_root(c: PageCaller, st: S, q: Query<BrowseParams>) -> PageResult {
    browse(c, st, ArchivePath::root(), q.0).await
}

async fn browse_page(
    c: PageCaller,
    st: S,
    Path(path): Path<String>,
    q: Query<BrowseParams>,
) -> PageResult {
    let p = ArchivePath::parse(&path)?;
    // A file's address in the browser opens it.
    if !p.is_root() && !st.archive.is_dir(&p) && st.archive.open_file(&p).is_ok() {
        return Ok(Redirect::to(&format!("/view{}", p.url())).into_response());
    }
    browse(c, st, p, q.0).await
}

async fn browse(
    PageCaller(c): PageCaller,
    State(st): S,
    p: ArchivePath,
    q: BrowseParams,
) -> PageResult {
    let l = api::listing(&st, &p).await?;
    let mut files: Vec<FileRow> = l
        .files
        .iter()
        .map(|e| FileRow::of(e).with_names(l.local_names.get(&e.path)))
        .collect();
    let sort = q.sort.unwrap_or_else(|| "name".into());
    match sort.as_str() {
        "size" => files.sort_by_key(|f| std::cmp::Reverse(f.size_raw)),
        "time" => files.sort_by_key(|f| std::cmp::Reverse(f.modified_raw)),
        _ => {}
    }
    let mut dirs: Vec<DirRow> = l
        .dirs
        .iter()
        .map(|d| {
            let name = d.rsplit('/').next().unwrap_or(d).to_string();
            DirRow {
                url: format!("/browse{}", p.child(&name).url()),
                name,
            }
        })
        .collect();
    if sort == "time" || sort == "size" {
        // Folders named by date read best newest first.
        dirs.reverse();
    }
    html(&BrowsePage {
        nav: Nav::of(&c),
        crumbs: crumbs(&p),
        path: p.display(),
        zip_url: format!(
            "/download{}",
            if p.is_root() { String::new() } else { p.url() }
        ),
        dirs,
        files,
        sort,
    })
}

// ---- search ----

#[derive(Template)]
#[template(path = "search_head.html")]
struct SearchHead {
    nav: Nav,
    p: SearchForm,
    files: Vec<FileRow>,
    error: Option<String>,
    content: bool,
}

/// The form's values, for redisplay.
#[derive(Default)]
struct SearchForm {
    q: String,
    agent: String,
    from: String,
    to: String,
    content: String,
    regex: bool,
    case: bool,
}

#[derive(Template)]
#[template(path = "search_hit.html")]
struct SearchHit {
    path: String,
    url: String,
    line: u64,
    text: String,
}

#[derive(Template)]
#[template(path = "search_tail.html")]
struct SearchTail {
    content: bool,
    files_searched: u64,
    size: String,
    matches: u64,
    hit_limit: bool,
    timed_out: bool,
    elapsed_ms: u64,
    max_matches: u64,
    timeout_s: u64,
}

impl SearchTail {
    fn summary(&self) -> String {
        format!(
            "{} in {} ({}) in {}",
            count(self.matches, "match", "matches"),
            count(self.files_searched, "file", "files"),
            self.size,
            took(self.elapsed_ms)
        )
    }
}

/// The search page is streamed: the form and the name matches first, then each content match
/// as it is found, then the totals. Leaving the page (or "Stop") cancels the search.
async fn search_page(
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
        nav: Nav::of(&c),
        p: form,
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
    let stream = async_stream(head, rx, move |stats: &search::SearchStats| {
        metrics.on_search(stats.elapsed_ms as f64 / 1000.0);
        SearchTail {
            content,
            files_searched: stats.files_searched,
            size: size(stats.bytes_searched),
            matches: stats.matches,
            hit_limit: stats.hit_limit,
            timed_out: stats.timed_out,
            elapsed_ms: stats.elapsed_ms,
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

/// The body of the streamed search page.
fn async_stream(
    head: String,
    rx: Option<tokio::sync::mpsc::Receiver<search::Event>>,
    tail: impl Fn(&search::SearchStats) -> String + Send + 'static,
) -> Body {
    enum St {
        Head,
        Hits,
        Done,
    }
    let state = (St::Head, Some(head), rx, tail);
    Body::from_stream(futures_util::stream::unfold(
        state,
        |(s, head, mut rx, tail)| async move {
            match s {
                St::Head => {
                    let h = head.unwrap_or_default();
                    Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from(h)),
                        (St::Hits, None, rx, tail),
                    ))
                }
                St::Hits => {
                    let Some(r) = rx.as_mut() else {
                        let t = tail(&search::SearchStats::default());
                        return Some((Ok(Bytes::from(t)), (St::Done, None, None, tail)));
                    };
                    // A search that finds nothing for a while writes a newline each second:
                    // the only way to learn that the reader closed the page, which cancels it.
                    let next = match tokio::time::timeout(HEARTBEAT, r.recv()).await {
                        Ok(next) => next,
                        Err(_) => {
                            let beat = Bytes::from_static(b"\n");
                            return Some((Ok(beat), (St::Hits, None, rx, tail)));
                        }
                    };
                    match next {
                        Some(search::Event::Hit(h)) => {
                            let p =
                                ArchivePath::parse(&h.path).unwrap_or_else(|_| ArchivePath::root());
                            let row = SearchHit {
                                url: format!(
                                    "/view{}?offset={}&ln={}#l{}",
                                    p.url(),
                                    h.offset,
                                    h.line,
                                    h.line
                                ),
                                path: h.path,
                                line: h.line,
                                text: h.text,
                            }
                            .render()
                            .unwrap_or_default();
                            Some((Ok(Bytes::from(row)), (St::Hits, None, rx, tail)))
                        }
                        Some(search::Event::Done(stats)) => {
                            let t = tail(&stats);
                            Some((Ok(Bytes::from(t)), (St::Done, None, None, tail)))
                        }
                        None => None,
                    }
                }
                St::Done => None,
            }
        },
    ))
}

// ---- view ----

struct Line {
    number: Option<u64>,
    text: String,
    level: &'static str,
}

#[derive(Template)]
#[template(path = "view.html")]
struct ViewPage {
    nav: Nav,
    crumbs: Vec<Crumb>,
    name: String,
    size: String,
    offset: u64,
    end: u64,
    total: u64,
    lines: Vec<Line>,
    prev_url: Option<String>,
    next_url: Option<String>,
    start_url: String,
    end_url: String,
    download_url: String,
    follow_url: String,
    at_end: bool,
    next_line: Option<u64>,
    /// The local names it had (rotated logs).
    aka: String,
}

async fn view_page(
    PageCaller(c): PageCaller,
    State(st): S,
    Path(path): Path<String>,
    Query(v): Query<ViewParams>,
) -> PageResult {
    let p = ArchivePath::parse(&path)?;
    if st.archive.is_dir(&p) {
        return Ok(Redirect::to(&format!("/browse{}", p.url())).into_response());
    }
    let page = api::read_page(&st, &p, v.at()).await?;
    let url = p.url();
    let mut n = page.first_line;
    let mut lines = Vec::new();
    for l in page.text.split_inclusive('\n') {
        let text = l.trim_end_matches(['\n', '\r']).to_string();
        lines.push(Line {
            number: n,
            level: level_of(&text).css(),
            text,
        });
        n = n.map(|x| x + 1);
    }
    let ln = |x: Option<u64>| x.map_or(String::new(), |l| format!("&ln={l}"));
    html(&ViewPage {
        nav: Nav::of(&c),
        crumbs: crumbs(&p),
        name: p.name().to_string(),
        size: size(page.size),
        offset: page.offset,
        end: page.end,
        total: page.size,
        prev_url: (page.offset > 0)
            .then(|| format!("/view{url}?before={}{}", page.offset, ln(page.first_line))),
        next_url: (page.end < page.size)
            .then(|| format!("/view{url}?offset={}{}", page.end, ln(n))),
        start_url: format!("/view{url}?offset=0"),
        end_url: format!("/view{url}"),
        download_url: format!("/download{url}"),
        follow_url: format!("/api/v1/follow{url}"),
        at_end: page.end == page.size,
        next_line: n,
        aka: page.local_names.join(", "),
        lines,
    })
}

// ---- download ----

async fn download_root(
    PageCaller(_c): PageCaller,
    State(st): S,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    Ok(api::download(&st, ArchivePath::root(), &headers, false).await?)
}

async fn download_page(
    PageCaller(_c): PageCaller,
    State(st): S,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    Ok(api::download(&st, ArchivePath::parse(&path)?, &headers, false).await?)
}

// ---- admin ----

struct UserRow {
    u: UserView,
    form_id: String,
    upload: String,
    download: String,
    ips: String,
    action: String,
}

struct SessionRow {
    user: String,
    address: String,
    since: String,
    transfer: String,
    rate: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    nav: Nav,
    users: Vec<UserRow>,
    sessions: Vec<SessionRow>,
    notice: Option<String>,
    error: Option<String>,
}

fn rate(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("{}/s", size(n))
    }
}

fn admin_view(
    st: &WebState,
    c: &Caller,
    notice: Option<String>,
    error: Option<String>,
) -> PageResult {
    let users = users::list(&st.users)
        .into_iter()
        .enumerate()
        .map(|(i, u)| UserRow {
            form_id: format!("user-form-{i}"),
            upload: rate(u.upload_limit),
            download: rate(u.download_limit),
            ips: u.allowed_ips.join(", "),
            action: format!("/admin/users/{}", encode_component(&u.name)),
            u,
        })
        .collect();
    let sessions = api::ftp_sessions(st)
        .into_iter()
        .map(|s| SessionRow {
            user: s.user.unwrap_or_else(|| "(not logged in)".into()),
            address: s.address,
            since: format_ms(s.since_ms),
            transfer: match (&s.transfer_path, s.transfer_upload, s.transfer_bytes) {
                (Some(p), up, b) => format!(
                    "{} {p} ({})",
                    if up == Some(true) { "↑" } else { "↓" },
                    size(b.unwrap_or(0))
                ),
                _ => "idle".into(),
            },
            rate: s
                .transfer_rate
                .map_or(String::new(), |r| format!("{}/s", size(r as u64))),
        })
        .collect();
    let mut r = html(&AdminPage {
        nav: Nav::of(c),
        users,
        sessions,
        error: error.clone(),
        notice,
    })?;
    if error.is_some() {
        *r.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(r)
}

async fn admin_page(PageCaller(c): PageCaller, State(st): S) -> PageResult {
    c.require_admin()?;
    admin_view(&st, &c, None, None)
}

/// Runs an admin form's change and shows the page again with its outcome.
async fn admin_do(
    st: &Arc<WebState>,
    c: &Caller,
    csrf: Option<&str>,
    f: impl FnOnce(&WebState) -> Result<String, WebError> + Send + 'static,
) -> PageResult {
    c.require_admin()?;
    c.check_csrf(csrf)?;
    match api::blocking_users(st, f).await {
        Ok(notice) => admin_view(st, c, Some(notice), None),
        Err(e @ (WebError::BadRequest(_) | WebError::Conflict(_) | WebError::NotFound)) => {
            admin_view(st, c, None, Some(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

async fn admin_add(PageCaller(c): PageCaller, State(st): S, Form(f): Form<UserForm>) -> PageResult {
    let csrf = f.csrf.clone();
    admin_do(&st, &c, csrf.as_deref(), move |st| {
        let (u, pw) = users::add(&st.users, &f)?;
        Ok(match pw {
            Some(pw) => format!("Added {}. Password (shown once): {pw}", u.name),
            None => format!("Added {}.", u.name),
        })
    })
    .await
}

async fn admin_update(
    PageCaller(c): PageCaller,
    State(st): S,
    Path(name): Path<String>,
    Form(mut f): Form<UserForm>,
) -> PageResult {
    let csrf = f.csrf.clone();
    // The page's form always sends every field: a blank one means "none" (no limit, any
    // address), and a checkbox that is not ticked sends nothing at all.
    let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
    if blank(&f.upload_limit) {
        f.upload_limit = Some("0".into());
    }
    if blank(&f.download_limit) {
        f.download_limit = Some("0".into());
    }
    if blank(&f.allowed_ips) {
        f.allowed_ips = Some("any".into());
    }
    if f.enabled.is_none() {
        f.enabled = Some("false".into());
    }
    if f.tls_required.is_none() {
        f.tls_required = Some("false".into());
    }
    let keep = c.token.clone().filter(|_| c.name == name);
    admin_do(&st, &c, csrf.as_deref(), move |st| {
        let v = users::update(st, &name, &f, keep.as_deref())?;
        Ok(format!("Saved {}.", v.name))
    })
    .await
}

async fn admin_remove(
    PageCaller(c): PageCaller,
    State(st): S,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    let by = c.name.clone();
    admin_do(&st, &c, f.csrf.as_deref(), move |st| {
        users::remove(st, &by, &name)?;
        Ok(format!("Removed {name}."))
    })
    .await
}

async fn admin_password(
    PageCaller(c): PageCaller,
    State(st): S,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    let keep = c.token.clone().filter(|_| c.name == name);
    admin_do(&st, &c, f.csrf.as_deref(), move |st| {
        let pw = users::reset_password(st, &name, keep.as_deref())?;
        Ok(format!("New password for {name} (shown once): {pw}"))
    })
    .await
}

// ---- assets ----

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/app.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/app.js"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_read_as_people_write_them() {
        assert_eq!(count(1, "file", "files"), "1 file");
        assert_eq!(count(0, "file", "files"), "0 files");
        assert_eq!(count(2, "match", "matches"), "2 matches");
        assert_eq!(took(0), "under 1 ms");
        assert_eq!(took(340), "340 ms");
        assert_eq!(took(2500), "2.5 s");
        assert_eq!(size(1536), "1.5 KiB");
    }
}
