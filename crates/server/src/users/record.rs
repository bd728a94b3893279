//! One account in the user record file, the role presets, and the validation of names and homes.

use logarchive_ftp::rate::ByteRate;
use logarchive_ftp::rights::Rights;
use logarchive_ftp::server::canonical_ip;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What an account may do in the web interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WebRole {
    /// No web access (agents).
    #[default]
    None,
    /// Read the whole archive.
    Viewer,
    /// Read everything and manage users.
    Admin,
}

impl FromStr for WebRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(WebRole::None),
            "viewer" => Ok(WebRole::Viewer),
            "admin" => Ok(WebRole::Admin),
            other => Err(format!("unknown web role {other:?} (none, viewer, admin)")),
        }
    }
}

impl fmt::Display for WebRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WebRole::None => "none",
            WebRole::Viewer => "viewer",
            WebRole::Admin => "admin",
        })
    }
}

/// The presets of `logarchive user add --role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Uploads into its own folder, appends, never overwrites or deletes.
    Agent,
    /// Reads everything, writes nothing.
    Viewer,
    /// Everything, on FTP and the web.
    Admin,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Role::Agent),
            "viewer" => Ok(Role::Viewer),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (agent, viewer, admin)")),
        }
    }
}

impl Role {
    /// Home, rights and web role of the preset for the account `name`.
    pub fn preset(self, name: &str) -> (String, Rights, WebRole) {
        match self {
            Role::Agent => (format!("/{name}"), Rights::agent(), WebRole::None),
            Role::Viewer => ("/".to_string(), Rights::viewer(), WebRole::Viewer),
            Role::Admin => ("/".to_string(), Rights::ALL, WebRole::Admin),
        }
    }
}

/// One account as stored in `users.toml` (the key of its table is the name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// argon2id PHC string; never the password itself.
    pub password: String,
    /// The chroot inside the archive, e.g. `/agent01`; `/` is the whole archive.
    pub home: String,
    /// FTP rights in the home.
    pub rights: Rights,
    /// Upload speed limit, shared by the account's sessions.
    #[serde(default)]
    pub upload_limit: ByteRate,
    /// Download speed limit, shared by the account's sessions.
    #[serde(default)]
    pub download_limit: ByteRate,
    /// CIDR networks the account may log in from; empty = anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// A disabled account cannot log in.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What the account may do on the web UI.
    #[serde(default)]
    pub web_role: WebRole,
    /// Refuse logins over a plain-text control channel.
    #[serde(default)]
    pub tls_required: bool,
}

fn yes() -> bool {
    true
}

impl UserRecord {
    /// Whether an address may log in to this account.
    pub fn ip_allowed(&self, ip: std::net::IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.allowed_ips.is_empty() || self.allowed_ips.iter().any(|net| net.contains(&ip))
    }
}

/// Normalises a home such as `agent01/` or `/a//b` to `/agent01`, `/a/b`; refuses `..` and control
/// characters so a home can never point outside the archive.
pub fn normalize_home(home: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for part in home.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("invalid home {home:?}: '..' is not allowed")),
            p if p.chars().any(|c| c.is_control()) || p.contains('\\') => {
                return Err(format!(
                    "invalid home {home:?}: control characters and backslashes are not allowed"
                ))
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use logarchive_ftp::names::validate_name;

    #[test]
    fn byte_rate_parses_sizes_and_numbers() {
        assert_eq!(
            "2MiB".parse::<ByteRate>().unwrap(),
            ByteRate(2 * 1024 * 1024)
        );
        assert_eq!(
            "512KiB/s".parse::<ByteRate>().unwrap(),
            ByteRate(512 * 1024)
        );
        assert_eq!("1000".parse::<ByteRate>().unwrap(), ByteRate(1000));
        assert_eq!("0".parse::<ByteRate>().unwrap(), ByteRate::UNLIMITED);
        assert!("fast".parse::<ByteRate>().is_err());
    }

    #[test]
    fn names_and_homes_are_validated() {
        assert!(validate_name("agent01").is_ok());
        assert!(validate_name("a.b_c-d").is_ok());
        for bad in ["", ".hidden", "a b", "a/b", "ä", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalize_home("agent01/").unwrap(), "/agent01");
        assert_eq!(normalize_home("/").unwrap(), "/");
        assert_eq!(normalize_home("//a/./b").unwrap(), "/a/b");
        assert!(normalize_home("/a/../..").is_err());
        assert!(normalize_home("/a\0b").is_err());
    }

    #[test]
    fn ip_allow_list_handles_mapped_addresses() {
        let mut r = UserRecord {
            password: String::new(),
            home: "/".into(),
            rights: Rights::NONE,
            upload_limit: ByteRate(0),
            download_limit: ByteRate(0),
            allowed_ips: vec![],
            enabled: true,
            web_role: WebRole::None,
            tls_required: false,
        };
        assert!(r.ip_allowed("10.1.2.3".parse().unwrap()));
        r.allowed_ips = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(r.ip_allowed("10.1.2.3".parse().unwrap()));
        assert!(r.ip_allowed("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!r.ip_allowed("192.0.2.1".parse().unwrap()));
    }
}
