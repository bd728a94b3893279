//! Web sessions in PostgreSQL (`[catalog] url`): a session opened on one server is valid on
//! every server of the archive, so a load balancer needs no stickiness; a logout, a disabled
//! account or a new password ends it everywhere. Only the SHA-256 of a token is stored.
//! Blocking calls (call them off the async threads).

use crate::catalog::{CatalogError, PgSettings};
use crate::pg::OneClient;
use std::time::{Duration, SystemTime};

/// The most sessions kept; beyond, the ones closest to their end go first.
const MAX_SESSIONS: i64 = 100_000;

pub struct SharedSessions {
    db: OneClient,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl SharedSessions {
    pub fn connect(settings: &PgSettings) -> Result<SharedSessions, CatalogError> {
        Ok(SharedSessions {
            db: OneClient::connect(settings)?,
        })
    }

    /// Stores a new session; now and then drops the expired ones and keeps the table bounded.
    pub fn insert(
        &self,
        key: &[u8; 32],
        user: &str,
        csrf: &str,
        credentials: u64,
        lifetime: Duration,
    ) -> Result<(), CatalogError> {
        let expires = now_ms() + lifetime.as_millis() as i64;
        let credentials = credentials as i64;
        self.db.run(|c| {
            c.execute(
                "INSERT INTO web_sessions (key, username, csrf, credentials, expires_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING",
                &[&&key[..], &user, &csrf, &credentials, &expires],
            )
        })?;
        if rand::random::<u8>() == 0 {
            self.prune()?;
        }
        Ok(())
    }

    fn prune(&self) -> Result<(), CatalogError> {
        let now = now_ms();
        self.db.run(|c| {
            c.execute("DELETE FROM web_sessions WHERE expires_ms <= $1", &[&now])?;
            c.execute(
                "DELETE FROM web_sessions WHERE key IN (SELECT key FROM web_sessions
                 ORDER BY expires_ms DESC OFFSET $1)",
                &[&MAX_SESSIONS],
            )
        })?;
        Ok(())
    }

    /// The live session `key` names: (user, csrf, credentials stamp).
    pub fn get(&self, key: &[u8; 32]) -> Result<Option<(String, String, u64)>, CatalogError> {
        let now = now_ms();
        let row = self.db.run(|c| {
            c.query_opt(
                "SELECT username, csrf, credentials FROM web_sessions
                 WHERE key = $1 AND expires_ms > $2",
                &[&&key[..], &now],
            )
        })?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64)))
    }

    pub fn remove(&self, key: &[u8; 32]) -> Result<(), CatalogError> {
        self.db
            .run(|c| c.execute("DELETE FROM web_sessions WHERE key = $1", &[&&key[..]]))?;
        Ok(())
    }

    pub fn remove_user(&self, user: &str) -> Result<(), CatalogError> {
        self.db
            .run(|c| c.execute("DELETE FROM web_sessions WHERE username = $1", &[&user]))?;
        Ok(())
    }

    /// Every session of `user` ends but `keep`, which takes the new stamp.
    pub fn password_changed(
        &self,
        user: &str,
        credentials: u64,
        keep: Option<&[u8; 32]>,
    ) -> Result<(), CatalogError> {
        let keep: Vec<u8> = keep.map(|k| k.to_vec()).unwrap_or_default();
        let credentials = credentials as i64;
        self.db.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "DELETE FROM web_sessions WHERE username = $1 AND key <> $2",
                &[&user, &keep],
            )?;
            tx.execute(
                "UPDATE web_sessions SET credentials = $3 WHERE username = $1 AND key = $2",
                &[&user, &keep, &credentials],
            )?;
            tx.commit()
        })?;
        Ok(())
    }
}
