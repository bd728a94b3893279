//! `logarchive agent --check`: every problem the configuration would cause, found at once and
//! named by its key or file, instead of an agent that starts and then retries for ever.

use crate::config::AgentConfig;
use crate::scan::Matcher;
use logarchive_ftp::client::{Client, ClientConfig, FtpUrl};
use std::time::Duration;

/// The problems found, one line each (empty: all is well). Reaches the server: a login and a
/// listing of the agent's home, over TLS when the URL says so, with the configured CA.
pub async fn check(cfg: &AgentConfig) -> Vec<String> {
    let mut problems = Vec::new();
    for s in &cfg.sources {
        if let Err(e) = Matcher::new(s) {
            problems.push(format!("source {}: {e}", s.root.display()));
        }
        match std::fs::read_dir(&s.root) {
            Ok(_) => {}
            Err(e) => problems.push(format!("source root {}: {e}", s.root.display())),
        }
    }
    let folder = cfg
        .state_db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if let Err(e) = writable(folder) {
        problems.push(format!(
            "state_db {}: its folder cannot be written: {e}",
            cfg.state_db.display()
        ));
    }
    if let Some(ca) = &cfg.ca_file {
        if let Err(e) = std::fs::read(ca) {
            problems.push(format!("ca_file {}: {e}", ca.display()));
        }
    }
    let password = match cfg.password() {
        Ok(p) => p,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    let url = match FtpUrl::parse(&cfg.server) {
        Ok(u) => u,
        Err(e) => {
            problems.push(format!("server {}: {e}", cfg.server));
            return problems;
        }
    };
    let mut c = ClientConfig::new(url.host.clone(), url.port, cfg.user.clone(), password);
    c.tls = url.tls_mode(cfg.ca_file.clone(), false);
    c.reconnect_attempts = 0;
    c.connect_timeout = Duration::from_secs(10);
    match Client::connect(c).await {
        Ok(mut client) => {
            if let Err(e) = client.list("/").await {
                problems.push(format!("server {}: listing the home: {e}", cfg.server));
            }
            let _ = client.quit().await;
        }
        Err(e) => problems.push(format!("server {}: {e}", cfg.server)),
    }
    problems
}

/// Whether a file can be created in `dir`.
fn writable(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".logarchive-check-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}
