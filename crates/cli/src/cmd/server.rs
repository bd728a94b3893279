//! `logarchive server`.

use anyhow::{Context, Result};
use clap::Args;
use logarchive_server::config::{Overrides, ServerSettings};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args)]
pub struct ServerArgs {
    /// Configuration file (TOML); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data folder: users.toml, archive/, catalog.db [default: ./logarchive-data]
    #[arg(long)]
    data: Option<PathBuf>,
    /// FTP control address [default: 127.0.0.1:2121]
    #[arg(long)]
    ftp_listen: Option<SocketAddr>,
    /// Web interface address [default: 127.0.0.1:8080]
    #[arg(long)]
    web_listen: Option<SocketAddr>,
    /// PEM certificate chain for FTPS (and HTTPS)
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Check the configuration (data folder, users file, certificate and key, ports), print
    /// one line per problem, and exit: 0 when the server would start
    #[arg(long)]
    check: bool,
}

pub fn run(args: ServerArgs) -> Result<()> {
    // Everything the server creates (archived logs, their folders, the catalog, the users file)
    // is for the server's user alone: archived logs are often more sensitive than the machine's
    // own, and other local users have no business reading them.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let settings = ServerSettings::load(
        args.config.as_deref(),
        Overrides {
            data: args.data,
            ftp_listen: args.ftp_listen,
            web_listen: args.web_listen,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
        },
    )?;
    if args.check {
        let name = args
            .config
            .unwrap_or_else(|| PathBuf::from("(embedded defaults)"));
        return super::report(&name, &logarchive_server::check::check(&settings));
    }
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        // Handlers first: a SIGTERM right after the ready line must still stop us cleanly.
        let signals = Signals::install()?;
        let running = logarchive_server::start(&settings).await?;
        if let Some(p) = &running.initial_admin_password {
            // Printed once; only its argon2id hash is stored.
            println!("Created the first account: user 'admin', password '{p}' (shown only now; change it with `logarchive user passwd admin`).");
        }
        println!(
            "logarchive server: web on {}://{}/, FTP on {} ({}), data in {}",
            if settings.tls.is_some() { "https" } else { "http" },
            running.web_addr,
            running.ftp.local_addr(),
            match (&settings.tls, settings.ftp.tls_required) {
                (Some(_), true) => "FTPS required",
                (Some(_), false) => "FTPS available",
                (None, _) => "plain FTP",
            },
            settings.data.display()
        );
        signals.wait().await;
        tracing::info!("shutting down");
        let report = running.shutdown().await;
        tracing::info!(?report, "stopped");
        Ok(())
    })
}

/// SIGINT and SIGTERM.
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    pub(crate) async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
