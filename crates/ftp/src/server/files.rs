//! File commands that need no data connection: folders (CWD, CDUP, MKD, RMD), DELE, renames
//! (RNFR, RNTO), metadata (SIZE, MDTM, MFMT, MLST, STAT), and the reply for a store error. The
//! transfers are in transfers.rs.

use super::command::Command;
use super::control::{refuse, Control, Flow};
use super::events::FtpEvent;
use super::listing::{self, kind_fact, mlst_facts};
use super::reply::{clean, quote_path, Reply};
use super::store::Meta;
use super::transfers::ListKind;
use super::vpath::VirtualPath;
use crate::names::{is_temp_name, SCRATCH_DIR};
use crate::rights::{Right, Rights};
use std::io;
use std::time::SystemTime;

/// The reply for a store error on `what`.
pub(crate) fn store_error(e: &io::Error) -> Reply {
    match e.kind() {
        io::ErrorKind::NotFound => refuse(550, "No such file or folder"),
        io::ErrorKind::PermissionDenied => refuse(550, "Permission denied"),
        io::ErrorKind::AlreadyExists => refuse(550, "Already exists"),
        io::ErrorKind::IsADirectory => refuse(550, "Not a plain file"),
        io::ErrorKind::NotADirectory => refuse(550, "Not a folder"),
        io::ErrorKind::DirectoryNotEmpty => refuse(550, "Folder not empty"),
        io::ErrorKind::InvalidInput => refuse(550, "Not possible there"),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            refuse(452, "Insufficient storage space")
        }
        // Another writer holds the file (another server sharing the archive): try again.
        io::ErrorKind::ResourceBusy => refuse(450, "File busy: being written elsewhere; try again"),
        // A service the store needs is away (the embedding program said so once): try again.
        io::ErrorKind::NotConnected => {
            tracing::debug!("store: {e}");
            refuse(451, "Service not available now; try again later")
        }
        _ if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) => {
            refuse(452, "Insufficient storage space")
        }
        _ => {
            tracing::warn!("store: {e}");
            refuse(451, "Local error")
        }
    }
}

/// A transfer the store failed in the middle of: out of space (452), or anything else (451:
/// try again later; an operator must look at the store). Never 550: the path was fine.
pub(crate) fn store_failed(e: &io::Error) -> Reply {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            refuse(452, "Insufficient storage space")
        }
        _ if storage_full(e) => refuse(452, "Insufficient storage space"),
        _ => {
            tracing::warn!("transfer failed in the store: {e}");
            refuse(451, "Local error: the store failed; try again later")
        }
    }
}

fn storage_full(e: &io::Error) -> bool {
    let os = e
        .get_ref()
        .and_then(|r| r.source())
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(|e| e.raw_os_error())
        .or(e.raw_os_error());
    os == Some(libc::ENOSPC) || os == Some(libc::EDQUOT)
}

/// Any of these rights lets an account see a path's metadata.
const SEE: [Right; 4] = [Right::List, Right::Read, Right::Write, Right::Append];

fn sees(rights: &Rights) -> bool {
    SEE.iter().any(|r| rights.contains(*r))
}

impl Control {
    pub(crate) async fn file_command(&mut self, cmd: Command) -> Flow {
        use Command as C;
        let r = match cmd {
            C::Cwd(p) => self.cwd(&p).await,
            C::Cdup => self.cwd("..").await,
            C::Mkd(p) => self.mkd(&p).await,
            C::Rmd(p) => self.rmd(&p).await,
            C::Dele(p) => self.dele(&p).await,
            C::Rnfr(p) => self.rnfr(&p).await,
            C::Rnto(p) => self.rnto(&p).await,
            C::Size(p) => self.size(&p).await,
            C::Mdtm(p) => self.mdtm(&p).await,
            C::Mfmt(t, p) => self.mfmt(&t, &p).await,
            C::Mlst(p) => self.mlst(p.as_deref()).await,
            C::Stat(p) => self.stat(p.as_deref()).await,
            C::Stor(_) | C::Appe(_) | C::Retr(_) | C::List(_) | C::Nlst(_) | C::Mlsd(_) => {
                let flow = match cmd {
                    C::Stor(p) => self.store(&p, false).await,
                    C::Appe(p) => self.store(&p, true).await,
                    C::Retr(p) => self.retrieve(&p).await,
                    C::List(p) => self.list(p.as_deref(), ListKind::List).await,
                    C::Nlst(p) => self.list(p.as_deref(), ListKind::Names).await,
                    C::Mlsd(p) => self.list(p.as_deref(), ListKind::Facts).await,
                    _ => Flow::Continue,
                };
                // A passive port serves one transfer command: refused or done, it is closed
                // (a data connection waiting on it for a refused upload is reset, unread).
                self.st.passive = None;
                return flow;
            }
            _ => refuse(502, "Not implemented"),
        };
        self.reply(r).await
    }

    /// Metadata of a path the account may see.
    async fn see(&self, arg: &str) -> Result<(VirtualPath, VirtualPath, Meta), Reply> {
        let a = self.account()?;
        if !sees(&a.rights) {
            return Err(refuse(550, "Permission denied"));
        }
        let (inside, store) = self.resolve(arg)?;
        let m = self
            .shared
            .store
            .stat(&store)
            .await
            .map_err(|e| store_error(&e))?;
        Ok((inside, store, m))
    }

    async fn cwd(&mut self, arg: &str) -> Reply {
        match self.see(arg).await {
            Ok((inside, _, m)) if m.is_dir() => {
                let r = Reply::new(
                    250,
                    format!("Folder is now {}", quote_path(&inside.display())),
                );
                self.st.cwd = inside;
                r
            }
            Ok(_) => refuse(550, "Not a folder"),
            Err(r) => r,
        }
    }

    async fn mkd(&mut self, arg: &str) -> Reply {
        if let Err(r) = self.require(Right::Mkdir) {
            return r;
        }
        let (inside, store) = match self.resolve(arg) {
            Ok(x) => x,
            Err(r) => return r,
        };
        if inside.is_root() {
            return refuse(550, "Already exists");
        }
        match self.shared.store.mkdir(&store).await {
            Ok(()) => {
                self.emit(FtpEvent::DirCreated {
                    user: self.user_name(),
                    path: store.display(),
                });
                Reply::new(257, format!("{} created", quote_path(&inside.display())))
            }
            Err(e) => store_error(&e),
        }
    }

    async fn rmd(&mut self, arg: &str) -> Reply {
        if let Err(r) = self.require(Right::Delete) {
            return r;
        }
        let (inside, store) = match self.resolve(arg) {
            Ok(x) => x,
            Err(r) => return r,
        };
        if inside.is_root() {
            return refuse(550, "Permission denied: the home folder stays");
        }
        match self.shared.store.remove_dir(&store).await {
            Ok(()) => {
                self.emit(FtpEvent::DirRemoved {
                    user: self.user_name(),
                    path: store.display(),
                    addr: self.conn.peer,
                });
                Reply::new(250, "Folder removed")
            }
            Err(e) => store_error(&e),
        }
    }

    async fn dele(&mut self, arg: &str) -> Reply {
        if let Err(r) = self.require(Right::Delete) {
            return r;
        }
        let (_, store) = match self.resolve(arg) {
            Ok(x) => x,
            Err(r) => return r,
        };
        match self.shared.store.remove_file(&store).await {
            Ok(()) => {
                self.emit(FtpEvent::Deleted {
                    user: self.user_name(),
                    path: store.display(),
                    addr: self.conn.peer,
                });
                Reply::new(250, "File removed")
            }
            Err(e) => store_error(&e),
        }
    }

    async fn rnfr(&mut self, arg: &str) -> Reply {
        if let Err(r) = self.require(Right::Rename) {
            return r;
        }
        let (inside, store) = match self.resolve(arg) {
            Ok(x) => x,
            Err(r) => return r,
        };
        if inside.is_root() {
            return refuse(550, "Permission denied: the home folder stays");
        }
        match self.shared.store.stat(&store).await {
            Ok(_) => {
                self.st.rnfr = Some((inside, store));
                Reply::new(350, "Ready for RNTO")
            }
            Err(e) => store_error(&e),
        }
    }

    async fn rnto(&mut self, arg: &str) -> Reply {
        let Some((from_inside, from)) = self.st.rnfr.take() else {
            return refuse(503, "RNFR first");
        };
        let a = match self.require(Right::Rename) {
            Ok(a) => a,
            Err(r) => return r,
        };
        let (to_inside, to) = match self.resolve(arg) {
            Ok(x) => x,
            Err(r) => return r,
        };
        if to_inside.is_root() {
            return refuse(553, "Cannot rename onto the home folder");
        }
        let from_meta = match self.shared.store.stat(&from).await {
            Ok(m) => m,
            Err(e) => return store_error(&e),
        };
        // Nothing moves into a scratch folder (`.logarchive`, an account's bookkeeping) from
        // elsewhere, whatever the rights: files there are rewritable, and the archive's record
        // of them would no longer hold.
        let in_scratch = |p: &VirtualPath| p.parts().iter().any(|p| p == SCRATCH_DIR);
        if in_scratch(&to_inside) && !in_scratch(&from_inside) {
            return refuse(
                550,
                "Permission denied: nothing may be moved into the scratch folder",
            );
        }
        // Without the delete right only a temporary upload (a file, not a folder named like
        // one) may be renamed.
        let from_temp = from_meta.is_file() && from_inside.file_name().is_some_and(is_temp_name);
        if !a.rights.contains(Right::Delete) && !from_temp {
            return refuse(550, "Permission denied: without the delete right only temporary upload names may be renamed");
        }
        let replace = a.rights.contains(Right::Overwrite);
        match self.shared.store.rename(&from, &to, replace).await {
            Ok(m) => {
                let sha256 = if m.is_file() {
                    self.shared.store.known_sha256(&to).await.map(|h| h.hex())
                } else {
                    None
                };
                self.emit(FtpEvent::Renamed {
                    user: self.user_name(),
                    from: from.display(),
                    to: to.display(),
                    size: m.size,
                    sha256,
                    from_temp,
                    addr: self.conn.peer,
                });
                Reply::new(250, "Renamed")
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => refuse(
                550,
                "Permission denied: the target exists and the account may not overwrite",
            ),
            Err(e) => store_error(&e),
        }
    }

    async fn size(&mut self, arg: &str) -> Reply {
        if let Err(r) = self.resolve_settled(arg).await {
            return r;
        }
        match self.see(arg).await {
            Ok((_, _, m)) if m.is_file() => Reply::new(213, m.size.to_string()),
            Ok(_) => refuse(550, "Not a plain file"),
            Err(r) => r,
        }
    }

    async fn mdtm(&mut self, arg: &str) -> Reply {
        match self.see(arg).await {
            Ok((_, _, m)) if m.is_file() => Reply::new(
                213,
                listing::ftp_time(m.modified.unwrap_or(SystemTime::UNIX_EPOCH)),
            ),
            Ok(_) => refuse(550, "Not a plain file"),
            Err(r) => r,
        }
    }

    async fn mfmt(&mut self, time: &str, arg: &str) -> Reply {
        let a = match self.account() {
            Ok(a) => a,
            Err(r) => return r,
        };
        if !a.rights.contains(Right::Write) && !a.rights.contains(Right::Overwrite) {
            return refuse(550, "Permission denied");
        }
        let Some(t) = listing::parse_ftp_time(time) else {
            return refuse(501, "MFMT needs a time as YYYYMMDDHHMMSS");
        };
        let (inside, store) = match self.resolve(arg) {
            Ok(x) => x,
            Err(r) => return r,
        };
        match self.shared.store.set_modified(&store, t).await {
            Ok(()) => Reply::new(
                213,
                format!(
                    "Modify={}; {}",
                    listing::ftp_time(t),
                    clean(&inside.display())
                ),
            ),
            Err(e) => store_error(&e),
        }
    }

    async fn mlst(&mut self, arg: Option<&str>) -> Reply {
        let arg = arg.unwrap_or(".");
        let (inside, _, m) = match self.see(arg).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let rights = self.account().map(|a| a.rights).unwrap_or_default();
        Reply::multi(
            250,
            vec![
                format!("Listing {}", clean(&inside.display())).into(),
                mlst_facts(
                    &clean(&inside.display()),
                    &m,
                    &rights,
                    self.st.facts,
                    kind_fact(&m),
                )
                .into(),
                "End".into(),
            ],
        )
    }

    /// `STAT path`: the listing over the control connection.
    async fn stat(&mut self, arg: Option<&str>) -> Reply {
        let Some(arg) = arg else {
            return Reply::multi(
                211,
                vec![
                    "logarchive FTP service status:".into(),
                    format!("Connected from {}", self.conn.peer).into(),
                    format!(
                        "Logged in as {}",
                        self.st.user.as_ref().map_or("nobody", |u| u.name.as_str())
                    )
                    .into(),
                    "End".into(),
                ],
            );
        };
        match self.listing(Some(arg), ListKind::List).await {
            Ok(text) => {
                let mut lines: Vec<std::borrow::Cow<'static, str>> =
                    vec![format!("Status of {}", clean(arg)).into()];
                lines.extend(
                    String::from_utf8_lossy(&text)
                        .lines()
                        .map(|l| std::borrow::Cow::Owned(l.to_string())),
                );
                lines.push("End".into());
                Reply::multi(213, lines)
            }
            Err(r) => r,
        }
    }

    pub(crate) fn user_name(&self) -> String {
        self.st
            .user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default()
    }

    pub(crate) fn emit(&self, e: FtpEvent) {
        self.shared.emit(e);
    }
}
