//! One upload worker: its own FTP connection, the upload protocol of DESIGN.md.

use logarchive_ftp::client::{
    split_remote, Client, ClientConfig, ClientError, HashState, UploadMode, UploadOptions,
};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What to send for one row.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub local: PathBuf,
    pub remote: String,
    pub archived_size: u64,
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug)]
pub enum Outcome {
    /// The server holds the first `size` bytes, SHA-256 confirmed.
    Archived {
        size: u64,
        sha256: String,
        sent: u64,
    },
    /// The local file is no longer the file of this row (the next scan sorts it out).
    Changed,
    /// The local file is gone.
    Gone,
    Failed(ClientError),
}

/// Most hash states kept (~200 bytes each); beyond it the cache starts again empty.
const MAX_HASH_STATES: usize = 10_000;

/// The SHA-256 state of what was archived of each row, shared by the workers: the next append to
/// a growing file hashes only its new bytes instead of reading the whole file again (a 10 GB log
/// appended to every few seconds would otherwise keep a core busy). Memory only: after a restart
/// the first append of each file reads it once.
#[derive(Clone, Default)]
pub struct HashStates(Arc<Mutex<HashMap<i64, HashState>>>);

impl HashStates {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, HashState>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, row: i64) -> Option<HashState> {
        self.map().remove(&row)
    }

    fn keep(&self, row: i64, state: HashState) {
        let mut m = self.map();
        if m.len() >= MAX_HASH_STATES {
            m.clear();
        }
        m.insert(row, state);
    }
}

pub struct Uploader {
    cfg: ClientConfig,
    client: Option<Client>,
    dirs: HashSet<String>,
    states: HashStates,
}

impl Uploader {
    pub fn new(cfg: ClientConfig, states: HashStates) -> Self {
        Uploader {
            cfg,
            client: None,
            dirs: HashSet::new(),
            states,
        }
    }

    async fn client(&mut self) -> Result<&mut Client, ClientError> {
        if self.client.is_none() {
            self.client = Some(Client::connect(self.cfg.clone()).await?);
            self.dirs.clear();
        }
        self.client
            .as_mut()
            .ok_or_else(|| ClientError::Invalid("no connection".into()))
    }

    pub async fn run(&mut self, job: &Job) -> Outcome {
        match self.attempt(job).await {
            Ok(o) => o,
            Err(e) => {
                if e.is_transient() {
                    // Start afresh next time (the client reconnects by itself, but a failed
                    // connect leaves nothing worth keeping).
                    self.client = None;
                }
                Outcome::Failed(e)
            }
        }
    }

    async fn attempt(&mut self, job: &Job) -> Result<Outcome, ClientError> {
        let meta = match std::fs::symlink_metadata(&job.local) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::Gone),
            Err(e) => {
                return Err(ClientError::Io {
                    context: format!("reading {}", job.local.display()),
                    source: e,
                })
            }
        };
        if meta.dev() != job.dev || meta.ino() != job.ino || meta.len() < job.archived_size {
            return Ok(Outcome::Changed);
        }
        // A snapshot: exactly this many bytes are sent and verified, however the file grows meanwhile.
        let size = meta.len();
        let (dir, _) = split_remote(&job.remote);
        let dir = dir.to_string();
        if !self.dirs.contains(&dir) {
            self.client().await?.ensure_dir(&dir).await?;
            self.dirs.insert(dir);
        }
        let states = self.states.clone();
        let c = self.client().await?;
        let archived = if job.archived_size > 0 {
            job.archived_size
        } else {
            match c
                .upload_verified_hashed(&job.local, &job.remote, Some(size))
                .await
            {
                Ok((v, state)) => {
                    if let Some(state) = state {
                        states.keep(job.id, state);
                    }
                    return Ok(Outcome::Archived {
                        size: v.size,
                        sha256: v.sha256,
                        sent: v.bytes,
                    });
                }
                // Killed after the rename but before the state DB recorded it, and the file grew
                // meanwhile: the final name holds the start of this file. Keep it, append the rest.
                Err(ClientError::Exists {
                    remote,
                    size: there,
                }) if there < size => {
                    let start =
                        logarchive_ftp::client::local_hash_state(&job.local, Some(there)).await?;
                    if c.remote_sha256(&remote).await? != start.sha256() {
                        return Err(ClientError::Exists {
                            remote,
                            size: there,
                        });
                    }
                    states.keep(job.id, start);
                    there
                }
                Err(e) => return Err(e),
            }
        };
        append_rest(c, &states, job, archived, size).await
    }

    /// Uploads `bytes` as the agent's status document (`/.logarchive/status.json`).
    pub async fn put_status(
        &mut self,
        bytes: &[u8],
        scratch: &std::path::Path,
    ) -> Result<(), ClientError> {
        let tmp = scratch.join(".logarchive-status.json");
        std::fs::write(&tmp, bytes).map_err(|e| ClientError::Io {
            context: "writing the status file".into(),
            source: e,
        })?;
        let known = self.dirs.contains("/.logarchive");
        let c = self.client().await?;
        if !known {
            c.ensure_dir("/.logarchive").await?;
        }
        c.upload(&tmp, "/.logarchive/status.json", UploadOptions::default())
            .await?;
        self.dirs.insert("/.logarchive".into());
        let _ = std::fs::remove_file(&tmp);
        Ok(())
    }
}

/// Grown: appends only the bytes after `archived` up to `size`, then verifies the whole file. The
/// server may already hold part of them (an append cut short): it continues from what the server
/// holds, never sending a byte twice. The local hash continues from the kept state when it covers
/// exactly the bytes before the append (the file is append-only: its head was checked by the scan).
async fn append_rest(
    c: &mut Client,
    states: &HashStates,
    job: &Job,
    archived: u64,
    size: u64,
) -> Result<Outcome, ClientError> {
    let there = c.size(&job.remote).await?;
    if there < archived || there > size {
        return Err(ClientError::Invalid(format!(
            "{} holds {there} bytes on the server; expected between {archived} and {size}",
            job.remote
        )));
    }
    let kept = states.take(job.id);
    let (state, sent) = if there < size {
        let (out, state) = c
            .upload_hashed(
                &job.local,
                &job.remote,
                UploadOptions {
                    mode: UploadMode::Append {
                        local_offset: there,
                    },
                    length: Some(size),
                    progress: None,
                },
                kept,
            )
            .await?;
        (state, out.bytes)
    } else {
        let state = match kept {
            Some(k) if k.size() == size => k,
            _ => logarchive_ftp::client::local_hash_state(&job.local, Some(size)).await?,
        };
        (state, 0)
    };
    let sha = state.sha256();
    let server = c.remote_sha256(&job.remote).await?;
    if server != sha {
        return Err(ClientError::HashMismatch {
            remote: job.remote.clone(),
            local: sha,
            server,
        });
    }
    states.keep(job.id, state);
    Ok(Outcome::Archived {
        size,
        sha256: sha,
        sent,
    })
}
