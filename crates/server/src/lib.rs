//! The archive server: the FTP service over the archive folder and the catalog of what it holds
//! (the web UI and JSON API are to come).

pub mod catalog;
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
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    #[error("cannot create data folder {path}: {source}")]
    Data {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The running archive server.
pub struct Running {
    pub ftp: ServerHandle,
    pub catalog: Arc<catalog::Catalog>,
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
    let catalog = Arc::new(catalog::Catalog::open(&settings.data.join("catalog.db"))?);
    let ftp = ftp::start(settings.ftp_config()?, Arc::clone(&users)).await?;
    follow_events(&ftp, Arc::clone(&catalog), settings.archive_dir());
    Ok(Running {
        ftp,
        catalog,
        users,
        initial_admin_password,
    })
}

/// Keeps the catalog in step with the FTP service: reconcile with the disk (at start, and when
/// events were lost because we fell behind), then apply every event.
fn follow_events(ftp: &ServerHandle, catalog: Arc<catalog::Catalog>, archive: std::path::PathBuf) {
    let mut events = ftp.subscribe();
    tokio::spawn(async move {
        let mut reconcile = true;
        loop {
            if std::mem::take(&mut reconcile) {
                let (c, a) = (Arc::clone(&catalog), archive.clone());
                match tokio::task::spawn_blocking(move || c.reconcile(&a)).await {
                    Ok(Ok((added, removed, updated))) => {
                        tracing::info!(
                            added,
                            removed,
                            updated,
                            "catalog reconciled with the archive"
                        )
                    }
                    Ok(Err(e)) => tracing::error!("{e}"),
                    Err(e) => tracing::error!("catalog reconcile: {e}"),
                }
            }
            match events.recv().await {
                Ok(ev) => {
                    let (c, a) = (Arc::clone(&catalog), archive.clone());
                    let applied = tokio::task::spawn_blocking(move || c.apply(&ev, &a)).await;
                    if let Ok(Err(e)) = applied {
                        tracing::error!("{e}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("catalog fell {n} events behind; reconciling with the archive");
                    reconcile = true;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}
