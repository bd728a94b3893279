//! One upload worker: its own FTP connection, the client side of the verified upload (DESIGN.md's
//! upload protocol). A send first checks that the file is still the row's (head, and the window
//! before the archived size), cuts a growing file at its last whole line, then uploads or appends
//! and has the server's SHA-256 of the whole file compared with its own.

use crate::scan;
use logarchive_ftp::client::{
    split_remote, Client, ClientConfig, ClientError, HashState, LocalFile, UploadMode,
    UploadOptions,
};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
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

/// What the tracker knows of a row when it hands it out.
#[derive(Debug)]
pub struct Send {
    /// Where the file was last seen.
    pub path: PathBuf,
    /// The file itself, when the tracker holds it open (it may have been renamed or removed).
    pub file: Option<Arc<File>>,
    pub dev: u64,
    pub ino: u64,
    pub remote: String,
    pub archived_size: u64,
    pub head_sha: String,
    pub head_len: u64,
    pub tail_sha: Option<String>,
    /// Send only whole lines (the file is being written); else everything (it is quiet).
    pub whole_lines: bool,
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
        /// SHA-256 of the window before `size` (see [`crate::state::FileRow::tail_sha`]).
        tail_sha: Option<String>,
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

/// What the local checks before a send decided.
pub(crate) enum Prepared {
    Send { file: Arc<File>, size: u64 },
    Stop(Outcome),
}

fn io_err(context: String, e: std::io::Error) -> ClientError {
    ClientError::Io { context, source: e }
}

/// The local side of a send, on the blocking pool: the file, still the row's, and how much of it
/// to send.
pub(crate) fn prepare(s: &Send) -> Result<Prepared, ClientError> {
    let file = match &s.file {
        Some(f) => Arc::clone(f),
        None => match crate::rotated::open_nofollow(&s.path) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Prepared::Stop(Outcome::Moved))
            }
            Err(e) => return Err(io_err(format!("opening {}", s.path.display()), e)),
        },
    };
    let meta = file
        .metadata()
        .map_err(|e| io_err(format!("reading {}", s.path.display()), e))?;
    if (meta.dev(), meta.ino()) != (s.dev, s.ino) {
        return Ok(Prepared::Stop(Outcome::Moved));
    }
    let size = meta.len();
    if size < s.archived_size || size < s.head_len {
        return Ok(Prepared::Stop(Outcome::Rewritten));
    }
    if s.archived_size > 0 {
        let same = |r: std::io::Result<Option<String>>, want: Option<&String>| match r {
            Ok(h) => Ok(h.as_ref() == want),
            // Shorter than it was a moment ago: not the same file.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(io_err(format!("reading {}", s.path.display()), e)),
        };
        let head = scan::head_sha(&file, s.head_len).map(Some);
        if !same(head, Some(&s.head_sha))?
            || !same(
                scan::window_sha(&file, s.archived_size),
                s.tail_sha.as_ref(),
            )?
        {
            return Ok(Prepared::Stop(Outcome::Rewritten));
        }
    }
    let cut = if s.whole_lines {
        scan::last_line_end(&file, s.archived_size, size)
            .map_err(|e| io_err(format!("reading {}", s.path.display()), e))?
    } else {
        size
    };
    // Nothing whole to send (an empty file that is quiet is sent: it exists as such).
    if cut == s.archived_size && (s.whole_lines || s.archived_size > 0) {
        return Ok(Prepared::Stop(Outcome::Held { size }));
    }
    Ok(Prepared::Send { file, size: cut })
}

async fn blocking<T: std::marker::Send + 'static>(
    f: impl FnOnce() -> Result<T, ClientError> + std::marker::Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Invalid(format!("local read: {e}")))?
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
        let check = Send {
            path: s.path.clone(),
            file: s.file.clone(),
            remote: String::new(),
            head_sha: s.head_sha.clone(),
            tail_sha: s.tail_sha.clone(),
            ..*s
        };
        let (file, size) = match blocking(move || prepare(&check)).await? {
            Prepared::Stop(o) => return Ok(o),
            Prepared::Send { file, size } => (file, size),
        };
        let local = LocalFile::Open {
            file: &file,
            name: &s.path,
        };
        let (dir, _) = split_remote(&s.remote);
        let dir = dir.to_string();
        if !self.dirs.contains(&dir) {
            self.client().await?.ensure_dir(&dir).await?;
            self.dirs.insert(dir);
        }
        let states = self.states.clone();
        let c = self.client().await?;
        let archived = if s.archived_size > 0 {
            s.archived_size
        } else {
            match c.upload_verified_hashed(local, &s.remote, Some(size)).await {
                Ok((v, state)) => {
                    if let Some(state) = state {
                        states.keep(id, state);
                    }
                    return Ok(Outcome::Archived {
                        size: v.size,
                        sha256: v.sha256,
                        sent: v.bytes,
                        tail_sha: tail(&file, v.size).await?,
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
                    states.keep(id, start);
                    there
                }
                Err(e) => return Err(e),
            }
        };
        let in_step = s.in_step && archived == s.archived_size;
        let (size, sha256, sent) =
            append_rest(c, &states, id, s, local, archived, size, in_step).await?;
        Ok(Outcome::Archived {
            size,
            sha256,
            sent,
            tail_sha: tail(&file, size).await?,
        })
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

async fn tail(file: &Arc<File>, size: u64) -> Result<Option<String>, ClientError> {
    let f = Arc::clone(file);
    blocking(move || {
        scan::window_sha(&f, size).map_err(|e| io_err("reading the sent file".into(), e))
    })
    .await
}

/// Grown: appends only the bytes after `archived` up to `size`, then verifies the whole file. The
/// server may already hold part of them (an append cut short): unless the last send of this row
/// succeeded in this process (`in_step`), it continues from what the server holds, never sending
/// a byte twice. The local hash continues from the kept state when it covers exactly the bytes
/// before the append (the head and the window before it were just checked).
#[allow(clippy::too_many_arguments)]
async fn append_rest(
    c: &mut Client,
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
    states.keep(id, state);
    Ok((size, sha, sent))
}
