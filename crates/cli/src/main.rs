//! `logarchive`: the one binary. It parses the command line and wires the libraries together;
//! the behaviour lives in the crates under `crates/`.

#![forbid(unsafe_code)]

mod cmd;
mod password;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "logarchive",
    version,
    about = "Collect log files from many computers into one archive"
)]
struct Cli {
    /// Log lines as text (coloured on a terminal unless NO_COLOR is set) or as JSON objects,
    /// one per line, for log pipelines.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "LOGARCHIVE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the archive server (FTP service).
    Server(cmd::server::ServerArgs),
    /// Manage the accounts in the user record file.
    User(cmd::user::UserArgs),
    /// A command-line FTP(S) client: ls, get, put, mkdir, rm, mv.
    Ftp(cmd::ftp::FtpArgs),
    /// Run the agent that archives this computer's logs (or show its status).
    Agent(cmd::agent::AgentArgs),
    /// See it work: a server, agents and log writers in one process, until Ctrl-C.
    Demo(cmd::demo::DemoArgs),
    /// Certificates for FTPS and HTTPS: `tls init` makes a private CA and a server certificate.
    Tls(cmd::tls::TlsArgs),
    /// The archive for operators: `fsck [--full]` checks it, `du` counts it per agent.
    Archive(cmd::archive::ArchiveArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logarchive_ftp::os::tune_allocator();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Server(args) => cmd::server::run(args),
        Command::User(args) => cmd::user::run(args),
        Command::Ftp(args) => cmd::ftp::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Tls(args) => cmd::tls::run(args),
        Command::Archive(args) => cmd::archive::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line (with its causes), not a debug dump.
            eprintln!("logarchive: {e:#}");
            ExitCode::from(cmd::ftp::exit_code(&e))
        }
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("LOGARCHIVE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        // Colours for a terminal only (a log file or journald gets plain text), and never
        // with NO_COLOR set (no-color.org).
        LogFormat::Text => logs
            .with_ansi(
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            )
            .init(),
    }
}
