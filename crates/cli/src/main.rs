//! `logarchive`: the one binary. It parses the command line and wires the libraries together;
//! the behaviour lives in the crates under `crates/`.

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
    #[command(subcommand)]
    command: Command,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tune_allocator();
    init_logging();
    let result = match cli.command {
        Command::Server(args) => cmd::server::run(args),
        Command::User(args) => cmd::user::run(args),
        Command::Ftp(args) => cmd::ftp::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::Demo(args) => cmd::demo::run(args),
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

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("LOGARCHIVE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours for a terminal only: a log file or journald gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Large buffers (argon2's 19 MiB, transfer buffers) go straight to mmap and back to the system
/// when freed, instead of glibc raising its mmap threshold and keeping them in the heap for good.
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
