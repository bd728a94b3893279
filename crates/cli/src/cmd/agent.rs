//! `logarchive agent --config agent.toml [--once]` and `logarchive agent status --config agent.toml`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use logarchive_agent::config::AgentConfig;
use logarchive_agent::{Mode, RunSummary};
use std::path::PathBuf;

#[derive(Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    /// The agent's configuration file (TOML)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// One full pass: archive what is there, wait for the queue to drain, exit
    #[arg(long)]
    once: bool,
    /// Check the configuration (sources, state folder, password, CA, reaching and logging in to
    /// the server), print one line per problem, and exit: 0 when all is well
    #[arg(long, conflicts_with = "once")]
    check: bool,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Print the agent's status (from its state database) as JSON.
    Status,
}

pub fn run(args: AgentArgs) -> Result<()> {
    let path = args.config.context("--config agent.toml is required")?;
    let cfg = AgentConfig::load(&path)?;
    if let Some(AgentCommand::Status) = args.command {
        let db = logarchive_agent::state::StateDb::open(&cfg.state_db)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let doc = logarchive_agent::status::build(&cfg, &db, now)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    if args.check {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let problems = rt.block_on(logarchive_agent::check::check(&cfg));
        return super::report(&path, &problems);
    }
    // What would fail every upload is refused at start, as --check would tell it.
    let problems = logarchive_agent::check::local(&cfg);
    if !problems.is_empty() {
        return super::report(&path, &problems);
    }
    for missing in logarchive_agent::check::missing_roots(&cfg) {
        tracing::warn!("{missing}: archived once it appears");
    }
    let mode = if args.once { Mode::Once } else { Mode::Forever };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let signals = super::server::Signals::install()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signals.wait().await;
            let _ = stop_tx.send(true);
        });
        tracing::info!(agent = %cfg.agent_id, server = %cfg.server, "agent starting");
        let RunSummary {
            files_archived,
            bytes_sent,
            ..
        } = logarchive_agent::run(cfg, mode, stop_rx).await?;
        tracing::info!(files_archived, bytes_sent, "agent stopped");
        if mode == Mode::Once {
            println!("archived {files_archived} file(s), {bytes_sent} bytes sent");
        }
        Ok(())
    })
}
