//! User administration for the admin pages and the API, through the same `UserDb` as the CLI
//! and the FTP service (changes apply at once to new FTP sessions and to limits in flight).

use super::auth::Caller;
use super::error::WebError;
use super::WebState;
use crate::audit::{self, Event, Via};
use crate::users::{
    random_password, NewUser, Role, UserDb, UserDbError, UserRecord, UserUpdate, WebRole,
};
use logarchive_ftp::rate::ByteRate;
use logarchive_ftp::rights::Rights;
use serde::{Deserialize, Serialize};

/// An account as shown: never the password hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub name: String,
    pub home: String,
    /// e.g. `list,read,mkdir`
    pub rights: String,
    /// Bytes per second, 0 = unlimited.
    pub upload_limit: u64,
    pub download_limit: u64,
    pub allowed_ips: Vec<String>,
    pub enabled: bool,
    /// `none`, `viewer` or `admin`.
    pub web_role: String,
    pub tls_required: bool,
}

impl UserView {
    pub fn of(name: &str, r: &UserRecord) -> UserView {
        UserView {
            name: name.to_string(),
            home: r.home.clone(),
            rights: r.rights.to_string(),
            upload_limit: r.upload_limit.0,
            download_limit: r.download_limit.0,
            allowed_ips: r.allowed_ips.iter().map(|n| n.to_string()).collect(),
            enabled: r.enabled,
            web_role: r.web_role.to_string(),
            tls_required: r.tls_required,
        }
    }
}

/// Fields of an account as a form or JSON sends them; empty or missing = default (new account)
/// or unchanged (update). Numbers and lists are written as text (`2 MiB/s`, `10.0.0.0/8, ::1`).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct UserForm {
    pub name: Option<String>,
    /// Preset for a new account: `agent`, `viewer` or `admin` (default `viewer`).
    pub role: Option<String>,
    /// Optional for a new account: a random one is made and returned once.
    pub password: Option<String>,
    pub home: Option<String>,
    pub rights: Option<String>,
    pub upload_limit: Option<String>,
    pub download_limit: Option<String>,
    pub allowed_ips: Option<String>,
    /// `true`/`false` (a checkbox sends `on`).
    pub enabled: Option<String>,
    pub web_role: Option<String>,
    pub tls_required: Option<String>,
    /// The CSRF token of a form post.
    pub csrf: Option<String>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn bad(e: impl std::fmt::Display) -> WebError {
    WebError::BadRequest(e.to_string())
}

fn parse_bool(s: &str) -> Result<bool, WebError> {
    match s {
        "true" | "on" | "1" | "yes" => Ok(true),
        "false" | "off" | "0" | "no" => Ok(false),
        _ => Err(bad(format!("not a yes/no value: {s:?}"))),
    }
}

fn parse_ips(s: &str) -> Result<Vec<ipnet::IpNet>, WebError> {
    s.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|n| {
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| bad(format!("not an address or CIDR network: {n:?}")))
        })
        .collect()
}

impl From<UserDbError> for WebError {
    fn from(e: UserDbError) -> Self {
        match e {
            UserDbError::Exists(_) => WebError::Conflict(e.to_string()),
            UserDbError::NotFound(_) => WebError::NotFound,
            UserDbError::Invalid(m) => WebError::BadRequest(m),
            other => WebError::Internal(other.to_string()),
        }
    }
}

/// Records in the audit trail what `by` did to the account `name`.
fn audited(st: &WebState, by: &Caller, action: &'static str, name: &str, detail: String) {
    st.audit.record(Event::now(
        &by.name,
        Via::Web,
        Some(by.ip),
        action,
        name,
        detail,
    ));
}

/// Creates an account (recorded in the audit trail as `by`'s); returns it and the password if
/// one was generated.
pub fn add(
    st: &WebState,
    by: &Caller,
    f: &UserForm,
) -> Result<(UserView, Option<String>), WebError> {
    let db: &UserDb = &st.users;
    let name = given(&f.name).ok_or_else(|| bad("a name is required"))?;
    let role: Role = given(&f.role).unwrap_or("viewer").parse().map_err(bad)?;
    let (home, rights, web_role) = role.preset(name);
    let generated = given(&f.password).is_none().then(random_password);
    let password = generated
        .clone()
        .or_else(|| f.password.clone())
        .unwrap_or_default();
    let new = NewUser {
        name: name.to_string(),
        password,
        home: given(&f.home).map(str::to_string).unwrap_or(home),
        rights: match given(&f.rights) {
            Some(r) => Rights::parse_list(r).map_err(bad)?,
            None => rights,
        },
        upload_limit: given(&f.upload_limit)
            .map(str::parse::<ByteRate>)
            .transpose()
            .map_err(bad)?
            .unwrap_or_default(),
        download_limit: given(&f.download_limit)
            .map(str::parse::<ByteRate>)
            .transpose()
            .map_err(bad)?
            .unwrap_or_default(),
        allowed_ips: given(&f.allowed_ips)
            .map(parse_ips)
            .transpose()?
            .unwrap_or_default(),
        web_role: match given(&f.web_role) {
            Some(w) => w.parse::<WebRole>().map_err(bad)?,
            None => web_role,
        },
        tls_required: given(&f.tls_required)
            .map(parse_bool)
            .transpose()?
            .unwrap_or(false),
    };
    db.add(new)?;
    let rec = db.get(name).ok_or(WebError::NotFound)?;
    audited(st, by, "account.add", name, audit::describe_new(&rec));
    Ok((UserView::of(name, &rec), generated))
}

/// Changes an account (fields left empty stay as they are) and applies it at once: a disabled
/// account loses its web and FTP sessions, one without web access its web sessions, a new
/// password ends every session opened with the old one except `keep` (the caller's own web
/// session, when they change their own password). Blocks (argon2 for a new password, the file
/// write).
pub fn update(
    st: &WebState,
    by: &Caller,
    name: &str,
    f: &UserForm,
    keep: Option<&str>,
) -> Result<UserView, WebError> {
    let change = UserUpdate {
        password: given(&f.password).map(str::to_string),
        home: given(&f.home).map(str::to_string),
        rights: given(&f.rights)
            .map(Rights::parse_list)
            .transpose()
            .map_err(bad)?,
        upload_limit: given(&f.upload_limit)
            .map(str::parse::<ByteRate>)
            .transpose()
            .map_err(bad)?,
        download_limit: given(&f.download_limit)
            .map(str::parse::<ByteRate>)
            .transpose()
            .map_err(bad)?,
        // An empty field clears the list only when sent explicitly (`allowed_ips=""` in JSON is
        // "unchanged"; use `any` to allow every address).
        allowed_ips: match given(&f.allowed_ips) {
            Some("any") => Some(vec![]),
            Some(s) => Some(parse_ips(s)?),
            None => None,
        },
        enabled: given(&f.enabled).map(parse_bool).transpose()?,
        web_role: given(&f.web_role)
            .map(str::parse::<WebRole>)
            .transpose()
            .map_err(bad)?,
        tls_required: given(&f.tls_required).map(parse_bool).transpose()?,
    };
    let new_password = change.password.is_some();
    let before = st.users.get(name);
    let rec = st.users.update(name, change)?;
    if let Some(before) = before {
        audited(
            st,
            by,
            "account.change",
            name,
            audit::describe_change(&before, &rec),
        );
    }
    if new_password {
        password_changed(st, name, &rec, keep);
    }
    if !rec.enabled {
        st.auth.close_sessions_of(name);
        st.ftp.disconnect_user(name);
    } else if rec.web_role == WebRole::None {
        st.auth.close_sessions_of(name);
    }
    Ok(UserView::of(name, &rec))
}

/// Removes an account, never the caller's own (`by`); its web and FTP sessions end at once.
pub fn remove(st: &WebState, by: &Caller, name: &str) -> Result<(), WebError> {
    if name == by.name {
        return Err(bad("you cannot remove your own account"));
    }
    st.users.remove(name)?;
    audited(st, by, "account.remove", name, String::new());
    st.auth.close_sessions_of(name);
    st.ftp.disconnect_user(name);
    Ok(())
}

/// Sets a new random password and returns it (shown once). The account's web and FTP sessions
/// end, except `keep` (the caller's own web session, when it is their own account).
pub fn reset_password(
    st: &WebState,
    by: &Caller,
    name: &str,
    keep: Option<&str>,
) -> Result<String, WebError> {
    let password = random_password();
    let rec = st.users.update(
        name,
        UserUpdate {
            password: Some(password.clone()),
            ..Default::default()
        },
    )?;
    audited(
        st,
        by,
        "account.password",
        name,
        "a new random password".into(),
    );
    password_changed(st, name, &rec, keep);
    Ok(password)
}

/// Ends the sessions opened with an account's old password, on both services. (Sessions also
/// check the password's stamp on every request or command, which covers changes made by the
/// CLI or by hand; this ends them at once.)
fn password_changed(st: &WebState, name: &str, rec: &UserRecord, keep: Option<&str>) {
    st.auth
        .password_changed(name, crate::users::credentials(&rec.password), keep);
    st.ftp.disconnect_user(name);
}

pub fn list(db: &UserDb) -> Vec<UserView> {
    db.list().iter().map(|(n, r)| UserView::of(n, r)).collect()
}
