pub mod agent;
pub mod archive;
pub mod demo;
pub mod ftp;
pub mod server;
pub mod tls;
pub mod user;

/// Prints what a `--check` found: one line per problem (and an error), or that all is well.
pub fn report(config: &std::path::Path, problems: &[String]) -> anyhow::Result<()> {
    if problems.is_empty() {
        println!("{}: ok", config.display());
        return Ok(());
    }
    for p in problems {
        println!("{}: {p}", config.display());
    }
    let n = problems.len();
    anyhow::bail!(
        "{n} {} in {}",
        if n == 1 { "problem" } else { "problems" },
        config.display()
    )
}
