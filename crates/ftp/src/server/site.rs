//! logarchive's SITE commands (see [`crate::site`] for their arguments).
//!
//! - `SITE SHA256 path` → `213 <hex>`: the SHA-256 of a file (remembered from its upload).
//! - `SITE ALIAS path name` → `200`: a local name the file had, for the catalog.
//! - `SITE COMMIT temp final sha256` → `250`: the server half of the verified upload. The
//!   temporary upload is renamed to its final name only if its SHA-256 is the one the client
//!   computed, and never onto an existing file: `250 Committed`, `250 Already present` (the final
//!   name held exactly these bytes; the temporary file is removed), `553 Exists <size>` (it held
//!   other bytes: nothing changed), `554 Mismatch <hex>` (the upload is not what the client sent:
//!   nothing renamed). One round trip instead of SITE SHA256, RNFR and RNTO.

use super::control::{refuse, Control};
use super::events::FtpEvent;
use super::files::store_error;
use super::reply::Reply;
use crate::names::{is_temp_name, SCRATCH_DIR};
use crate::rights::Right;
use std::io;

impl Control {
    pub(crate) async fn site(&mut self, verb: &str, args: &str) -> Reply {
        match verb {
            "SHA256" => self.site_sha256(args).await,
            "ALIAS" => self.site_alias(args).await,
            "COMMIT" => self.site_commit(args).await,
            "HELP" => Reply::multi(
                214,
                vec![
                    "SITE commands:".into(),
                    "SHA256 <path>".into(),
                    "ALIAS <path> <name> (both %-encoded)".into(),
                    "COMMIT <temporary> <final> <sha256> (paths %-encoded)".into(),
                    "End".into(),
                ],
            ),
            _ => refuse(502, "Unknown SITE command"),
        }
    }

    async fn site_sha256(&mut self, arg: &str) -> Reply {
        let a = match self.account() {
            Ok(a) => a,
            Err(r) => return r,
        };
        if !a.rights.contains(Right::List) && !a.rights.contains(Right::Read) {
            return refuse(550, "Permission denied");
        }
        if arg.is_empty() {
            return refuse(501, "SITE SHA256 needs a path");
        }
        let (_, store) = match self.resolve_settled(arg).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        match self.shared.store.sha256(&store).await {
            Ok(h) => Reply::new(213, h.hex()),
            Err(e) => store_error(&e),
        }
    }

    async fn site_alias(&mut self, args: &str) -> Reply {
        let a = match self.account() {
            Ok(a) => a,
            Err(r) => return r,
        };
        if !a.rights.contains(Right::Write) && !a.rights.contains(Right::Append) {
            return refuse(550, "Permission denied");
        }
        let mut parts = args.split_whitespace();
        let (Some(path), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return refuse(501, "SITE ALIAS needs a path and a name");
        };
        let (Some(path), Some(name)) = (crate::site::decode(path), crate::site::decode(name))
        else {
            return refuse(501, "Bad %-escape in SITE ALIAS");
        };
        if name.is_empty()
            || name.len() > crate::site::MAX_ALIAS
            || name.chars().any(char::is_control)
        {
            return refuse(501, "SITE ALIAS needs a name without control characters");
        }
        let (_, store) = match self.resolve(&path) {
            Ok(x) => x,
            Err(r) => return r,
        };
        match self.shared.store.stat(&store).await {
            Ok(m) if m.is_file() => {
                self.emit(FtpEvent::Alias {
                    user: a.name.clone(),
                    path: store.display(),
                    name,
                });
                Reply::new(200, "Alias recorded")
            }
            Ok(_) => refuse(550, "Not a plain file"),
            Err(e) => store_error(&e),
        }
    }

    async fn site_commit(&mut self, args: &str) -> Reply {
        let a = match self.require(Right::Rename) {
            Ok(a) => a,
            Err(r) => return r,
        };
        let mut parts = args.split_whitespace();
        let (Some(temp), Some(fin), Some(want), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return refuse(
                501,
                "SITE COMMIT needs a temporary name, a final name and a SHA-256",
            );
        };
        let (Some(temp), Some(fin)) = (crate::site::decode(temp), crate::site::decode(fin)) else {
            return refuse(501, "Bad %-escape in SITE COMMIT");
        };
        let want = want.to_ascii_lowercase();
        if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
            return refuse(501, "SITE COMMIT needs a SHA-256 in hex");
        }
        let ((temp_in, temp), (fin_in, fin)) = match (self.resolve(&temp), self.resolve(&fin)) {
            (Ok(t), Ok(f)) => (t, f),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        if !temp_in.file_name().is_some_and(is_temp_name) || fin_in.is_root() {
            return refuse(
                553,
                "SITE COMMIT renames a temporary upload name to a final name",
            );
        }
        if fin_in.parts().first().is_some_and(|p| p == SCRATCH_DIR) {
            return refuse(553, "Not into the scratch folder");
        }
        let store = std::sync::Arc::clone(&self.shared.store);
        // No other upload of the temporary file may be running.
        let Some(_writing) = self
            .shared
            .inflight
            .write_within(&temp, super::transfers::BUSY_WAIT)
            .await
        else {
            return refuse(450, "The upload is still being written; try again");
        };
        let have = match store.sha256(&temp).await {
            Ok(h) => h,
            Err(e) => return store_error(&e),
        };
        // The final name first: the same bytes there already are a success.
        match store.stat(&fin).await {
            Ok(m) if m.is_file() => {
                return match store.sha256(&fin).await {
                    Ok(h) if h.hex() == want && have.hex() == want => {
                        let _ = store.remove_file(&temp).await;
                        Reply::new(250, "Already present")
                    }
                    Ok(_) => Reply::new(553, format!("Exists {}", m.size)),
                    Err(e) => store_error(&e),
                };
            }
            Ok(_) => return refuse(553, "The final name is a folder"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return store_error(&e),
        }
        if have.hex() != want {
            return Reply::new(554, format!("Mismatch {}", have.hex()));
        }
        match store.rename(&temp, &fin, false).await {
            Ok(m) => {
                self.emit(FtpEvent::Renamed {
                    user: a.name.clone(),
                    from: temp.display(),
                    to: fin.display(),
                    size: m.size,
                    sha256: Some(have.hex()),
                    from_temp: true,
                    addr: self.conn.peer,
                });
                Reply::new(250, "Committed")
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Someone else committed meanwhile: the same bytes count as done.
                match store.sha256(&fin).await {
                    Ok(h) if h.hex() == want => {
                        let _ = store.remove_file(&temp).await;
                        Reply::new(250, "Already present")
                    }
                    _ => Reply::new(553, "Exists"),
                }
            }
            Err(e) => store_error(&e),
        }
    }
}
