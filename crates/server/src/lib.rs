//! The archive server: the FTP service over the archive folder (and, later, catalog and web UI).

pub mod config;

use config::ServerSettings;
use logarchive_ftp::server::{self as ftp, ServerHandle};
use logarchive_ftp::users::{random_password, Role, UserDb};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Users(#[from] logarchive_ftp::users::UserDbError),
    #[error(transparent)]
    Ftp(#[from] ftp::FtpServerError),
    #[error("cannot create data folder {path}: {source}")]
    Data {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The running archive server.
pub struct Running {
    pub ftp: ServerHandle,
    pub users: Arc<UserDb>,
    /// Set when this start created the first admin account: its password, shown once.
    pub initial_admin_password: Option<String>,
}

/// Creates the data folder, makes the first admin account if there is none, and starts the
/// FTP service.
pub async fn start(settings: &ServerSettings) -> Result<Running, ServerError> {
    std::fs::create_dir_all(settings.archive_dir()).map_err(|source| ServerError::Data {
        path: settings.archive_dir(),
        source,
    })?;
    let users = UserDb::open(settings.users_file())?;
    let initial_admin_password = if users.is_empty() {
        let password = random_password();
        let (home, rights, web_role) = Role::Admin.preset("admin");
        users.add(logarchive_ftp::users::NewUser {
            name: "admin".into(),
            password: password.clone(),
            home,
            rights,
            upload_limit: Default::default(),
            download_limit: Default::default(),
            allowed_ips: vec![],
            web_role,
            tls_required: false,
        })?;
        Some(password)
    } else {
        None
    };
    let ftp = ftp::start(settings.ftp_config()?, Arc::clone(&users)).await?;
    Ok(Running {
        ftp,
        users,
        initial_admin_password,
    })
}
