//! logarchive's SITE commands (see [`crate::site`]). Paths must be absolute (from the home's
//! root): libunftp does not pass the working directory to SITE handlers.
//!
//! - `SITE SHA256 /path`: the SHA-256 of a file in the account's home, as `213 <hex>`. The agent
//!   compares it with its own before it renames an upload to its final name.
//! - `SITE ALIAS /path name`: the local names a rotated log had, for the catalog.

use super::auth::FtpUser;
use super::storage::ArchiveStorage;
use async_trait::async_trait;
use libunftp::options::{Reply, ReplyCode, SiteCommandContext, SiteCommandHandler};

#[derive(Debug)]
pub(crate) struct Sha256Site;

#[async_trait]
impl SiteCommandHandler<ArchiveStorage, FtpUser> for Sha256Site {
    async fn handle(&self, ctx: &SiteCommandContext<ArchiveStorage, FtpUser>) -> Reply {
        let path = ctx.arguments.trim();
        if !path.starts_with('/') {
            return Reply::new(
                ReplyCode::ParameterSyntaxError,
                "SITE SHA256 needs an absolute path",
            );
        }
        let Some(user) = ctx.user.as_ref().as_ref() else {
            return Reply::new(ReplyCode::NotLoggedIn, "Please log in");
        };
        match ctx.storage.sha256(user, path).await {
            Ok(hex) => Reply::new(ReplyCode::FileStatus, &hex),
            Err(e) => storage_error(&e),
        }
    }
}

fn storage_error(e: &unftp_core::storage::Error) -> Reply {
    match e.kind() {
        unftp_core::storage::ErrorKind::PermissionDenied => {
            Reply::new(ReplyCode::FileError, "Permission denied")
        }
        unftp_core::storage::ErrorKind::LocalError => {
            Reply::new(ReplyCode::LocalError, "Local error")
        }
        _ => Reply::new(ReplyCode::FileError, "File not available"),
    }
}

#[derive(Debug)]
pub(crate) struct AliasSite;

#[async_trait]
impl SiteCommandHandler<ArchiveStorage, FtpUser> for AliasSite {
    async fn handle(&self, ctx: &SiteCommandContext<ArchiveStorage, FtpUser>) -> Reply {
        let mut args = ctx.arguments.split_whitespace();
        let (Some(path), Some(name), None) = (args.next(), args.next(), args.next()) else {
            return Reply::new(
                ReplyCode::ParameterSyntaxError,
                "SITE ALIAS needs a path and a name",
            );
        };
        let (Some(path), Some(name)) = (crate::site::decode(path), crate::site::decode(name))
        else {
            return Reply::new(
                ReplyCode::ParameterSyntaxError,
                "bad %-escape in SITE ALIAS",
            );
        };
        if !path.starts_with('/')
            || name.is_empty()
            || name.len() > crate::site::MAX_ALIAS
            || name.chars().any(char::is_control)
        {
            return Reply::new(
                ReplyCode::ParameterSyntaxError,
                "SITE ALIAS needs an absolute path and a name without control characters",
            );
        }
        let Some(user) = ctx.user.as_ref().as_ref() else {
            return Reply::new(ReplyCode::NotLoggedIn, "Please log in");
        };
        match ctx.storage.alias(user, &path, &name).await {
            Ok(()) => Reply::new(ReplyCode::CommandOkay, "Alias recorded"),
            Err(e) => storage_error(&e),
        }
    }
}
