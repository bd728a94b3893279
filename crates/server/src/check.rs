//! `logarchive server --check`: every problem the configuration would cause at start, found at
//! once and named by its key or file (a key the service user cannot read, a port in use), and
//! nothing changed on disk.

use crate::config::ServerSettings;
use crate::users::UserDb;

/// The problems found, one line each (empty: the server would start).
pub fn check(settings: &ServerSettings) -> Vec<String> {
    let mut problems = Vec::new();
    // The data folder, or the folder it would be created in, must take new files.
    if let Err((folder, e)) = logarchive_ftp::os::can_create_in(&settings.data) {
        problems.push(format!(
            "data {}: {} cannot be written: {e}",
            settings.data.display(),
            folder.display()
        ));
    }
    let users = settings.users_file();
    if users.exists() {
        if let Err(e) = UserDb::open(&users) {
            problems.push(e.to_string());
        }
    }
    let mut tls_problem = None;
    if let Some((cert, key)) = &settings.tls {
        if let Err(e) = logarchive_ftp::server::tls_server_config(cert, key) {
            problems.push(format!("tls_cert/tls_key: {e}"));
            tls_problem = Some(e.to_string());
        }
    }
    if let Err(e) = settings.ftp_config() {
        // The FTP configuration loads the same pair: its failure is told once.
        let e = e.to_string();
        if !tls_problem.is_some_and(|t| e.contains(&t)) {
            problems.push(e);
        }
    }
    if let Some(p) = crate::store::check(settings) {
        problems.push(p);
    }
    match settings.catalog_location() {
        Err(e) => problems.push(e.to_string()),
        // A thread of its own: the PostgreSQL client blocks on a runtime of its own, and
        // --check may run inside another.
        Ok(at) => {
            let probed = std::thread::scope(|s| {
                s.spawn(|| crate::catalog::probe(&at))
                    .join()
                    .unwrap_or_else(|_| {
                        Err(crate::catalog::CatalogError::Setup(
                            "the check panicked".into(),
                        ))
                    })
            });
            if let Err(e) = probed {
                problems.push(format!("[catalog] {e}"));
            }
        }
    }
    for (key, addr) in [
        ("ftp_listen", settings.ftp_listen),
        ("web_listen", settings.web_listen),
    ] {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            problems.push(format!("{key} {addr}: {e}"));
        }
    }
    problems
}
