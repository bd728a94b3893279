//! The HTML pages. Templates (askama) escape every value; nothing agent-controlled is ever
//! marked safe. A little plain JS (assets/app.js) adds the theme switch, following a growing
//! file and the search's stop button; every page works without it.

use super::api::{self, ViewParams};
use super::archive::{encode_component, ArchivePath};
use super::auth::{cross_origin, Caller};
use super::error::{PageError, WebError};
use super::time::format_ms;
use super::users::{self, UserForm, UserView};
use super::view::{self, level_of};
use super::WebState;
use crate::audit::{Event, Via};
use crate::catalog::Entry;
use askama::Template;
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use logarchive_ftp::rights::{Right, Rights};
use serde::Deserialize;
use std::sync::Arc;

pub(super) type S = State<Arc<WebState>>;
pub(super) type PageResult = Result<Response, PageError>;

pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/", get(super::dashboard_page::dashboard))
        .route("/agents/{name}", get(super::dashboard_page::agent))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/browse", get(browse_root))
        .route("/browse/", get(browse_root))
        .route("/browse/{*path}", get(browse_page))
        .route("/search", get(super::search_page::page))
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

pub(super) fn html(t: &impl Template) -> PageResult {
    let mut r = Html(t.render().map_err(WebError::from)?).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

/// The page frame's data.
pub(super) struct Nav {
    pub user: String,
    pub admin: bool,
    pub csrf: String,
    /// The section the page belongs to (marked in the navigation).
    pub here: &'static str,
}

impl Nav {
    pub(super) fn of(c: &Caller, here: &'static str) -> Nav {
        Nav {
            user: c.name.clone(),
            admin: c.is_admin(),
            csrf: c.csrf.clone().unwrap_or_default(),
            here,
        }
    }
}

/// A caller of a page: the same authentication as the API (session or basic auth), but an
/// anonymous visitor is redirected to the login form instead of getting a 401.
pub(super) struct PageCaller(pub(super) Caller);

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
pub(super) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration for people: `under 1 ms`, `340 ms`, `2.5 s`.
pub(super) fn took(ms: u64) -> String {
    match ms {
        0 => "under 1 ms".into(),
        1..=999 => format!("{ms} ms"),
        _ => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

pub(super) fn size(n: u64) -> String {
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
            let (token, _) = st.auth.open_session(&f.username, stamp).await?;
            st.audit.record(Event::now(
                &f.username,
                Via::Web,
                Some(ip),
                "web.login",
                &f.username,
                "",
            ));
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
                WebError::Unauthorized => {
                    st.audit.record(Event::now(
                        &f.username,
                        Via::Web,
                        Some(ip),
                        "web.login_failed",
                        &f.username,
                        "",
                    ));
                    (StatusCode::UNAUTHORIZED, "Wrong name or password.")
                }
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
        st.auth.close_session(&t).await?;
        st.audit.record(Event::now(
            &c.name,
            Via::Web,
            Some(c.ip),
            "web.logout",
            &c.name,
            "",
        ));
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = header::HeaderValue::from_str(&st.auth.clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

// ---- rows shared by pages ----

pub(super) struct FileRow {
    pub(super) name: String,
    pub(super) path: String,
    pub(super) view_url: String,
    pub(super) download_url: String,
    pub(super) dir_url: String,
    pub(super) dir: String,
    pub(super) agent: String,
    pub(super) size: String,
    pub(super) size_raw: u64,
    pub(super) modified: String,
    pub(super) modified_raw: i64,
    pub(super) archived: String,
    pub(super) archived_raw: i64,
    /// The local names it had (rotated logs), for people: `service.log.1, service.log.2.gz`.
    pub(super) aka: String,
}

impl FileRow {
    pub(super) fn of(e: &Entry) -> FileRow {
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
            archived_raw: e.archived_ms,
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
    /// Empty when the folder was too big to total.
    size: String,
    files: String,
    modified: String,
    size_raw: u64,
    modified_raw: i64,
}

/// A file row of a listing: its generation (`service.log.~2~` is generation 2 of
/// `service.log`), and whether it is shown under the file it is a generation of.
struct ListedFile {
    f: FileRow,
    generation: Option<u64>,
    under_base: bool,
}

/// A column heading that sorts the listing.
struct Head {
    label: &'static str,
    url: String,
    /// `▲`/`▼` on the column sorted by.
    arrow: &'static str,
    class: &'static str,
}

#[derive(Template)]
#[template(path = "browse.html")]
struct BrowsePage {
    nav: Nav,
    crumbs: Vec<Crumb>,
    path: String,
    zip_url: String,
    dirs: Vec<DirRow>,
    files: Vec<ListedFile>,
    heads: Vec<Head>,
    filter: String,
    /// Before the filter.
    all: usize,
}

impl BrowsePage {
    fn counts(&self) -> String {
        let (d, f) = (self.dirs.len() as u64, self.files.len() as u64);
        let shown = match (d, f) {
            (0, 0) => "nothing".to_string(),
            (_, 0) => count(d, "folder", "folders"),
            (0, _) => count(f, "file", "files"),
            _ => format!(
                "{}, {}",
                count(d, "folder", "folders"),
                count(f, "file", "files")
            ),
        };
        if self.filter.is_empty() {
            shown
        } else {
            format!("{shown} of {} matching “{}”", self.all, self.filter)
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BrowseParams {
    /// `name`, `size`, `time` (modified) or `archived`.
    sort: Option<String>,
    /// `asc` or `desc` (default: names ascending, the rest descending).
    order: Option<String>,
    /// Only names containing this (any case).
    filter: Option<String>,
}

/// `service.log.~2~` → (`service.log`, 2).
fn generation(name: &str) -> Option<(&str, u64)> {
    let inner = name.strip_suffix('~')?;
    let (base, n) = inner.rsplit_once(".~")?;
    let n: u64 = n.parse().ok()?;
    (n >= 2 && !base.is_empty()).then_some((base, n))
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
    if !p.is_root() && !st.archive.is_dir(&p).await && st.archive.open_file(&p).await.is_ok() {
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
    let filter = q.filter.as_deref().unwrap_or("").trim().to_string();
    let needle = filter.to_lowercase();
    let wanted = |name: &str| needle.is_empty() || name.to_lowercase().contains(&needle);
    let sort = ["size", "time", "archived"]
        .into_iter()
        .find(|c| q.sort.as_deref() == Some(*c))
        .unwrap_or("name");
    let desc = match q.order.as_deref() {
        Some("asc") => false,
        Some("desc") => true,
        _ => sort != "name",
    };
    let all = l.dirs.len() + l.files.len();
    let mut files: Vec<FileRow> = l
        .files
        .iter()
        .map(|e| FileRow::of(e).with_names(l.local_names.get(&e.path)))
        .filter(|f| wanted(&f.name))
        .collect();
    match sort {
        "size" => files.sort_by_key(|f| f.size_raw),
        "time" => files.sort_by_key(|f| f.modified_raw),
        "archived" => files.sort_by_key(|f| f.archived_raw),
        _ => {}
    }
    if desc {
        files.reverse();
    }
    let mut dirs: Vec<DirRow> = l
        .dirs
        .iter()
        .map(|d| {
            let name = d.rsplit('/').next().unwrap_or(d).to_string();
            let t = l.dir_totals.get(d);
            DirRow {
                url: format!("/browse{}", p.child(&name).url()),
                size: t.map_or(String::new(), |t| size(t.bytes)),
                files: t.map_or(String::new(), |t| count(t.files, "file", "files")),
                modified: t.map_or(String::new(), |t| format_ms(t.modified_ms)),
                size_raw: t.map_or(0, |t| t.bytes),
                modified_raw: t.map_or(0, |t| t.modified_ms),
                name,
            }
        })
        .filter(|d| wanted(&d.name))
        .collect();
    match sort {
        "size" => dirs.sort_by_key(|d| d.size_raw),
        "time" => dirs.sort_by_key(|d| d.modified_raw),
        _ => {}
    }
    if desc {
        dirs.reverse();
    }
    let url = |col: &str, desc: bool| {
        let mut u = format!("?sort={col}&order={}", if desc { "desc" } else { "asc" });
        if !filter.is_empty() {
            u.push_str(&format!("&filter={}", encode_component(&filter)));
        }
        u
    };
    let heads = [
        ("Name", "name", ""),
        ("Size", "size", "num"),
        ("Modified", "time", ""),
        ("Archived", "archived", ""),
    ]
    .into_iter()
    .map(|(label, col, class)| Head {
        label,
        // The sorted column turns around; another starts in its natural order.
        url: url(col, if col == sort { !desc } else { col != "name" }),
        arrow: match (col == sort, desc) {
            (false, _) => "",
            (true, false) => " ▲",
            (true, true) => " ▼",
        },
        class,
    })
    .collect();
    html(&BrowsePage {
        nav: Nav::of(&c, "browse"),
        crumbs: crumbs(&p),
        path: p.display(),
        zip_url: format!(
            "/download{}",
            if p.is_root() { String::new() } else { p.url() }
        ),
        dirs,
        files: with_generations(files),
        heads,
        filter,
        all,
    })
}

/// The files in their order, each file's later generations moved under it (in generation
/// order), so a rotated log's pieces read together.
fn with_generations(files: Vec<FileRow>) -> Vec<ListedFile> {
    let names: std::collections::HashSet<String> = files.iter().map(|f| f.name.clone()).collect();
    let mut later: std::collections::HashMap<String, Vec<(u64, FileRow)>> = Default::default();
    let mut out = Vec::with_capacity(files.len());
    let mut order = Vec::new();
    for f in files {
        match generation(&f.name) {
            Some((base, n)) if names.contains(base) => {
                later.entry(base.to_string()).or_default().push((n, f))
            }
            g => {
                order.push(ListedFile {
                    generation: g.map(|(_, n)| n),
                    under_base: false,
                    f,
                });
            }
        }
    }
    for lf in order {
        let base = lf.f.name.clone();
        out.push(lf);
        if let Some(mut gens) = later.remove(&base) {
            gens.sort_by_key(|(n, _)| *n);
            out.extend(gens.into_iter().map(|(n, f)| ListedFile {
                f,
                generation: Some(n),
                under_base: true,
            }));
        }
    }
    out
}

// ---- view ----

struct Line {
    number: Option<u64>,
    text: String,
    /// Its own level's CSS class (colour).
    level: &'static str,
    /// The level it is filtered by: its own, or that of the line above it that had one (a
    /// stack trace goes with its error), as [`view::Level::letter`].
    filter: &'static str,
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
    /// Opened at the end (no offset asked for): the page scrolls to its bottom.
    open_at_end: bool,
    next_line: Option<u64>,
    /// The local names it had (rotated logs).
    aka: String,
    /// A content search of this file's name in its agent's folder; the page's find box adds
    /// the text.
    search_url: String,
}

async fn view_page(
    PageCaller(c): PageCaller,
    State(st): S,
    Path(path): Path<String>,
    Query(v): Query<ViewParams>,
) -> PageResult {
    let p = ArchivePath::parse(&path)?;
    if st.archive.is_dir(&p).await {
        return Ok(Redirect::to(&format!("/browse{}", p.url())).into_response());
    }
    let at = v.at();
    let page = api::read_page(&st, &p, at).await?;
    let url = p.url();
    let mut n = page.first_line;
    let mut lines = Vec::new();
    let mut filter = "";
    for l in page.text.split_inclusive('\n') {
        let text = l.trim_end_matches(['\n', '\r']).to_string();
        let level = level_of(&text);
        if level != view::Level::None {
            filter = level.letter();
        }
        lines.push(Line {
            number: n,
            level: level.css(),
            filter,
            text,
        });
        n = n.map(|x| x + 1);
    }
    let ln = |x: Option<u64>| x.map_or(String::new(), |l| format!("&ln={l}"));
    html(&ViewPage {
        nav: Nav::of(&c, "browse"),
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
        open_at_end: matches!(at, view::At::End),
        next_line: n,
        aka: page.local_names.join(", "),
        search_url: format!(
            "/search?q={}&agent={}&content=",
            encode_component(p.name()),
            encode_component(p.display().split('/').nth(1).unwrap_or_default())
        ),
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
    /// Every right and whether the account holds it.
    rights: Vec<(&'static str, bool)>,
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
            rights: {
                let held = Rights::parse_list(&u.rights).unwrap_or(Rights::NONE);
                Right::ALL
                    .iter()
                    .map(|r| (r.as_str(), held.contains(*r)))
                    .collect()
            },
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
        nav: Nav::of(c, "users"),
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
    let by = c.clone();
    admin_do(&st, &c, csrf.as_deref(), move |st| {
        let (u, pw) = users::add(st, &by, &f)?;
        Ok(match pw {
            Some(pw) => format!("Added {}. Password (shown once): {pw}", u.name),
            None => format!("Added {}.", u.name),
        })
    })
    .await
}

/// A user row's form: the fields of [`UserForm`], and the rights as one checkbox each
/// (`right=list&right=read...`; `rights_boxes` says the boxes were there, so none ticked is
/// no right at all).
fn row_form(pairs: Vec<(String, String)>) -> UserForm {
    let mut f = UserForm::default();
    let (mut rights, mut boxes) = (Vec::new(), false);
    for (k, v) in pairs {
        let slot = match k.as_str() {
            "right" => {
                rights.push(v);
                continue;
            }
            "rights_boxes" => {
                boxes = true;
                continue;
            }
            "home" => &mut f.home,
            "rights" => &mut f.rights,
            "upload_limit" => &mut f.upload_limit,
            "download_limit" => &mut f.download_limit,
            "allowed_ips" => &mut f.allowed_ips,
            "enabled" => &mut f.enabled,
            "web_role" => &mut f.web_role,
            "tls_required" => &mut f.tls_required,
            "password" => &mut f.password,
            "csrf" => &mut f.csrf,
            _ => continue,
        };
        *slot = Some(v);
    }
    if boxes {
        f.rights = Some(if rights.is_empty() {
            "none".into()
        } else {
            rights.join(",")
        });
    }
    f
}

async fn admin_update(
    PageCaller(c): PageCaller,
    State(st): S,
    Path(name): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let mut f = row_form(pairs);
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
    let by = c.clone();
    admin_do(&st, &c, csrf.as_deref(), move |st| {
        let v = users::update(st, &by, &name, &f, keep.as_deref())?;
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
    let by = c.clone();
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
    let by = c.clone();
    admin_do(&st, &c, f.csrf.as_deref(), move |st| {
        let pw = users::reset_password(st, &by, &name, keep.as_deref())?;
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
