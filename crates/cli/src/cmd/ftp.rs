//! `logarchive ftp ls|get|put|mkdir|rm|mv URL [LOCAL]`: a command-line FTP(S) client for people
//! and scripts. Exit codes: 0 ok, 2 usage, 3 login refused, 4 not found, 5 permission denied,
//! 6 network or timeout, 7 verification failed, 1 anything else.

use crate::password::read_password;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use logarchive_ftp::client::{
    join_remote, Client, ClientConfig, ClientError, DownloadOptions, EntryKind, FtpUrl, Progress,
    UploadMode, UploadOptions,
};
use logarchive_ftp::rate::ByteRate;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct FtpArgs {
    #[command(subcommand)]
    action: Action,
    /// Read the password from the first line of stdin (else LOGARCHIVE_PASSWORD, else a prompt)
    #[arg(long, global = true)]
    password_stdin: bool,
    /// Speed limit for transfers, e.g. 2MiB (per second)
    #[arg(long, global = true, value_parser = parse_rate)]
    limit: Option<ByteRate>,
    /// CA certificate (PEM) to verify an ftps:// server with (default: the system's roots)
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// Accept any TLS certificate (for tests only: anyone on the path can read the session)
    #[arg(long, global = true)]
    insecure: bool,
    /// Seconds to wait for any reply or data before giving up
    #[arg(long, global = true, default_value_t = 60)]
    timeout: u64,
}

#[derive(Subcommand)]
enum Action {
    /// List a folder (or one file).
    Ls { url: String },
    /// Download a file (or, with -r, a folder) to LOCAL (default: its name, here).
    Get {
        url: String,
        local: Option<PathBuf>,
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Continue a partial local file
        #[arg(long)]
        resume: bool,
    },
    /// Upload LOCAL (a file, or with -r a folder) to URL; a URL ending in / keeps the local name.
    Put {
        url: String,
        local: PathBuf,
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Continue a partial remote file from its size
        #[arg(long)]
        resume: bool,
    },
    /// Create a folder and any missing parents.
    Mkdir { url: String },
    /// Delete a file, or with -d an empty folder.
    Rm {
        url: String,
        /// The URL is a folder (must be empty)
        #[arg(short = 'd', long)]
        dir: bool,
    },
    /// Rename URL's path to NEW_PATH (on the same server).
    Mv { url: String, new_path: String },
}

fn parse_rate(s: &str) -> Result<ByteRate, String> {
    s.parse()
}

/// Maps errors to the documented exit codes.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Auth { .. }) => 3,
        Some(ClientError::NotFound(_)) => 4,
        Some(ClientError::Permission(_)) => 5,
        Some(ClientError::Io { .. } | ClientError::Timeout(_) | ClientError::Tls(_)) => 6,
        Some(ClientError::HashMismatch { .. }) => 7,
        _ => 1,
    }
}

pub fn run(args: FtpArgs) -> Result<()> {
    let url = match &args.action {
        Action::Ls { url } | Action::Get { url, .. } | Action::Put { url, .. } => url,
        Action::Mkdir { url } | Action::Rm { url, .. } | Action::Mv { url, .. } => url,
    };
    let url = FtpUrl::parse(url)?;
    let user = url.user.clone().unwrap_or_else(|| "anonymous".into());
    let password = read_password(args.password_stdin, false)?;
    let mut cfg = ClientConfig::new(url.host.clone(), url.port, user, password);
    cfg.tls = url.tls_mode(args.ca_file.clone(), args.insecure);
    cfg.io_timeout = Duration::from_secs(args.timeout.max(1));
    cfg.speed_limit = args.limit.map(|l| l.0).unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let mut c = Client::connect(cfg).await?;
        match args.action {
            Action::Ls { .. } => ls(&mut c, &url.path).await?,
            Action::Get {
                local,
                recursive,
                resume,
                ..
            } => {
                let name = logarchive_ftp::client::split_remote(&url.path).1;
                let local = local
                    .unwrap_or_else(|| PathBuf::from(if name.is_empty() { "." } else { name }));
                if recursive {
                    get_tree(&mut c, &url.path, &local, resume).await?;
                } else {
                    get_file(&mut c, &url.path, &local, resume).await?;
                }
            }
            Action::Put {
                local,
                recursive,
                resume,
                ..
            } => {
                let remote = if url.path.ends_with('/') {
                    let name = local
                        .file_name()
                        .context("LOCAL has no file name")?
                        .to_string_lossy()
                        .into_owned();
                    join_remote(&url.path, &name)
                } else {
                    url.path.clone()
                };
                if recursive {
                    put_tree(&mut c, &local, &remote, resume).await?;
                } else {
                    put_file(&mut c, &local, &remote, resume).await?;
                }
            }
            Action::Mkdir { .. } => c.ensure_dir(&url.path).await?,
            Action::Rm { dir, .. } => {
                if dir {
                    c.rmdir(&url.path).await?
                } else {
                    c.delete(&url.path).await?
                }
            }
            Action::Mv { new_path, .. } => c.rename(&url.path, &new_path).await?,
        }
        c.quit().await?;
        Ok(())
    })
}

async fn ls(c: &mut Client, path: &str) -> Result<()> {
    let entries = match c.stat(path).await? {
        Some(e) if e.kind == EntryKind::File => vec![e],
        Some(_) => c.list(path).await?,
        None => return Err(ClientError::NotFound(path.to_string()).into()),
    };
    for e in entries {
        let kind = match e.kind {
            EntryKind::Dir => "d",
            EntryKind::File => "-",
            EntryKind::Other => "?",
        };
        let when = e
            .modified
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| logarchive_server::web::time::format_ms(d.as_millis() as i64))
            .unwrap_or_else(|| "-".repeat(19));
        println!("{kind} {:>14} {when} {}", e.size, e.name);
    }
    Ok(())
}

/// A progress bar on a terminal; otherwise nothing until the summary line.
fn progress(what: &str, total: Option<u64>) -> (Option<ProgressBar>, Option<Progress>) {
    if !std::io::stderr().is_terminal() {
        return (None, None);
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    let b = bar.clone();
    (Some(bar), Some(Arc::new(move |n| b.set_position(n))))
}

fn summary(verb: &str, name: &str, bytes: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    eprintln!(
        "{verb} {name}: {} in {secs:.2} s ({}/s)",
        logarchive_ftp::rate::human_bytes(bytes),
        logarchive_ftp::rate::human_bytes((bytes as f64 / secs) as u64)
    );
}

async fn get_file(c: &mut Client, remote: &str, local: &Path, resume: bool) -> Result<()> {
    let total = c.size(remote).await.ok();
    let (bar, cb) = progress(remote, total);
    let t = Instant::now();
    let out = c
        .download(
            remote,
            local,
            DownloadOptions::default().resume(resume).progress(cb),
        )
        .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    summary("got", remote, out.bytes, t);
    Ok(())
}

async fn put_file(c: &mut Client, local: &Path, remote: &str, resume: bool) -> Result<()> {
    let total = std::fs::metadata(local)
        .with_context(|| format!("reading {}", local.display()))?
        .len();
    let (bar, cb) = progress(&local.display().to_string(), Some(total));
    let t = Instant::now();
    let mode = if resume {
        UploadMode::Resume
    } else {
        UploadMode::Create
    };
    let out = c
        .upload(local, remote, UploadOptions::new(mode).progress(cb))
        .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    summary("put", remote, out.bytes, t);
    Ok(())
}

async fn get_tree(c: &mut Client, remote: &str, local: &Path, resume: bool) -> Result<()> {
    let mut stack = vec![(remote.to_string(), local.to_path_buf())];
    while let Some((r, l)) = stack.pop() {
        std::fs::create_dir_all(&l).with_context(|| format!("creating {}", l.display()))?;
        for e in c.list(&r).await? {
            if e.name.contains('/') || e.name == "." || e.name == ".." {
                bail!("refusing the remote name {:?}", e.name);
            }
            let (rp, lp) = (join_remote(&r, &e.name), l.join(&e.name));
            match e.kind {
                EntryKind::Dir => stack.push((rp, lp)),
                EntryKind::File => get_file(c, &rp, &lp, resume).await?,
                EntryKind::Other => {}
            }
        }
    }
    Ok(())
}

async fn put_tree(c: &mut Client, local: &Path, remote: &str, resume: bool) -> Result<()> {
    let mut stack = vec![(local.to_path_buf(), remote.to_string())];
    while let Some((l, r)) = stack.pop() {
        c.ensure_dir(&r).await?;
        for entry in std::fs::read_dir(&l).with_context(|| format!("reading {}", l.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push((entry.path(), join_remote(&r, &name)));
            } else if ft.is_file() {
                put_file(c, &entry.path(), &join_remote(&r, &name), resume).await?;
            }
        }
    }
    Ok(())
}
