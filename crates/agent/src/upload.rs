//! One upload worker: its own FTP connection, the client side of the verified upload (see
//! ARCHITECTURE.md). The tracker hands it a send it has checked (the file is still the row's) and
//! cut (at a whole line); the worker uploads or appends and has the server's SHA-256 of the whole
//! file compared with its own.

use crate::servers::Servers;
use logarchive_ftp::client::{
    split_remote, Client, ClientError, HashState, LocalFile, UploadMode, UploadOptions,
};
use logarchive_ftp::names::SCRATCH_DIR;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Work for a worker, for one row.
#[derive(Debug)]
pub struct Job {
    pub id: i64,
    pub work: Work,
}

#[derive(Debug)]
pub enum Work {
    /// Send what the server lacks of the row's file.
    Send(Send),
    /// Tell the server the local names the row's file had (`SITE ALIAS`).
    Names { remote: String, names: Vec<String> },
}

/// A send the tracker checked (the file is still the row's) and cut (at a whole line).
#[derive(Debug)]
pub struct Send {
    /// Where the file was last seen (for messages).
    pub path: PathBuf,
    /// The file, open (it may have been renamed or removed since).
    pub file: Arc<File>,
    pub remote: String,
    pub archived_size: u64,
    /// What the server is to hold after this send.
    pub size: u64,
    /// The server holds exactly `archived_size` bytes (this process's last send of the row
    /// succeeded): no need to ask for its size first.
    pub in_step: bool,
}

#[derive(Debug)]
pub enum Outcome {
    /// The server holds the first `size` bytes, SHA-256 confirmed.
    Archived {
        size: u64,
        sha256: String,
        sent: u64,
    },
    /// Nothing whole to send yet: the file is `size` bytes and its last line is unterminated.
    Held {
        size: u64,
    },
    /// The file no longer starts (or continues) as what was archived: truncated or rewritten.
    Rewritten,
    /// The row's path does not hold its file (and the tracker had it not open): look for it.
    Moved,
    /// The names were told (or the server does not keep them).
    Named,
    Failed(ClientError),
}

/// Most hash states kept (~200 bytes each); beyond it the cache starts again empty.
const MAX_HASH_STATES: usize = 10_000;

/// The SHA-256 state of what was archived of each row, shared by the workers: the next append to
/// a growing file hashes only its new bytes instead of reading the whole file again (a 10 GB log
/// appended to every few seconds would otherwise keep a core busy). Memory only: after a restart
/// the first append of each file reads it once. Each state also names the server (its index in
/// the list) the bytes were verified on.
#[derive(Clone, Default)]
pub struct HashStates(Arc<Mutex<HashMap<i64, (HashState, usize)>>>);

impl HashStates {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (HashState, usize)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, row: i64) -> Option<HashState> {
        self.map().remove(&row).map(|(state, _)| state)
    }

    /// The server the row's last send was verified on, if its state is kept.
    fn server(&self, row: i64) -> Option<usize> {
        self.map().get(&row).map(|(_, server)| *server)
    }

    fn keep(&self, row: i64, state: HashState, server: usize) {
        let mut m = self.map();
        if m.len() >= MAX_HASH_STATES {
            m.clear();
        }
        m.insert(row, (state, server));
    }
}

pub struct Uploader {
    servers: Arc<Servers>,
    /// The connection, and the index of its server in the list.
    client: Option<(usize, Client)>,
    dirs: HashSet<String>,
    states: HashStates,
}

impl Uploader {
    pub fn new(servers: Arc<Servers>, states: HashStates) -> Self {
        Uploader {
            servers,
            client: None,
            dirs: HashSet::new(),
            states,
        }
    }

    /// The connection (made, or made again on the server in use, as [`Servers`] says), and the
    /// index of its server.
    async fn connection(&mut self) -> Result<(usize, &mut Client), ClientError> {
        if let Some((i, _)) = &self.client {
            if self.servers.leave(*i) {
                if let Some((_, c)) = self.client.take() {
                    tokio::spawn(async move {
                        let _ = c.quit().await;
                    });
                }
            }
        }
        if self.client.is_none() {
            self.client = Some(self.servers.connect().await?);
            self.dirs.clear();
        }
        self.client
            .as_mut()
            .map(|(i, c)| (*i, c))
            .ok_or_else(|| ClientError::Invalid("no connection".into()))
    }

    async fn client(&mut self) -> Result<&mut Client, ClientError> {
        Ok(self.connection().await?.1)
    }

    pub async fn run(&mut self, job: Job) -> (Job, Outcome) {
        let result = match &job.work {
            Work::Send(s) => self.send(job.id, s).await,
            Work::Names { remote, names } => self.names(remote, names).await,
        };
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                if e.is_transient() {
                    // Start afresh next time (the client reconnects by itself, but a failed
                    // connect leaves nothing worth keeping).
                    self.client = None;
                }
                Outcome::Failed(e)
            }
        };
        (job, outcome)
    }

    async fn names(&mut self, remote: &str, names: &[String]) -> Result<Outcome, ClientError> {
        let c = self.client().await?;
        for n in names {
            match c.alias(remote, n).await {
                Ok(()) => {}
                Err(ClientError::Protocol {
                    code: 500..=504, ..
                }) => {
                    tracing::debug!("the server does not keep local names (SITE ALIAS)");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Outcome::Named)
    }

    async fn send(&mut self, id: i64, s: &Send) -> Result<Outcome, ClientError> {
        let size = s.size;
        let local = LocalFile::Open {
            file: &s.file,
            name: &s.path,
        };
        let (dir, _) = split_remote(&s.remote);
        let dir = dir.to_string();
        if !self.dirs.contains(&dir) {
            self.client().await?.ensure_dir(&dir).await?;
            self.dirs.insert(dir);
        }
        let states = self.states.clone();
        let (server, c) = self.connection().await?;
        let archived = if s.archived_size > 0 {
            s.archived_size
        } else {
            match c.upload_verified_hashed(local, &s.remote, Some(size)).await {
                Ok((v, state)) => {
                    if let Some(state) = state {
                        states.keep(id, state, server);
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
                        logarchive_ftp::client::local_hash_state(local, Some(there)).await?;
                    if c.remote_sha256(&remote).await? != start.sha256() {
                        return Err(ClientError::Exists {
                            remote,
                            size: there,
                        });
                    }
                    states.keep(id, start, server);
                    there
                }
                Err(e) => return Err(e),
            }
        };
        // The server holds what the last send left only if that send was verified on this very
        // server: after a move to another one, its size is asked first.
        let in_step = s.in_step && archived == s.archived_size && states.server(id) == Some(server);
        let (size, sha256, sent) =
            append_rest(c, server, &states, id, s, local, archived, size, in_step).await?;
        Ok(Outcome::Archived { size, sha256, sent })
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
        let dir = format!("/{SCRATCH_DIR}");
        let known = self.dirs.contains(&dir);
        let c = self.client().await?;
        if !known {
            c.ensure_dir(&dir).await?;
        }
        c.upload(
            &tmp,
            &format!("{dir}/status.json"),
            UploadOptions::default(),
        )
        .await?;
        self.dirs.insert(dir);
        let _ = std::fs::remove_file(&tmp);
        Ok(())
    }
}

/// Grown: appends only the bytes after `archived` up to `size`, then verifies the whole file. The
/// server may already hold part of them (an append cut short): unless the last send of this row
/// succeeded in this process (`in_step`), it continues from what the server holds, never sending
/// a byte twice. The local hash continues from the kept state when it covers exactly the bytes
/// before the append (the head and the window before it were just checked).
#[allow(clippy::too_many_arguments)]
async fn append_rest(
    c: &mut Client,
    server_index: usize,
    states: &HashStates,
    id: i64,
    s: &Send,
    local: LocalFile<'_>,
    archived: u64,
    size: u64,
    in_step: bool,
) -> Result<(u64, String, u64), ClientError> {
    let there = if in_step {
        archived
    } else {
        c.size(&s.remote).await?
    };
    // A send of a growing file is cut at a whole line; an earlier one (killed before it was
    // recorded) may have sent more: then that is where this one ends, if the file has it.
    let size = size.max(there);
    if there < archived {
        return Err(ClientError::Invalid(format!(
            "{} holds {there} bytes on the server; expected at least {archived}",
            s.remote
        )));
    }
    let kept = states.take(id);
    let (state, sent) = if there < size {
        let (out, state) = c
            .upload_hashed(
                local,
                &s.remote,
                UploadOptions::new(UploadMode::Append {
                    local_offset: there,
                })
                .length(size),
                kept,
            )
            .await?;
        (state, out.bytes)
    } else {
        let state = match kept {
            Some(k) if k.size() == size => k,
            _ => logarchive_ftp::client::local_hash_state(local, Some(size)).await?,
        };
        (state, 0)
    };
    if state.size() != size {
        return Err(ClientError::Invalid(format!(
            "{} on the server is longer than the local file",
            s.remote
        )));
    }
    let sha = state.sha256();
    let server = c.remote_sha256(&s.remote).await?;
    if server != sha {
        return Err(ClientError::HashMismatch {
            remote: s.remote.clone(),
            local: sha,
            server,
        });
    }
    states.keep(id, state, server_index);
    Ok((size, sha, sent))
}
