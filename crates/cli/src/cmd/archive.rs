//! `logarchive archive --config server.toml fsck [--full] | du | migrate --to OTHER.toml`: the
//! archive checked, counted and moved for an operator. `fsck` and `du` only read, so they may
//! run beside the server; `migrate` writes the target (stop its server first).

use anyhow::{Context, Result};
use bytesize::ByteSize;
use clap::{Args, Subcommand};
use logarchive_server::config::{Overrides, ServerSettings};
use std::path::PathBuf;

#[derive(Args)]
pub struct ArchiveArgs {
    /// The server's configuration file (its `data` and `[storage]`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data folder [default: the config's, else ./logarchive-data]
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: ArchiveCommand,
}

#[derive(Subcommand)]
enum ArchiveCommand {
    /// Check the store against its metadata and the catalog (exit 1 on any problem).
    Fsck {
        /// Also read every file back and compare its SHA-256 with what was recorded.
        #[arg(long)]
        full: bool,
    },
    /// Logical and stored bytes per agent.
    Du,
    /// Copy the archive into the store another configuration names (a folder into S3, and
    /// back), each file verified by SHA-256; run again after an interruption, it goes on where
    /// it stopped.
    Migrate {
        /// The target's configuration (its `[storage]`, and `data` for its metadata).
        #[arg(long)]
        to: PathBuf,
        /// The target's data folder [default: the target config's `data`, else this one's].
        #[arg(long)]
        to_data: Option<PathBuf>,
    },
}

pub fn run(args: ArchiveArgs) -> Result<()> {
    let settings = ServerSettings::load(
        args.config.as_deref(),
        Overrides {
            data: args.data,
            ..Default::default()
        },
    )?;
    if let ArchiveCommand::Migrate { to, to_data } = &args.command {
        return migrate(&settings, to, to_data.clone());
    }
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match args.command {
        ArchiveCommand::Fsck { full } => {
            let bar = progress_bar(full);
            let b = bar.clone();
            let report = rt.block_on(logarchive_server::maintenance::fsck(
                &settings,
                full,
                move |done, total| {
                    b.set_length(total);
                    b.set_position(done);
                },
            ))?;
            bar.finish_and_clear();
            for p in &report.problems {
                println!("{p}");
            }
            println!(
                "fsck: {} files, {}{}",
                report.files,
                ByteSize(report.bytes),
                if full {
                    format!(", {} read back and hashed", report.hashed)
                } else {
                    String::new()
                }
            );
            let n = report.problems.len();
            if n > 0 {
                anyhow::bail!("{n} {}", if n == 1 { "problem" } else { "problems" });
            }
            println!("ok");
            Ok(())
        }
        ArchiveCommand::Migrate { .. } => unreachable!("handled above"),
        ArchiveCommand::Du => {
            let usage = rt.block_on(logarchive_server::maintenance::du(&settings))?;
            println!(
                "{:<24} {:>10} {:>12} {:>12} {:>7}",
                "agent", "files", "logical", "stored", "ratio"
            );
            let (mut files, mut logical, mut stored) = (0, 0, 0);
            let ratio = |l: u64, s: u64| {
                if s == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", l as f64 / s as f64)
                }
            };
            for u in &usage {
                println!(
                    "{:<24} {:>10} {:>12} {:>12} {:>7}",
                    u.agent,
                    u.files,
                    ByteSize(u.logical).to_string(),
                    ByteSize(u.stored).to_string(),
                    ratio(u.logical, u.stored)
                );
                files += u.files;
                logical += u.logical;
                stored += u.stored;
            }
            println!(
                "{:<24} {:>10} {:>12} {:>12} {:>7}",
                "total",
                files,
                ByteSize(logical).to_string(),
                ByteSize(stored).to_string(),
                ratio(logical, stored)
            );
            Ok(())
        }
    }
}

fn migrate(from: &ServerSettings, to: &std::path::Path, to_data: Option<PathBuf>) -> Result<()> {
    let file = logarchive_server::config::ServerConfigFile::load(to)?;
    let data = to_data
        .or_else(|| file.data.clone())
        .unwrap_or(from.data.clone());
    let target = ServerSettings::resolve(
        file,
        Overrides {
            data: Some(data),
            ..Default::default()
        },
    )?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let bar = progress_bar(true);
    let (b, hidden) = (bar.clone(), bar.is_hidden());
    let last_line = std::sync::Mutex::new(std::time::Instant::now());
    let report = rt.block_on(logarchive_server::migrate::migrate(
        from,
        &target,
        move |p| {
            b.set_length(p.bytes_total);
            b.set_position(p.bytes_done);
            // Without a terminal: a line at most every second (and the last).
            let mut last = last_line.lock().unwrap_or_else(|e| e.into_inner());
            let first_or_last = p.files_done == 0 || p.files_done == p.files_total;
            if hidden && (last.elapsed().as_secs() >= 1 || first_or_last) {
                *last = std::time::Instant::now();
                eprintln!(
                    "migrate: {}/{} files, {}/{}",
                    p.files_done,
                    p.files_total,
                    ByteSize(p.bytes_done),
                    ByteSize(p.bytes_total)
                );
            }
        },
    ))?;
    bar.finish_and_clear();
    for p in &report.problems {
        println!("{p}");
    }
    let catalog_only = report.files == 0 && report.catalog_rows > 0;
    if !catalog_only {
        println!(
            "migrate: {} files, {}: {} copied and verified, {} already there{}{}",
            report.files,
            ByteSize(report.bytes),
            report.copied - report.unrecorded,
            report.already,
            if report.unrecorded > 0 {
                format!(", {} copied without a recorded SHA-256", report.unrecorded)
            } else {
                String::new()
            },
            if report.accounts_copied {
                "; accounts copied"
            } else {
                ""
            }
        );
    }
    if report.catalog_rows > 0 || report.accounts_stored > 0 || report.audit_rows > 0 {
        println!(
            "migrate: catalog into PostgreSQL: {} files (with {} local names), {} accounts \
             stored, {} audit rows",
            report.catalog_rows, report.catalog_names, report.accounts_stored, report.audit_rows
        );
    }
    if report.segment_maps > 0 {
        println!(
            "migrate: the bucket's segment maps into PostgreSQL: {} folders and files",
            report.segment_maps
        );
    } else if report.segment_maps_there > 0 {
        println!(
            "migrate: the bucket's segment maps are in PostgreSQL already ({} folders and files)",
            report.segment_maps_there
        );
    }
    let n = report.problems.len();
    if n > 0 {
        anyhow::bail!("{n} {} not migrated", if n == 1 { "file" } else { "files" });
    }
    println!("ok");
    Ok(())
}

/// A bar on a terminal for `--full` (bytes read back); hidden otherwise.
fn progress_bar(full: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !full || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
