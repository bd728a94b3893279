//! The status document the agent publishes to `/.logarchive/status.json` in its home (the web UI
//! shows it) and that `logarchive agent status` prints. No secrets in it.

use crate::config::AgentConfig;
use crate::state::{StateDb, Totals};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    pub root: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusDoc {
    pub agent_id: String,
    pub host: String,
    pub addresses: Vec<String>,
    pub version: String,
    pub sources: Vec<SourceInfo>,
    #[serde(flatten)]
    pub totals: Totals,
    pub last_scan_ms: Option<i64>,
    pub updated_at_ms: i64,
    /// The server the agent uploads to (one of `server`'s URLs), when it has connected.
    pub server: Option<String>,
}

/// Where the state database keeps the URL of the server in use.
pub const SERVER_KEY: &str = "server_in_use";

pub fn build(cfg: &AgentConfig, db: &StateDb, now_ms: i64) -> crate::state::Result<StatusDoc> {
    Ok(StatusDoc {
        agent_id: cfg.agent_id.clone(),
        host: hostname(),
        addresses: addresses(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        sources: cfg
            .sources
            .iter()
            .map(|s| SourceInfo {
                root: s.root.display().to_string(),
                include: s.include.clone(),
                exclude: s.exclude.clone(),
                prefix: s.prefix.clone(),
            })
            .collect(),
        totals: db.totals(now_ms)?,
        last_scan_ms: db.meta("last_scan_ms")?.and_then(|v| v.parse().ok()),
        updated_at_ms: now_ms,
        server: db.meta(SERVER_KEY)?,
    })
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The machine's non-loopback IP addresses, as the kernel lists them: the local (`/32 host
/// LOCAL`) entries of `/proc/net/fib_trie` and the lines of `/proc/net/if_inet6`.
fn addresses() -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut out = local_v4(&read("/proc/net/fib_trie"));
    out.extend(local_v6(&read("/proc/net/if_inet6")));
    out.sort();
    out.dedup();
    out
}

/// The addresses of `/32 host LOCAL` entries: each follows the line `|-- ADDRESS`.
fn local_v4(fib_trie: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let l = line.trim();
        if let Some(a) = l.strip_prefix("|-- ") {
            last = a.parse().ok();
        } else if l == "/32 host LOCAL" {
            if let Some(ip) = last.filter(|ip| !ip.is_loopback()) {
                out.push(ip.to_string());
            }
        }
    }
    out
}

/// The first field of each line of `/proc/net/if_inet6`: 32 hex digits.
fn local_v6(if_inet6: &str) -> Vec<String> {
    if_inet6
        .lines()
        .filter_map(|l| u128::from_str_radix(l.split_whitespace().next()?, 16).ok())
        .map(std::net::Ipv6Addr::from)
        .filter(|ip| !ip.is_loopback())
        .map(|ip| ip.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_the_kernel_tables() {
        let fib =
            "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     \
                   +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n     \
                   |-- 192.0.2.2\n        /32 host LOCAL\n     |-- 192.0.2.255\n        \
                   /32 link BROADCAST\n";
        assert_eq!(local_v4(fib), ["192.0.2.2"]);
        let v6 = "fd000000000000000000000000000002 04 40 00 82     eth0\n\
                  00000000000000000000000000000001 01 80 10 80       lo\n";
        assert_eq!(local_v6(v6), ["fd00::2"]);
        assert!(!hostname().is_empty());
    }
}
