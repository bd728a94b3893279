//! The accounts in PostgreSQL (`[catalog] url`): every server of the archive reads and changes
//! the same rows, so an account added, disabled or limited through one applies on all.
//!
//! Kept here: a change is read-modify-write of the rows in one transaction under an advisory
//! lock (no two changes interleave, whichever server or `logarchive user` makes them), bumps
//! `accounts_version` and sends `NOTIFY logarchive_accounts` in that transaction; a server
//! re-reads the rows when notified, when the version differs before a login, and once a second
//! regardless (the fallback when a notification is lost with a broken connection). Each row's
//! text is the account as `users.toml` writes it, read back through the same validation.

use super::db::{UserDbError, UsersFile};
use crate::catalog::PgSettings;
use crate::pg::{pg_error, OneClient};
use postgres::{Client, GenericClient};
use std::time::Duration;

/// The advisory lock of account changes ("accounts" in ASCII).
const ACCOUNTS_LOCK: i64 = 0x6163_636f_756e_7473;
/// The channel of change notifications.
pub(super) const CHANNEL: &str = "logarchive_accounts";

pub(super) struct PgAccounts {
    conn: OneClient,
}

impl std::fmt::Debug for PgAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAccounts")
            .field("url", &self.url())
            .finish()
    }
}

fn db_error(e: impl std::fmt::Display) -> UserDbError {
    UserDbError::Database(e.to_string())
}

fn pg(e: postgres::Error) -> UserDbError {
    db_error(pg_error(e))
}

impl PgAccounts {
    /// Connects, bringing the schema up to date (`logarchive user` may come before any
    /// server).
    pub(super) fn connect(settings: &PgSettings) -> Result<PgAccounts, UserDbError> {
        let conn = OneClient::connect(settings).map_err(db_error)?;
        conn.migrate().map_err(db_error)?;
        Ok(PgAccounts { conn })
    }

    /// Where the accounts are, for messages.
    pub(super) fn url(&self) -> &str {
        self.conn.settings().url()
    }

    fn run<T>(
        &self,
        op: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, UserDbError> {
        self.conn.run(op).map_err(db_error)
    }

    /// The version of the accounts (changes with every change).
    pub(super) fn version(&self) -> Result<i64, UserDbError> {
        self.run(|c| {
            Ok(c.query_one("SELECT version FROM accounts_version", &[])?
                .get(0))
        })
    }

    /// Every account and the version they are at.
    pub(super) fn load(&self) -> Result<(UsersFile, i64), UserDbError> {
        let (text, version) = self.run(|c| {
            let mut tx = c.build_transaction().read_only(true).start()?;
            let r = rows(&mut tx)?;
            tx.commit()?;
            Ok(r)
        })?;
        Ok((parse(&text)?, version))
    }

    /// Changes the accounts with `f` in one transaction (see the module comment), refusing a
    /// result with more than `may_lose` accounts fewer than before. Returns the accounts after.
    pub(super) fn modify(
        &self,
        may_lose: usize,
        f: impl FnOnce(&mut UsersFile) -> Result<(), UserDbError>,
    ) -> Result<(UsersFile, i64), UserDbError> {
        let mut g = self.conn.client().map_err(db_error)?;
        let c = g
            .as_mut()
            .ok_or_else(|| db_error("no connection to the accounts database"))?;
        let result = (|| {
            let mut tx = c.transaction().map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])
                .map_err(pg)?;
            let (text, _) = rows(&mut tx).map_err(pg)?;
            let before = parse(&text)?;
            let mut after = before.clone();
            f(&mut after)?;
            if after.users.len() + may_lose < before.users.len() {
                return Err(UserDbError::Invalid(format!(
                    "refusing to store {} accounts over the {} the database holds",
                    after.users.len(),
                    before.users.len()
                )));
            }
            write_changes(&mut tx, &before, &after)?;
            let version: i64 = tx
                .query_one(
                    "UPDATE accounts_version SET version = version + 1 RETURNING version",
                    &[],
                )
                .map_err(pg)?
                .get(0);
            tx.batch_execute(&format!("NOTIFY {CHANNEL}")).map_err(pg)?;
            tx.commit().map_err(pg)?;
            Ok((after, version))
        })();
        if c.is_closed() {
            *g = None;
        }
        result
    }

    /// Stores `file`'s accounts if the database holds none yet (a first start in PostgreSQL
    /// mode over a data folder with a users file). Whether it did.
    pub(super) fn import_if_empty(&self, file: &UsersFile) -> Result<bool, UserDbError> {
        let mut imported = false;
        self.modify(0, |accounts| {
            if accounts.users.is_empty() && !file.users.is_empty() {
                accounts.users = file.users.clone();
                imported = true;
            }
            Ok(())
        })?;
        Ok(imported)
    }

    /// A connection listening for change notifications; [`wait`] on it.
    pub(super) fn listener(&self) -> Result<Client, UserDbError> {
        let mut c = crate::pg::connect(self.conn.settings()).map_err(db_error)?;
        c.batch_execute(&format!("LISTEN {CHANNEL}")).map_err(pg)?;
        Ok(c)
    }
}

/// Waits up to `timeout` for a change notification on `listener`; `Err` when the connection
/// broke.
pub(super) fn wait(listener: &mut Client, timeout: Duration) -> Result<bool, UserDbError> {
    use postgres::fallible_iterator::FallibleIterator;
    let first = listener.notifications().timeout_iter(timeout).next();
    match first {
        Ok(Some(_)) => {
            // Drain what else came: one re-read answers them all.
            let mut n = listener.notifications();
            let mut rest = n.iter();
            while let Ok(Some(_)) = rest.next() {}
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(e) => Err(pg(e)),
    }
}

/// The rows as one users-file text, and the version.
fn rows(tx: &mut impl GenericClient) -> Result<(String, i64), postgres::Error> {
    let version: i64 = tx
        .query_one("SELECT version FROM accounts_version", &[])?
        .get(0);
    let mut text = String::new();
    for r in tx.query("SELECT record FROM accounts ORDER BY name", &[])? {
        text.push_str(r.get::<_, &str>(0));
        text.push('\n');
    }
    Ok((text, version))
}

fn parse(text: &str) -> Result<UsersFile, UserDbError> {
    UsersFile::parse(text).map_err(|m| db_error(format!("an account row is invalid: {m}")))
}

/// Writes the rows that differ between `before` and `after`.
fn write_changes(
    tx: &mut impl GenericClient,
    before: &UsersFile,
    after: &UsersFile,
) -> Result<(), UserDbError> {
    for name in before.users.keys() {
        if !after.users.contains_key(name) {
            tx.execute("DELETE FROM accounts WHERE name = $1", &[name])
                .map_err(pg)?;
        }
    }
    for (name, rec) in &after.users {
        if before.users.get(name) == Some(rec) {
            continue;
        }
        let one = UsersFile {
            users: std::iter::once((name.clone(), rec.clone())).collect(),
        };
        let text = toml::to_string(&one).map_err(db_error)?;
        if UsersFile::parse(&text).ok().as_ref() != Some(&one) {
            return Err(UserDbError::Invalid(format!(
                "account {name:?} would not read back as written; nothing was changed"
            )));
        }
        tx.execute(
            "INSERT INTO accounts (name, record) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET record = excluded.record",
            &[name, &text],
        )
        .map_err(pg)?;
    }
    Ok(())
}
