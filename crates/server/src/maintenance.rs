//! `logarchive archive fsck` and `du`: the whole archive checked and counted for an operator.
//! Both only read (an S3 store is opened without a packer or collector of its own), so they
//! are safe while the server runs.
//!
//! `fsck`: on S3, the bucket against the metadata (objects missing or short, objects nothing
//! names); then the catalog against the store (files missing on either side, sizes that
//! differ); with `full`, every file read back and hashed against the SHA-256 the catalog and
//! the store recorded.

use crate::catalog::{catalogued, ArchiveView, Catalog};
use crate::config::ServerSettings;
use crate::store::StoreView;
use crate::ServerError;
use logarchive_ftp::server::VirtualPath;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// What `fsck` found.
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Files in the store.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files read back and hashed (`full`).
    pub hashed: u64,
    /// One line per inconsistency; empty: the archive is whole.
    pub problems: Vec<String>,
}

/// Checks the archive `settings` names. `progress(done, total)` follows the bytes read back
/// with `full`.
pub async fn fsck(
    settings: &ServerSettings,
    full: bool,
    progress: impl Fn(u64, u64) + Send + 'static,
) -> Result<FsckReport, ServerError> {
    let crate::store::Opened { store, s3, .. } = crate::store::inspect(settings)?;
    let mut report = FsckReport::default();
    if let Some(s3) = &s3 {
        let c = s3.check_objects().await.map_err(store_failed)?;
        for (path, key) in c.missing {
            report.problems.push(format!(
                "{path}: object {key} is missing or shorter than recorded"
            ));
        }
        for key in c.orphans {
            report
                .problems
                .push(format!("object {key}: no file names it (an orphan)"));
        }
    }
    let view = StoreView::new(Arc::clone(&store));
    let at = settings.catalog_location()?;
    let has_catalog = crate::catalog::exists(&at);
    let (in_store, catalog) = tokio::task::spawn_blocking(move || {
        let files = view.files()?;
        let mut catalog = BTreeMap::new();
        if has_catalog {
            let c = Catalog::connect(&at).map_err(std::io::Error::other)?;
            let mut after: Option<String> = None;
            loop {
                let page = c
                    .files_under("/", after.as_deref(), 10_000)
                    .map_err(std::io::Error::other)?;
                let Some(last) = page.last() else { break };
                after = Some(last.path.clone());
                for e in page {
                    catalog.insert(e.path.clone(), (e.size, e.sha256));
                }
            }
        }
        Ok::<_, std::io::Error>((files, catalog))
    })
    .await
    .map_err(|e| store_failed(std::io::Error::other(e)))?
    .map_err(store_failed)?;
    let mut to_hash: Vec<(String, u64, Option<String>)> = Vec::new();
    for (path, (size, _)) in &in_store {
        if !catalogued(path) {
            continue;
        }
        report.files += 1;
        report.bytes += size;
        match catalog.get(path) {
            None if has_catalog => report
                .problems
                .push(format!("{path}: in the store, not in the catalog")),
            Some((csize, _)) if csize != size => report.problems.push(format!(
                "{path}: the catalog says {csize} bytes, the store holds {size}"
            )),
            _ => {}
        }
        to_hash.push((
            path.clone(),
            *size,
            catalog.get(path).and_then(|c| c.1.clone()),
        ));
    }
    for path in catalog.keys() {
        if !in_store.contains_key(path) {
            report
                .problems
                .push(format!("{path}: in the catalog, not in the store"));
        }
    }
    if full {
        let total: u64 = to_hash.iter().map(|f| f.1).sum();
        let mut done = 0;
        to_hash.sort();
        for (path, size, recorded) in to_hash {
            let v = VirtualPath::parse(Path::new(&path)).map_err(|e| {
                store_failed(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })?;
            let kept = store.known_sha256(&v).await.map(|h| h.hex());
            let reader = match store.open_reader(&v).await {
                Ok(r) => r,
                Err(e) => {
                    report.problems.push(format!("{path}: cannot be read: {e}"));
                    continue;
                }
            };
            let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut at = 0u64;
                while at < reader.len() {
                    let n = reader.read_at(&mut buf, at)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    at += n as u64;
                }
                Ok((hex::encode(h.finalize()), at))
            })
            .await
            .map_err(|e| store_failed(std::io::Error::other(e)))?;
            done += size;
            progress(done, total);
            match hashed {
                Err(e) => report.problems.push(format!("{path}: reading failed: {e}")),
                Ok((_, read)) if read < size => report
                    .problems
                    .push(format!("{path}: {read} of {size} bytes could be read")),
                Ok((sha, _)) => {
                    report.hashed += 1;
                    for (whose, want) in [("the catalog", recorded), ("the store", kept)] {
                        if let Some(want) = want.filter(|w| *w != sha) {
                            report.problems.push(format!(
                                "{path}: SHA-256 {sha} differs from {whose}'s {want}"
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(report)
}

/// One agent's share of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub agent: String,
    pub files: u64,
    /// The files' sizes.
    pub logical: u64,
    /// What the store holds for them (blocks on a folder, segment bytes on S3).
    pub stored: u64,
}

/// Logical and stored bytes per agent (the first folder of a path).
pub async fn du(settings: &ServerSettings) -> Result<Vec<Usage>, ServerError> {
    let crate::store::Opened { store, s3, .. } = crate::store::inspect(settings)?;
    let view = StoreView::new(store);
    let archive = settings.archive_dir();
    tokio::task::spawn_blocking(move || {
        let files = view.files()?;
        let stored: HashMap<String, u64> = match &s3 {
            Some(s3) => s3.stored_bytes()?,
            None => {
                use std::os::unix::fs::MetadataExt;
                files
                    .keys()
                    .filter_map(|p| {
                        let on_disk = archive.join(p.trim_start_matches('/'));
                        // A compressed file is NAME.zst on disk.
                        let m = std::fs::symlink_metadata(&on_disk)
                            .or_else(|_| {
                                let mut z = on_disk.into_os_string();
                                z.push(".zst");
                                std::fs::symlink_metadata(z)
                            })
                            .ok()?;
                        Some((p.clone(), m.blocks() * 512))
                    })
                    .collect()
            }
        };
        let mut by_agent: BTreeMap<String, Usage> = BTreeMap::new();
        for (path, (size, _)) in &files {
            if !catalogued(path) {
                continue;
            }
            let agent = path.trim_start_matches('/').split('/').next().unwrap_or("");
            let u = by_agent.entry(agent.to_string()).or_insert_with(|| Usage {
                agent: agent.to_string(),
                files: 0,
                logical: 0,
                stored: 0,
            });
            u.files += 1;
            u.logical += size;
            u.stored += stored.get(path).copied().unwrap_or(0);
        }
        Ok::<_, std::io::Error>(by_agent.into_values().collect())
    })
    .await
    .map_err(|e| store_failed(std::io::Error::other(e)))?
    .map_err(store_failed)
}

fn store_failed(e: std::io::Error) -> ServerError {
    ServerError::Maintenance(e.to_string())
}
