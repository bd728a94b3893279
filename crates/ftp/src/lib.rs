//! logarchive's embeddable FTP library.
//!
//! - [`users`]: the user record file and the [`users::UserDb`] admin API.
//! - [`server`]: an FTP(S) server with per-user homes, rights and speed limits, built on libunftp.
//! - [`rights`]: the FTP rights model.
//! - [`site`]: logarchive's `SITE` commands (SHA256, ALIAS).

pub mod client;
pub mod names;
pub mod rights;
pub mod server;
pub mod sha;
pub mod site;
pub mod users;

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    /// Parses an FTP path argument as the storage back-end does; on success returns the
    /// relative path it would open under the home, which must never climb out of it.
    pub fn virtual_path(bytes: &[u8]) -> Option<std::path::PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(bytes));
        crate::server::vpath::VirtualPath::parse(p)
            .ok()
            .map(|v| v.relative())
    }
}
