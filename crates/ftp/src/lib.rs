//! logarchive's embeddable FTP library.
//!
//! - [`users`]: the user record file and the [`users::UserDb`] admin API.
//! - [`server`]: an FTP(S) server with per-user homes, rights and speed limits, built on libunftp.
//! - [`rights`]: the FTP rights model.

pub mod client;
pub mod rights;
pub mod server;
pub mod users;
