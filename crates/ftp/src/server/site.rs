//! `SITE SHA256 /path`: the SHA-256 of a file in the account's home, as `213 <hex>`. The agent
//! compares it with its own before it renames an upload to its final name. The path must be
//! absolute (from the home's root): libunftp does not pass the working directory to SITE handlers.

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
            Err(e) => match e.kind() {
                unftp_core::storage::ErrorKind::PermissionDenied => {
                    Reply::new(ReplyCode::FileError, "Permission denied")
                }
                unftp_core::storage::ErrorKind::LocalError => {
                    Reply::new(ReplyCode::LocalError, "Local error")
                }
                _ => Reply::new(ReplyCode::FileError, "File not available"),
            },
        }
    }
}
