//! `logarchive agent --check`: every problem the configuration would cause, found at once and
//! named by its key or file, instead of an agent that starts and then retries for ever.

use crate::config::AgentConfig;
use crate::scan::Matcher;
use logarchive_ftp::client::{Client, ClientConfig, FtpUrl};
use std::time::Duration;

/// The problems found, one line each (empty: all is well): those of [`local`], source roots
/// that are missing, and whether the server can be reached: a login and a listing of the
/// agent's home, over TLS when the URL says so, with the configured CA.
pub async fn check(cfg: &AgentConfig) -> Vec<String> {
    let (mut problems, clients) = checked(cfg);
    problems.extend(missing_roots(cfg));
    // Without a password, URL or usable CA there is nothing to connect with (already told).
    // With a list, each server is checked: one that cannot be reached is named.
    for (url, mut c) in clients {
        c.reconnect_attempts = 0;
        c.connect_timeout = Duration::from_secs(10);
        match Client::connect(c).await {
            Ok(mut client) => {
                if let Err(e) = client.list("/").await {
                    problems.push(format!("server {url}: listing the home: {e}"));
                }
                let _ = client.quit().await;
            }
            Err(e) => problems.push(format!("server {url}: {e}")),
        }
    }
    problems
}

/// What keeps the agent from working at all, found without the server: the agent checks these
/// at start and refuses to run with any (a missing CA file would otherwise fail every upload,
/// for ever). Patterns, the state folder, the CA file (read and parsed), the password, the URL.
pub fn local(cfg: &AgentConfig) -> Vec<String> {
    checked(cfg).0
}

/// [`local`]'s problems, and a client configuration for each server when the password, its URL
/// and TLS are usable.
fn checked(cfg: &AgentConfig) -> (Vec<String>, Vec<(String, ClientConfig)>) {
    let mut problems = Vec::new();
    for s in &cfg.sources {
        if let Err(e) = Matcher::new(s) {
            problems.push(format!("source {}: {e}", s.root.display()));
        }
    }
    // A folder that does not exist yet is made at start: its nearest existing parent must
    // take it.
    let folder = cfg.state_db.parent().unwrap_or(std::path::Path::new("."));
    if let Err((folder, e)) = logarchive_ftp::os::can_create_in(folder) {
        problems.push(format!(
            "state_db {}: {} cannot be written: {e}",
            cfg.state_db.display(),
            folder.display()
        ));
    }
    let password = cfg.password().map_err(|e| problems.push(e)).ok();
    let mut clients = Vec::new();
    let mut tls_told = false;
    for u in cfg.server.urls() {
        let url = match FtpUrl::parse(u) {
            Ok(url) => url,
            Err(e) => {
                problems.push(format!("server {u}: {e}"));
                continue;
            }
        };
        let tls = url.tls_mode(cfg.ca_file.clone(), false);
        if let Err(e) = logarchive_ftp::client::check_tls(&tls) {
            // The same CA file for every server: told once.
            if !tls_told {
                let what = match &cfg.ca_file {
                    Some(ca) => format!("ca_file {}", ca.display()),
                    None => "TLS".to_string(),
                };
                problems.push(format!("{what}: {e}"));
                tls_told = true;
            }
            continue;
        }
        if let Some(password) = &password {
            let mut c = ClientConfig::new(url.host.clone(), url.port, cfg.user.clone(), password);
            c.tls = tls;
            clients.push((u.to_string(), c));
        }
    }
    (problems, clients)
}

/// Source roots that cannot be read (yet): the agent starts anyway and waits for them, saying
/// so; `--check` counts them as problems.
pub fn missing_roots(cfg: &AgentConfig) -> Vec<String> {
    cfg.sources
        .iter()
        .filter_map(|s| {
            std::fs::read_dir(&s.root)
                .err()
                .map(|e| format!("source root {}: {e}", s.root.display()))
        })
        .collect()
}
