//! `logarchive archive --config A.toml migrate --to B.toml`: the archive copied from the store
//! `A` names to the store `B` names (a folder into S3, and back), file by file.
//!
//! Each file goes to a temporary name in the target, is verified (the SHA-256 of the bytes
//! copied must equal the one the source's catalog or store recorded), and only then is renamed
//! to its name and given its time. So a migration killed at any moment resumes where it
//! stopped: a file at its name in the target is whole and verified (it is skipped when its
//! SHA-256 matches), a temporary one is removed and copied again. Nothing in the target is
//! ever overwritten; a file there with other content is reported. The accounts file goes along
//! when the target's data folder has none; the target server rebuilds its catalog from the
//! store when it starts. Run it with the servers stopped (or at least the target's).
//!
//! A target with `[catalog] url` (PostgreSQL) also receives the catalog — every row with the
//! SHA-256 recorded at upload and the local names of rotated logs — and the accounts (stored
//! when the database holds none). With the same store on both sides this is all there is to
//! do: moving a deployment from SQLite to PostgreSQL. Running it again changes nothing.

use crate::catalog::Catalog;
use crate::config::{ServerSettings, StorageBackend};
use crate::store::{Opened, StoreView};
use crate::ServerError;
use logarchive_ftp::names::{is_temp_name, temp_name_for};
use logarchive_ftp::server::{Storage, Upload, VirtualPath, WriteMode};
use logarchive_ftp::sha::Sha256State;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Where a migration is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What a migration did.
#[derive(Debug, Default)]
pub struct MigrateReport {
    /// Files in the source.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files copied now.
    pub copied: u64,
    /// Files the target already held with the same SHA-256 (an earlier run).
    pub already: u64,
    /// Files copied without a recorded SHA-256 to compare with (their hash was computed as
    /// they were copied, and is the target's now).
    pub unrecorded: u64,
    /// Whether the accounts file was copied.
    pub accounts_copied: bool,
    /// Catalog rows written into the target's PostgreSQL catalog (and their local names).
    pub catalog_rows: u64,
    pub catalog_names: u64,
    /// Accounts stored in the target's PostgreSQL database (0: it held accounts already).
    pub accounts_stored: u64,
    /// Rows of the audit trail copied into the target's PostgreSQL database (0: there already).
    pub audit_rows: u64,
    /// Over the same bucket: folders and files whose segment maps moved from the source's
    /// `DATA/store.db` into the target's PostgreSQL database.
    pub segment_maps: u64,
    /// ... or that its database held already (an earlier run): then none moved.
    pub segment_maps_there: u64,
    /// One line per file that could not be migrated; empty: all of it is in the target.
    pub problems: Vec<String>,
}

fn failed(e: impl std::fmt::Display) -> ServerError {
    ServerError::Maintenance(e.to_string())
}

/// Whether both settings name the same store.
fn same_store(a: &ServerSettings, b: &ServerSettings) -> bool {
    let (x, y) = (&a.storage, &b.storage);
    match (x.backend, y.backend) {
        (StorageBackend::Local, StorageBackend::Local) => {
            let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            canon(&a.archive_dir()) == canon(&b.archive_dir())
        }
        (StorageBackend::S3, StorageBackend::S3) => {
            x.endpoint == y.endpoint && x.bucket == y.bucket && x.prefix == y.prefix
        }
        _ => false,
    }
}

/// Copies the archive of `from` into the store of `to`. `progress` is called after each file.
pub async fn migrate(
    from: &ServerSettings,
    to: &ServerSettings,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<MigrateReport, ServerError> {
    let mut report = MigrateReport::default();
    let to_postgres = matches!(
        to.catalog_location()?,
        crate::catalog::Location::Postgres(_)
    );
    if same_store(from, to) {
        if !to_postgres || from.catalog.url == to.catalog.url {
            return Err(failed(
                "the source and the target are the same store: nothing to migrate",
            ));
        }
        let bucket = from.storage.backend == StorageBackend::S3;
        if bucket && from.catalog.url.is_some() {
            return Err(failed(
                "both catalogs are PostgreSQL databases over the same bucket: the bucket's \
                 segment maps cannot move between databases (copy the archive into another \
                 bucket or prefix instead)",
            ));
        }
        // The same files: the catalog and the accounts move, and over a bucket its segment
        // maps (from the source's DATA/store.db), without which the target sees no file.
        migrate_catalog(from, to, &mut report).await?;
        if bucket {
            let sqlite = from.store_db();
            let target = match to.catalog_location()? {
                crate::catalog::Location::Postgres(pg) => pg.store_connection(),
                crate::catalog::Location::Sqlite(_) => return Ok(report),
            };
            let copied = tokio::task::spawn_blocking(move || {
                logarchive_store::s3::copy_metadata_to_postgres(&sqlite, &target)
            })
            .await
            .map_err(failed)?
            .map_err(|e| failed(format!("the bucket's segment maps: {e}")))?;
            report.segment_maps = copied.entries;
            report.segment_maps_there = copied.already;
        }
        return Ok(report);
    }
    // The accounts first, where the target's data folder has none.
    let (users_from, users_to) = (from.users_file(), to.users_file());
    if users_from.exists() && !users_to.exists() && users_from != users_to {
        if let Some(dir) = users_to.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        // Whole or not at all: a kill mid-copy leaves no half file that a rerun would keep.
        let tmp = users_to.with_extension("toml.migrating");
        std::fs::copy(&users_from, &tmp).map_err(failed)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(failed)?;
        std::fs::rename(&tmp, &users_to).map_err(failed)?;
        report.accounts_copied = true;
    }
    let source = crate::store::inspect(from)?;
    let target = crate::store::open(to)?;

    // The source's files, and the SHA-256 its catalog recorded for each.
    let view = StoreView::new(Arc::clone(&source.store));
    let at = from.catalog_location()?;
    let (files, recorded) = tokio::task::spawn_blocking(move || {
        use crate::catalog::ArchiveView;
        let files = view.files()?;
        let mut recorded = HashMap::new();
        if crate::catalog::exists(&at) {
            let c = Catalog::connect(&at).map_err(io::Error::other)?;
            let mut after: Option<String> = None;
            loop {
                let page = c
                    .files_under("/", after.as_deref(), 10_000)
                    .map_err(io::Error::other)?;
                let Some(last) = page.last() else { break };
                after = Some(last.path.clone());
                for e in page {
                    if let Some(sha) = e.sha256 {
                        recorded.insert(e.path, sha);
                    }
                }
            }
        }
        Ok::<_, io::Error>((files, recorded))
    })
    .await
    .map_err(failed)?
    .map_err(failed)?;
    let mut files: Vec<(String, u64, i64)> = files
        .into_iter()
        .filter(|(p, _)| !p.rsplit('/').next().is_some_and(is_temp_name))
        .map(|(p, (size, ms))| (p, size, ms))
        .collect();
    files.sort();
    let mut at = Progress {
        files_total: files.len() as u64,
        bytes_total: files.iter().map(|f| f.1).sum(),
        ..Default::default()
    };
    report.files = at.files_total;
    report.bytes = at.bytes_total;
    progress(at);

    for (path, size, ms) in files {
        let outcome = migrate_file(&source, &target, &path, ms, recorded.get(&path)).await;
        match outcome {
            Ok(Copied::Verified) => report.copied += 1,
            Ok(Copied::Unrecorded) => {
                report.copied += 1;
                report.unrecorded += 1;
            }
            Ok(Copied::Already) => report.already += 1,
            Err(e) => report.problems.push(format!("{path}: {e}")),
        }
        at.files_done += 1;
        at.bytes_done += size;
        progress(at);
    }

    if let Some(s3) = &target.s3 {
        // What waits inline is in the target's metadata already; pack what is due.
        let _ = s3.pack_now().await;
    }
    if to_postgres {
        migrate_catalog(from, to, &mut report).await?;
    }
    Ok(report)
}

/// Copies the source's catalog rows (with their SHA-256 and local names), its accounts and its
/// audit trail into the target's PostgreSQL database, in pages of 10,000 rows, each page one transaction.
async fn migrate_catalog(
    from: &ServerSettings,
    to: &ServerSettings,
    report: &mut MigrateReport,
) -> Result<(), ServerError> {
    let (source_at, target_at) = (from.catalog_location()?, to.catalog_location()?);
    let crate::catalog::Location::Postgres(pg) = target_at.clone() else {
        return Ok(());
    };
    let users_file = from.users_file();
    let (rows, names, accounts, trail) = tokio::task::spawn_blocking(move || {
        let target = Catalog::connect(&target_at).map_err(failed)?;
        let (mut rows, mut names) = (0u64, 0u64);
        if crate::catalog::exists(&source_at) {
            let source = Catalog::connect(&source_at).map_err(failed)?;
            let mut after: Option<String> = None;
            loop {
                let page = source
                    .files_under("/", after.as_deref(), 10_000)
                    .map_err(failed)?;
                let Some(last) = page.last() else { break };
                after = Some(last.path.clone());
                // The page's local names: those of the paths from its first to its last.
                let first = page.first().map_or("", |e| e.path.as_str());
                let mut aliases = source.aliases_between(first, &last.path).map_err(failed)?;
                for name in source.aliases(&last.path).map_err(failed)? {
                    aliases.push((last.path.clone(), name));
                }
                target
                    .batch(|t| {
                        t.upsert_all(&page)?;
                        for (path, name) in &aliases {
                            t.add_alias(path, name)?;
                        }
                        Ok(())
                    })
                    .map_err(failed)?;
                rows += page.len() as u64;
                names += aliases.len() as u64;
            }
        }
        let accounts = crate::users::UserDb::store_in_postgres(&pg, &users_file)? as u64;
        let trail = match &source_at {
            crate::catalog::Location::Sqlite(db) if db.exists() => {
                crate::audit::copy_trail(db, &pg).map_err(failed)?
            }
            _ => 0,
        };
        Ok::<_, ServerError>((rows, names, accounts, trail))
    })
    .await
    .map_err(failed)??;
    report.catalog_rows = rows;
    report.catalog_names = names;
    report.accounts_stored = accounts;
    report.audit_rows = trail;
    Ok(())
}

enum Copied {
    /// Copied; its SHA-256 equals the recorded one.
    Verified,
    /// Copied; nothing was recorded to compare with.
    Unrecorded,
    /// The target held it already, with the same SHA-256.
    Already,
}

fn vpath(p: &str) -> io::Result<VirtualPath> {
    VirtualPath::parse(Path::new(p)).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Creates `dir` and its parents in `store` where missing.
async fn mkdir_p(store: &dyn Storage, dir: &VirtualPath) -> io::Result<()> {
    let mut at = VirtualPath::default();
    for part in dir.parts() {
        at = at.child(part);
        match store.mkdir(&at).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !store.stat(&at).await?.is_dir() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is a file in the target", at.display()),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn migrate_file(
    source: &Opened,
    target: &Opened,
    path: &str,
    modified_ms: i64,
    recorded: Option<&String>,
) -> io::Result<Copied> {
    let p = vpath(path)?;
    let expect = match recorded {
        Some(h) => Some(h.clone()),
        None => source.store.known_sha256(&p).await.map(|h| h.hex()),
    };
    // Already there (a run before this one got this far)?
    match target.store.stat(&p).await {
        Ok(_) => {
            let there = target.store.sha256(&p).await?.hex();
            let want = match &expect {
                Some(h) => h.clone(),
                None => source.store.sha256(&p).await?.hex(),
            };
            return if there == want {
                Ok(Copied::Already)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the target holds other content under this name (left as it is)",
                ))
            };
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = VirtualPath::parse(Path::new(path).parent().unwrap_or(Path::new("/")))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    mkdir_p(&*target.store, &parent).await?;
    let name = p.file_name().unwrap_or_default();
    let tmp = parent.child(&temp_name_for(name));
    // A temporary copy of a run that was killed: copied again from the start.
    match target.store.remove_file(&tmp).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let download = source.store.read(&p, 0).await?;
    let upload = target.store.write(&tmp, WriteMode::CreateNew).await?;
    let hash = tokio::task::spawn_blocking(move || copy(download, upload))
        .await
        .map_err(io::Error::other)??;
    let copied = hash.hex();
    if let Some(want) = &expect {
        if *want != copied {
            let _ = target.store.remove_file(&tmp).await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the bytes read give SHA-256 {copied}, the source recorded {want} \
                     (not migrated; run archive fsck --full on the source)"
                ),
            ));
        }
    }
    target.store.rename(&tmp, &p, false).await?;
    let time = UNIX_EPOCH + Duration::from_millis(modified_ms.max(0) as u64);
    target.store.set_modified(&p, time).await?;
    Ok(if expect.is_some() {
        Copied::Verified
    } else {
        Copied::Unrecorded
    })
}

/// Moves the bytes (blocking), hashing them on the way.
fn copy(
    mut from: Box<dyn logarchive_ftp::server::Download>,
    mut to: Box<dyn Upload>,
) -> io::Result<Sha256State> {
    let mut hash = Sha256State::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        to.write(&buf[..n])?;
        hash.update(&buf[..n]);
    }
    to.finish(Some(hash.clone()))?;
    Ok(hash)
}
