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
}

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
    })
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The machine's non-loopback IP addresses.
fn addresses() -> Vec<String> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list that we walk read-only and free with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let a = (*cur).ifa_addr;
            if !a.is_null() {
                match (*a).sa_family as libc::c_int {
                    libc::AF_INET => {
                        let sin = *(a as *const libc::sockaddr_in);
                        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                        if !ip.is_loopback() {
                            out.push(ip.to_string());
                        }
                    }
                    libc::AF_INET6 => {
                        let sin6 = *(a as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        if !ip.is_loopback() {
                            out.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out.sort();
    out.dedup();
    out
}
