//! The catalog: one row per archived file, filled from the FTP service's events (only completed
//! files: a verified rename from a temporary name, a finished upload to a final name, an append)
//! and reconciled with the archive at start. Listings and name searches are answered from it,
//! never by walking the store per request.
//!
//! Two databases hold it behind one `Backend` trait: SQLite (`DATA/catalog.db`, the default:
//! one server) and PostgreSQL (`[catalog] url`: any number of servers share it). What the
//! catalog means — which paths count ([`catalogued`]), how events change it ([`Catalog::apply_all`]),
//! how it is made to match the archive ([`Catalog::reconcile`]) — lives here, once; the back-ends
//! only store and query rows.

pub(crate) mod postgres;
mod sqlite;

pub use crate::pg::PgSettings;

use logarchive_ftp::names::{is_temp_name, SCRATCH_DIR};
use logarchive_ftp::server::{FtpEvent, Kind, Meta};
use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The SQLite database failed.
    #[error("catalog: {0}")]
    Db(#[from] rusqlite::Error),
    /// PostgreSQL answered with an error.
    #[error("catalog (PostgreSQL): {0}")]
    Postgres(::postgres::Error),
    /// PostgreSQL cannot be reached (or the connection broke): try again later.
    #[error("the catalog is unavailable: {0}")]
    Unavailable(String),
    /// The catalog database cannot be used as it is (its schema, its settings); the message
    /// names what.
    #[error("{0}")]
    Setup(String),
    /// The archive could not be listed (reconcile).
    #[error("catalog: listing the archive: {0}")]
    Archive(std::io::Error),
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// One archived file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Entry {
    /// Archive path, e.g. `/agent01/Logs/a.txt`.
    pub path: String,
    pub agent: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub modified_ms: i64,
    pub archived_ms: i64,
    pub appended_ms: Option<i64>,
}

/// What the catalog holds for one agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AgentTotals {
    pub agent: String,
    pub files: u64,
    pub bytes: u64,
    pub last_archived_ms: Option<i64>,
}

/// What a folder holds at any depth.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DirTotals {
    pub files: u64,
    pub bytes: u64,
    /// The latest modification of a file in it.
    pub modified_ms: i64,
}

/// A name search. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct NameQuery {
    /// Substring of the file name (case-insensitive), or a glob if it contains `*`, `?` or `[`.
    pub name: String,
    pub agent: Option<String>,
    pub modified_from_ms: Option<i64>,
    pub modified_to_ms: Option<i64>,
    pub archived_from_ms: Option<i64>,
    pub archived_to_ms: Option<i64>,
    pub limit: usize,
}

/// Whether an archive path is part of the catalog: no temporary uploads, no agents' own
/// `.logarchive` bookkeeping.
pub fn catalogued(path: &str) -> bool {
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let first_two: Vec<&str> = parts.by_ref().take(2).collect();
    if first_two.len() < 2 || first_two[1] == SCRATCH_DIR {
        return false;
    }
    !path.rsplit('/').next().is_some_and(is_temp_name)
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

/// The range of paths at any depth under the folder `dir`: `[dir/, dir0)` ('0' is the
/// character after '/', so every path that starts with `dir/` sorts inside it).
fn under(dir: &str) -> (String, String) {
    let prefix = if dir.ends_with('/') {
        dir.to_string()
    } else {
        format!("{dir}/")
    };
    let end = format!("{}0", &prefix[..prefix.len() - 1]);
    (prefix, end)
}

fn agent_of(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn mtime_ms(m: &std::fs::Metadata) -> i64 {
    time_ms(m.modified().ok())
}

fn time_ms(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the catalog asks of the archive's files (the store, or a plain folder in tests).
/// Blocking: the catalog's writer thread calls it.
pub trait ArchiveView {
    /// Kind, size and time of `path` (`/agent01/Logs/a.log`); `None` if there is nothing.
    fn stat(&self, path: &str) -> Option<Meta>;
    /// Every regular file: path → (size, modification in ms since the epoch).
    fn files(&self) -> std::io::Result<HashMap<String, (u64, i64)>>;
}

impl ArchiveView for Path {
    fn stat(&self, path: &str) -> Option<Meta> {
        let m = std::fs::symlink_metadata(self.join(path.trim_start_matches('/'))).ok()?;
        let kind = if m.is_dir() {
            Kind::Dir
        } else if m.is_file() {
            Kind::File
        } else {
            return None;
        };
        Some(Meta::new(kind, m.len(), m.modified().ok()))
    }

    fn files(&self) -> std::io::Result<HashMap<String, (u64, i64)>> {
        let mut out = HashMap::new();
        let mut stack = vec![self.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                let p = e.path();
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() {
                    let Some(rel) = p.strip_prefix(self).ok().and_then(|r| r.to_str()) else {
                        continue;
                    };
                    if let Ok(m) = e.metadata() {
                        out.insert(format!("/{rel}"), (m.len(), mtime_ms(&m)));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl ArchiveView for std::path::PathBuf {
    fn stat(&self, path: &str) -> Option<Meta> {
        self.as_path().stat(path)
    }
    fn files(&self) -> std::io::Result<HashMap<String, (u64, i64)>> {
        self.as_path().files()
    }
}

/// Local names kept per archived file.
pub const MAX_ALIASES: usize = 32;

/// Where the catalog lives: `[catalog]` of server.toml
/// (`ServerSettings::catalog_location`).
#[derive(Debug, Clone)]
pub enum Location {
    /// SQLite at this path (`DATA/catalog.db`).
    Sqlite(std::path::PathBuf),
    /// PostgreSQL, shared by every server of the archive.
    Postgres(Box<PgSettings>),
}

/// Whether there is a catalog at `at` to read (a PostgreSQL catalog is assumed to be there;
/// connecting says otherwise).
pub fn exists(at: &Location) -> bool {
    match at {
        Location::Sqlite(p) => p.exists(),
        Location::Postgres(_) => true,
    }
}

/// For `server --check`: whether the catalog at `at` can be used, changing nothing (SQLite:
/// nothing to probe beyond the data folder; PostgreSQL: a login and a query, no migration).
pub fn probe(at: &Location) -> Result<()> {
    match at {
        Location::Sqlite(_) => Ok(()),
        Location::Postgres(pg) => postgres::probe(pg),
    }
}

/// `s` matched literally inside a LIKE pattern (whose escape character is `\`).
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What a catalog database does: store and query rows. The meaning of the rows is the
/// [`Catalog`]'s. Blocking calls; writes come from one thread per server (the event follower),
/// inside [`Backend::begin`]…[`Backend::commit`] when batched.
trait Backend: Send + Sync {
    fn begin(&self) -> Result<()>;
    fn commit(&self) -> Result<()>;
    fn rollback(&self);
    /// Records completed files in order (a later entry for the same path wins; an update keeps
    /// the row's `archived_ms`), and the folders above them.
    fn upsert_all(&self, entries: &[Entry]) -> Result<()>;
    /// Removes a file's row and its local names.
    fn remove(&self, path: &str) -> Result<()>;
    /// Takes the rows of the files below the folder `from` out of the catalog (and the folder
    /// rows at and below it), moving their local names to the same place below `to`; returns
    /// the files' rows as they were.
    fn take_dir(&self, from: &str, to: &str) -> Result<Vec<Entry>>;
    /// The local names of `from` become those of `to` (a renamed file).
    fn move_aliases(&self, from: &str, to: &str) -> Result<()>;
    fn add_alias(&self, path: &str, name: &str) -> Result<()>;
    fn remove_dir(&self, path: &str) -> Result<()>;
    /// Every file: path and size.
    fn sizes(&self) -> Result<Vec<(String, u64)>>;
    /// Drops local names whose file has no row.
    fn prune_aliases(&self) -> Result<()>;

    fn aliases(&self, path: &str) -> Result<Vec<String>>;
    /// (path, name) of the local names of paths in `[lo, hi)`, in path order.
    fn aliases_between(&self, lo: &str, hi: &str) -> Result<Vec<(String, String)>>;
    fn get(&self, path: &str) -> Result<Option<Entry>>;
    fn count(&self) -> Result<u64>;
    fn ping(&self) -> Result<()>;
    fn list(&self, dir: &str) -> Result<(Vec<String>, Vec<Entry>)>;
    /// Files with paths in `[lo, hi)` and after `after`, in path order, at most `limit`.
    fn files_between(&self, lo: &str, after: &str, hi: &str, limit: usize) -> Result<Vec<Entry>>;
    fn count_between(&self, lo: &str, hi: &str, limit: usize) -> Result<usize>;
    /// Per folder (`dir` column) in `[lo, hi)`, in order, from the first `rows` files in folder
    /// order: (folder, files, bytes, latest modification).
    fn dir_rows(&self, lo: &str, hi: &str, rows: usize) -> Result<Vec<(String, u64, u64, i64)>>;
    fn agent_totals(&self) -> Result<Vec<AgentTotals>>;
    fn agent_totals_of(&self, agent: &str) -> Result<AgentTotals>;
    fn recent(&self, limit: usize) -> Result<Vec<Entry>>;
    fn daily_bytes(&self, since_ms: i64) -> Result<Vec<(String, i64, u64)>>;
    /// Files whose name matches (a substring, any case; or a glob, see [`NameQuery`]) and the
    /// filters, newest first, at most `limit`.
    fn search_names(&self, q: &NameQuery, glob: bool, limit: usize) -> Result<Vec<Entry>>;
    /// The same, matching the files' local names ([`Catalog::add_alias`]) instead.
    fn search_aliases(&self, q: &NameQuery, glob: bool, limit: usize) -> Result<Vec<Entry>>;
    /// The paths whose rows other servers (and this one) change, as they commit (`*`: any);
    /// `None` where no other server writes.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<std::sync::Arc<str>>> {
        None
    }
}

/// The catalog database (SQLite or PostgreSQL, see [`Location`]).
pub struct Catalog {
    db: Box<dyn Backend>,
}

impl Catalog {
    /// The SQLite catalog at `path` (created if missing).
    pub fn open(path: &Path) -> Result<Catalog> {
        Ok(Catalog {
            db: Box::new(sqlite::Sqlite::open(path)?),
        })
    }

    /// The catalog at `at`: SQLite opened, or PostgreSQL connected and its schema migrated.
    /// Blocking (call from a blocking thread, never from an async task).
    pub fn connect(at: &Location) -> Result<Catalog> {
        match at {
            Location::Sqlite(path) => Self::open(path),
            Location::Postgres(pg) => Ok(Catalog {
                db: Box::new(postgres::Pg::connect(pg)?),
            }),
        }
    }

    /// The archive paths whose rows change, as any server commits them (`*`: any path); `None`
    /// with a catalog no other server writes. Follow uses it to stream what another server
    /// takes.
    pub fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<std::sync::Arc<str>>> {
        self.db.changes()
    }

    /// Records a completed file (insert, or update in place).
    pub fn upsert(&self, e: &Entry) -> Result<()> {
        self.db.upsert_all(std::slice::from_ref(e))
    }

    /// Records completed files, in order (a later entry for the same path wins).
    pub fn upsert_all(&self, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.db.upsert_all(entries)
    }

    /// Runs `f` as one transaction (many writes, one commit). A server has one writer (the
    /// event follower, which also reconciles), so nothing of its own interleaves.
    pub fn batch<T>(&self, f: impl FnOnce(&Catalog) -> Result<T>) -> Result<T> {
        self.db.begin()?;
        match f(self) {
            Ok(v) => {
                self.db.commit()?;
                Ok(v)
            }
            Err(e) => {
                self.db.rollback();
                Err(e)
            }
        }
    }

    pub fn remove(&self, path: &str) -> Result<()> {
        self.db.remove(path)
    }

    /// A folder renamed from `from` to `to`: the rows below it move with it (their bytes did not
    /// change, so sizes and hashes stay true). Rows that land where nothing is catalogued go.
    fn move_dir(&self, from: &str, to: &str) -> Result<()> {
        let moved: Vec<Entry> = self
            .db
            .take_dir(from, to)?
            .into_iter()
            .filter_map(|mut e| {
                e.path = format!("{to}{}", &e.path[from.len()..]);
                e.agent = agent_of(&e.path).to_string();
                catalogued(&e.path).then_some(e)
            })
            .collect();
        self.upsert_all(&moved)
    }

    /// Records that the file at `path` was also known as `name` where it came from (at most
    /// [`MAX_ALIASES`] names a file).
    pub fn add_alias(&self, path: &str, name: &str) -> Result<()> {
        self.db.add_alias(path, name)
    }

    /// The local names of the file at `path`.
    pub fn aliases(&self, path: &str) -> Result<Vec<String>> {
        self.db.aliases(path)
    }

    /// (path, local name) of the files whose paths lie in `[lo, hi)`, in path order.
    pub fn aliases_between(&self, lo: &str, hi: &str) -> Result<Vec<(String, String)>> {
        self.db.aliases_between(lo, hi)
    }

    /// The local names of the files directly in `dir`: path → names.
    pub fn aliases_in(&self, dir: &str) -> Result<HashMap<String, Vec<String>>> {
        let (prefix, end) = under(dir);
        let mut out: HashMap<String, Vec<String>> = Default::default();
        for (path, name) in self.db.aliases_between(&prefix, &end)? {
            if !path[prefix.len()..].contains('/') {
                out.entry(path).or_default().push(name);
            }
        }
        Ok(out)
    }

    pub fn get(&self, path: &str) -> Result<Option<Entry>> {
        self.db.get(path)
    }

    pub fn count(&self) -> Result<u64> {
        self.db.count()
    }

    /// Whether the database answers (a one-row read).
    pub fn ping(&self) -> Result<()> {
        self.db.ping()
    }

    /// The sub-folders and files directly in `dir` (`/` lists the agents).
    pub fn list(&self, dir: &str) -> Result<(Vec<String>, Vec<Entry>)> {
        self.db.list(dir)
    }

    /// Files at any depth under `dir` (`/` = the whole archive) in path order, after the path
    /// `after` (`None`: from the first), at most `limit`: a page of a walk that holds a reading
    /// connection only for one page. Served by the path index.
    pub fn files_under(&self, dir: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entry>> {
        let (prefix, end) = under(dir);
        self.db
            .files_between(&prefix, after.unwrap_or(""), &end, limit)
    }

    /// How many files are at any depth under `dir`, counting no further than `limit`.
    pub fn count_under(&self, dir: &str, limit: usize) -> Result<usize> {
        let (prefix, end) = under(dir);
        self.db.count_between(&prefix, &end, limit)
    }

    /// Per sub-folder of `dir` (by its path): what it holds at any depth, from at most
    /// `budget` rows of the folder-listing index; a sub-folder the budget did not reach to
    /// its end is left out, so what is given is exact.
    pub fn dir_totals(
        &self,
        dir: &str,
        budget: usize,
    ) -> Result<std::collections::BTreeMap<String, DirTotals>> {
        let (prefix, end) = under(dir);
        let mut out: std::collections::BTreeMap<String, DirTotals> = Default::default();
        let mut seen = 0u64;
        let mut last = None;
        // One row past the budget tells whether the last folder was read to its end.
        for (d, n, bytes, modified) in self.db.dir_rows(&prefix, &end, budget + 1)? {
            seen += n;
            let Some(rest) = d.strip_prefix(&prefix) else {
                continue; // files directly in `dir`
            };
            let child = format!("{prefix}{}", rest.split('/').next().unwrap_or(rest));
            let t = out.entry(child.clone()).or_default();
            t.files += n;
            t.bytes += bytes;
            t.modified_ms = t.modified_ms.max(modified);
            last = Some(child);
        }
        if seen > budget as u64 {
            if let Some(l) = last {
                out.remove(&l);
            }
        }
        Ok(out)
    }

    /// Per agent: files and bytes archived, and the last archive time.
    pub fn agent_totals(&self) -> Result<Vec<AgentTotals>> {
        self.db.agent_totals()
    }

    /// What the catalog holds for one agent (zero files if nothing).
    pub fn agent_totals_of(&self, agent: &str) -> Result<AgentTotals> {
        self.db.agent_totals_of(agent)
    }

    /// The most recently archived files.
    pub fn recent(&self, limit: usize) -> Result<Vec<Entry>> {
        self.db.recent(limit)
    }

    /// Bytes of the files archived per agent per UTC day since `since_ms`: (agent, day, bytes),
    /// the day as days since 1970-01-01.
    pub fn daily_bytes(&self, since_ms: i64) -> Result<Vec<(String, i64, u64)>> {
        self.db.daily_bytes(since_ms)
    }

    /// Files whose name matches, newest first; then files one of whose local names matches.
    pub fn search(&self, q: &NameQuery) -> Result<Vec<Entry>> {
        let limit = if q.limit == 0 { 1000 } else { q.limit };
        let glob = q.name.contains(['*', '?', '[']);
        let mut rows = self.db.search_names(q, glob, limit)?;
        if !q.name.is_empty() && rows.len() < limit {
            // Files found by a local name they had (a rotated log's `service.log.1`).
            for e in self.db.search_aliases(q, glob, limit)? {
                if rows.len() >= limit {
                    break;
                }
                if !rows.iter().any(|r| r.path == e.path) {
                    rows.push(e);
                }
            }
        }
        Ok(rows)
    }

    /// Applies one FTP event. `archive` gives the files' times and kinds.
    pub fn apply(&self, event: &FtpEvent, archive: &(impl ArchiveView + ?Sized)) -> Result<()> {
        self.apply_all(std::slice::from_ref(event), archive)
    }

    /// Applies FTP events in order. Runs of completed uploads go in together
    /// ([`Catalog::upsert_all`]); anything else first flushes the run before it, so the order
    /// holds (an upload, then its deletion, ends deleted). Applying the same events twice
    /// leaves what applying them once does (a batch that failed is applied again).
    pub fn apply_all(
        &self,
        events: &[FtpEvent],
        archive: &(impl ArchiveView + ?Sized),
    ) -> Result<()> {
        let stat = |p: &str| archive.stat(p);
        let mut run: Vec<Entry> = Vec::new();
        for event in events {
            match event {
                FtpEvent::UploadCompleted {
                    path,
                    size,
                    sha256,
                    temp: false,
                    ..
                }
                | FtpEvent::Appended {
                    path,
                    size,
                    sha256,
                    temp: false,
                    ..
                } if catalogued(path) => {
                    let now = now_ms();
                    let modified_ms = stat(path).map_or(now, |m| time_ms(m.modified));
                    let appended = matches!(event, FtpEvent::Appended { .. });
                    // archived_ms only counts for a new row: an update keeps the first.
                    run.push(Entry {
                        path: path.clone(),
                        agent: agent_of(path).to_string(),
                        size: *size,
                        sha256: sha256.clone(),
                        modified_ms,
                        archived_ms: now,
                        appended_ms: appended.then_some(now),
                    });
                }
                FtpEvent::Renamed {
                    from,
                    to,
                    size,
                    sha256,
                    from_temp,
                    ..
                } => {
                    // A temporary name (a verified upload's completion, the common case) never
                    // had a row or local names: the run goes on, one statement for a burst.
                    if !*from_temp || catalogued(from) {
                        self.upsert_all(&std::mem::take(&mut run))?;
                        self.db.move_aliases(from, to)?;
                        self.remove(from)?;
                    }
                    if catalogued(to) {
                        match stat(to) {
                            Some(m) if m.is_file() => run.push(Entry {
                                path: to.clone(),
                                agent: agent_of(to).to_string(),
                                size: *size,
                                sha256: sha256.clone(),
                                modified_ms: time_ms(m.modified),
                                archived_ms: now_ms(),
                                appended_ms: None,
                            }),
                            // A folder: everything below it moves, hashes and all.
                            Some(m) if m.is_dir() => self.move_dir(from, to)?,
                            _ => {}
                        }
                    }
                }
                FtpEvent::Alias { path, name, .. } if catalogued(path) => {
                    self.upsert_all(&std::mem::take(&mut run))?;
                    self.add_alias(path, name)?
                }
                FtpEvent::Deleted { path, .. } => {
                    self.upsert_all(&std::mem::take(&mut run))?;
                    self.remove(path)?
                }
                FtpEvent::DirRemoved { path, .. } => {
                    self.upsert_all(&std::mem::take(&mut run))?;
                    self.db.remove_dir(path)?;
                }
                _ => {}
            }
        }
        self.upsert_all(&run)
    }

    /// Makes the catalog match the archive: files copied in by hand appear (hashed later, on
    /// demand), vanished ones go, changed sizes are updated. Returns (added, removed, updated).
    ///
    /// The listing takes time, and uploads go on meanwhile (through this server's own events,
    /// or another server's in a shared catalog): each difference is looked at again in the
    /// archive just before it is acted on, so a file that arrived, grew or went during the
    /// listing keeps the row its own event gives it.
    pub fn reconcile(&self, archive: &(impl ArchiveView + ?Sized)) -> Result<(u64, u64, u64)> {
        // Listing a large archive is the expensive part: not while the database is away.
        self.ping()?;
        let mut on_disk = archive.files().map_err(CatalogError::Archive)?;
        on_disk.retain(|path, _| catalogued(path));
        let known = self.db.sizes()?;
        let counts = self.batch(|c| c.reconcile_rows(known, on_disk, archive))?;
        self.db.prune_aliases()?;
        Ok(counts)
    }

    fn reconcile_rows(
        &self,
        known: Vec<(String, u64)>,
        on_disk: HashMap<String, (u64, i64)>,
        archive: &(impl ArchiveView + ?Sized),
    ) -> Result<(u64, u64, u64)> {
        let (mut added, mut removed, mut updated) = (0, 0, 0);
        let now = |path: &str| {
            archive
                .stat(path)
                .filter(|m| m.is_file())
                .map(|m| (m.size, time_ms(m.modified)))
        };
        let mut seen = std::collections::HashSet::new();
        for (path, size) in known {
            let listed = on_disk.get(&path).copied();
            if listed.is_none_or(|(s, _)| s != size) {
                match now(&path) {
                    None => {
                        self.remove(&path)?;
                        removed += 1;
                    }
                    Some((s, m)) if s != size => {
                        let prev = self.get(&path)?;
                        self.upsert(&Entry {
                            path: path.clone(),
                            agent: agent_of(&path).to_string(),
                            size: s,
                            sha256: None,
                            modified_ms: m,
                            archived_ms: prev.map_or_else(now_ms, |p| p.archived_ms),
                            appended_ms: Some(now_ms()),
                        })?;
                        updated += 1;
                    }
                    Some(_) => {}
                }
            }
            seen.insert(path);
        }
        for (path, _) in on_disk {
            if seen.contains(&path) {
                continue;
            }
            if let Some((size, m)) = now(&path) {
                self.upsert(&Entry {
                    agent: agent_of(&path).to_string(),
                    path,
                    size,
                    sha256: None,
                    modified_ms: m,
                    archived_ms: now_ms(),
                    appended_ms: None,
                })?;
                added += 1;
            }
        }
        Ok((added, removed, updated))
    }
}

/// A glob of file names (`*`, `?`, `[...]`, as SQLite's GLOB: case-sensitive, `[^...]`
/// negates) as an anchored POSIX regular expression.
fn glob_regex(glob: &str) -> String {
    let mut re = String::from("^");
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '[' => {
                // A class runs to the next ']' (a ']' right after '[' or '[^' is a member).
                let mut class = String::from("[");
                if chars.peek() == Some(&'^') {
                    class.push('^');
                    chars.next();
                }
                let mut first = true;
                let mut closed = false;
                for k in chars.by_ref() {
                    if k == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    match k {
                        '\\' | '[' | ']' => {
                            class.push('\\');
                            class.push(k);
                        }
                        k => class.push(k),
                    }
                }
                if closed {
                    re.push_str(&class);
                    re.push(']');
                } else {
                    // No closing ']': SQLite's GLOB matches nothing; neither does this.
                    return "^[^\\s\\S]$".into();
                }
            }
            c if c.is_ascii_alphanumeric() || !c.is_ascii() => re.push(c),
            c => {
                re.push('\\');
                re.push(c);
            }
        }
    }
    re.push('$');
    re
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_completed_final_files_are_catalogued() {
        assert!(catalogued("/agent01/Logs/a.txt"));
        assert!(!catalogued("/agent01/Logs/.a.txt.logarchive-tmp"));
        assert!(!catalogued("/agent01/.logarchive/status.json"));
        assert!(!catalogued("/loose-file-at-the-root"));
    }

    #[test]
    fn globs_become_anchored_regular_expressions() {
        assert_eq!(glob_regex("*.log"), "^.*\\.log$");
        assert_eq!(glob_regex("a?[b-d]"), "^a.[b-d]$");
        assert_eq!(glob_regex("[^x]y"), "^[^x]y$");
        assert_eq!(glob_regex("[]]"), "^[\\]]$");
        assert_eq!(glob_regex("a(b)+c$"), "^a\\(b\\)\\+c\\$$");
        assert_eq!(glob_regex("[abc"), "^[^\\s\\S]$");
    }
}
