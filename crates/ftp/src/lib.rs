#![deny(missing_docs)]
//! logarchive's embeddable FTP(S) library.
//!
//! Two halves, each a Cargo feature (both on by default):
//! - `server`: [`server`], an FTP(S) server with its own protocol engine: accounts behind the
//!   [`server::Accounts`] trait, per-account homes, [`rights`] and speed limits, a store behind the
//!   [`server::Storage`] trait ([`server::LocalStorage`]: a folder), logarchive's `SITE`
//!   commands. (logarchive keeps its accounts in a users file; that lives in its server crate.)
//! - `client`: [`client`], a client that reconnects, creates folders, resumes and uploads
//!   verified by SHA-256 (what the agent uses; it builds without the server's dependencies).
//!
//! Both sides share [`names`] (the archive's reserved names), [`sha`] (resumable SHA-256),
//! [`rate`] (speed limits) and [`site`] (the `SITE` extensions' arguments).
//!
//! A server embedded in a program of your own, with accounts kept in memory, is
//! `examples/embedded_server.rs`.

#[cfg(feature = "client")]
pub mod client;
pub mod names;
pub mod os;
pub mod rate;
#[cfg(feature = "server")]
pub mod rights;
#[cfg(feature = "server")]
pub mod server;
/// Resumable SHA-256 (the store's: `logarchive_store::sha`).
pub use logarchive_store::sha;
pub mod site;

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[cfg(feature = "server")]
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
