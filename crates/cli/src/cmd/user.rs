//! `logarchive user add|remove|list|passwd|set`.

use crate::password::read_password;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use logarchive_ftp::rate::ByteRate;
use logarchive_ftp::rights::Rights;
use logarchive_server::audit::{self, Event, Via};
use logarchive_server::users::{NewUser, Role, UserDb, UserUpdate, WebRole};
use std::path::PathBuf;

#[derive(Args)]
pub struct UserArgs {
    /// The server's configuration: its data folder's users.toml, or with `[catalog] url` the
    /// accounts in PostgreSQL that every server shares
    #[arg(long, conflicts_with_all = ["users", "data"])]
    config: Option<PathBuf>,
    /// Data folder whose users.toml to edit [default: ./logarchive-data]
    #[arg(long, conflicts_with = "users")]
    data: Option<PathBuf>,
    /// The user record file itself (changes go to the audit trail of a catalog.db beside it)
    #[arg(long)]
    users: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Add an account.
    Add {
        name: String,
        /// Preset for home, rights and web role
        #[arg(long, default_value = "agent", value_parser = parse_role)]
        role: Role,
        /// Home inside the archive [preset: /NAME for agents, / otherwise]
        #[arg(long)]
        home: Option<String>,
        /// Comma separated: list,read,mkdir,write,append,rename,delete,overwrite (or all, none)
        #[arg(long, value_parser = parse_rights)]
        rights: Option<Rights>,
        /// Bytes per second, e.g. 2MiB; 0 = unlimited
        #[arg(long, value_parser = parse_rate)]
        upload_limit: Option<ByteRate>,
        #[arg(long, value_parser = parse_rate)]
        download_limit: Option<ByteRate>,
        /// Comma separated CIDR networks allowed to log in (default: anywhere)
        #[arg(long, value_delimiter = ',')]
        allowed_ips: Vec<ipnet::IpNet>,
        /// Web role: none, viewer, admin [preset]
        #[arg(long, value_parser = parse_web_role)]
        web_role: Option<WebRole>,
        /// Refuse plain-text FTP logins for this account
        #[arg(long)]
        tls_required: bool,
        /// Read the password from the first line of stdin
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an account (its archived files stay).
    Remove { name: String },
    /// List the accounts.
    List,
    /// Set a new password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change an account.
    Set {
        name: String,
        #[arg(long, value_parser = parse_rights)]
        rights: Option<Rights>,
        #[arg(long)]
        enabled: Option<bool>,
        #[arg(long)]
        home: Option<String>,
        #[arg(long, value_parser = parse_rate)]
        upload_limit: Option<ByteRate>,
        #[arg(long, value_parser = parse_rate)]
        download_limit: Option<ByteRate>,
        /// Comma separated CIDR networks; an empty string allows anywhere
        #[arg(long)]
        allowed_ips: Option<String>,
        #[arg(long, value_parser = parse_web_role)]
        web_role: Option<WebRole>,
        #[arg(long)]
        tls_required: Option<bool>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}
fn parse_rights(s: &str) -> Result<Rights, String> {
    Rights::parse_list(s).map_err(|e| e.to_string())
}
fn parse_rate(s: &str) -> Result<ByteRate, String> {
    s.parse()
}
fn parse_web_role(s: &str) -> Result<WebRole, String> {
    s.parse()
}

pub fn run(args: UserArgs) -> Result<()> {
    use logarchive_server::catalog::Location;
    // The audit trail is the server's (its catalog database); a bare users file has none.
    let (db, trail) = match (args.config, args.users, args.data) {
        (Some(config), _, _) => {
            let settings =
                logarchive_server::config::ServerSettings::load(Some(&config), Default::default())?;
            (
                logarchive_server::open_accounts(&settings)?,
                Some(settings.catalog_location()?),
            )
        }
        // A data folder's users file: its trail beside it (a file elsewhere has none).
        (None, Some(u), _) => {
            let beside = u.parent().map(|d| d.join("catalog.db"));
            (
                UserDb::open(&u)?,
                beside.filter(|c| c.exists()).map(Location::Sqlite),
            )
        }
        (None, None, Some(d)) => (
            UserDb::open(d.join("users.toml"))?,
            Some(Location::Sqlite(d.join("catalog.db"))),
        ),
        (None, None, None) => {
            let d = PathBuf::from(logarchive_server::config::DEFAULT_DATA);
            (
                UserDb::open(d.join("users.toml"))?,
                Some(Location::Sqlite(d.join("catalog.db"))),
            )
        }
    };
    let path = db.location();
    let record = |action: &'static str, name: &str, detail: String| {
        let Some(at) = &trail else { return };
        let event = Event::now(&os_user(), Via::Cli, None, action, name, detail);
        let written = audit::write_now(at, &audit::server_name(None), &[event]);
        if let Err(e) = written {
            eprintln!("warning: done, but not recorded in the audit trail: {e}");
        }
    };
    match args.action {
        Action::Add {
            name,
            role,
            home,
            rights,
            upload_limit,
            download_limit,
            allowed_ips,
            web_role,
            tls_required,
            password_stdin,
        } => {
            let (preset_home, preset_rights, preset_web) = role.preset(&name);
            if db.get(&name).is_some() {
                bail!("user {name:?} already exists in {path}");
            }
            let password = read_password(password_stdin, true)?;
            db.add(NewUser {
                name: name.clone(),
                password,
                home: home.unwrap_or(preset_home),
                rights: rights.unwrap_or(preset_rights),
                upload_limit: upload_limit.unwrap_or_default(),
                download_limit: download_limit.unwrap_or_default(),
                allowed_ips,
                web_role: web_role.unwrap_or(preset_web),
                tls_required,
            })?;
            if let Some(r) = db.get(&name) {
                record("account.add", &name, audit::describe_new(&r));
            }
            println!("added {name}");
        }
        Action::Remove { name } => {
            db.remove(&name)?;
            record("account.remove", &name, String::new());
            println!("removed {name}");
        }
        Action::List => {
            println!(
                "{:<20} {:<8} {:<7} {:<20} {:<14} {:<14} RIGHTS",
                "NAME", "ENABLED", "WEB", "HOME", "UPLOAD", "DOWNLOAD"
            );
            for (name, r) in db.list() {
                println!(
                    "{:<20} {:<8} {:<7} {:<20} {:<14} {:<14} {}{}",
                    name,
                    if r.enabled { "yes" } else { "no" },
                    r.web_role.to_string(),
                    r.home,
                    r.upload_limit.to_string(),
                    r.download_limit.to_string(),
                    r.rights,
                    if r.allowed_ips.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (from {})",
                            r.allowed_ips
                                .iter()
                                .map(|n| n.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    }
                );
            }
        }
        Action::Passwd {
            name,
            password_stdin,
        } => {
            if db.get(&name).is_none() {
                bail!("no user {name:?} in {path}");
            }
            let password = read_password(password_stdin, true)?;
            db.update(
                &name,
                UserUpdate {
                    password: Some(password),
                    ..Default::default()
                },
            )?;
            record("account.password", &name, "set with logarchive user".into());
            println!("password of {name} changed");
        }
        Action::Set {
            name,
            rights,
            enabled,
            home,
            upload_limit,
            download_limit,
            allowed_ips,
            web_role,
            tls_required,
        } => {
            let allowed_ips = match allowed_ips {
                None => None,
                Some(s) if s.trim().is_empty() => Some(vec![]),
                Some(s) => Some(
                    s.split(',')
                        .map(|p| {
                            p.trim()
                                .parse::<ipnet::IpNet>()
                                .map_err(|e| anyhow::anyhow!("invalid network {p:?}: {e}"))
                        })
                        .collect::<Result<Vec<_>>>()?,
                ),
            };
            let before = db.get(&name);
            let r = db.update(
                &name,
                UserUpdate {
                    password: None,
                    home,
                    rights,
                    upload_limit,
                    download_limit,
                    allowed_ips,
                    enabled,
                    web_role,
                    tls_required,
                },
            )?;
            if let Some(before) = before {
                record("account.change", &name, audit::describe_change(&before, &r));
            }
            println!(
                "{name}: enabled={} home={} rights={} upload={} download={} web={}",
                r.enabled, r.home, r.rights, r.upload_limit, r.download_limit, r.web_role
            );
        }
    }
    Ok(())
}

/// Who runs the command, as the audit trail names them (with `via` = `cli`): the account behind
/// `sudo`, else the login name, else the numeric user id.
fn os_user() -> String {
    let name = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|s| !s.is_empty());
    match name {
        Some(n) => n,
        None => format!("uid {}", rustix::process::getuid().as_raw()),
    }
}
