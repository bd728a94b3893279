//! Where the trail is kept: its table in SQLite (made here) or PostgreSQL (a schema step of
//! `crate::pg`), the statements both run, and the copy from one to the other.

use super::{AuditRow, Event, Query, Result, MAX_ROWS};
use crate::catalog::{like_escape, Location};
use crate::pg::OneClient;
use std::sync::Mutex;
use std::time::Duration;

/// Longest text kept in one field (a hostile user name or path does not grow the table).
const MAX_FIELD: usize = 1024;

/// Cut to [`MAX_FIELD`] bytes at a character boundary.
fn bounded(s: &str) -> &str {
    if s.len() <= MAX_FIELD {
        return s;
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The SQL both databases run (their placeholders differ: `?N` and `$N`).
struct Sql {
    text: String,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

fn select(q: &Query, placeholder: fn(usize) -> String) -> Sql {
    let mut text = String::from(
        "SELECT id, at_ms, server, actor, via, ip, action, target, detail FROM audit WHERE 1=1",
    );
    let mut args = Vec::new();
    let mut add = |cond: &str, a: Arg| {
        args.push(a);
        text.push_str(&cond.replace('#', &placeholder(args.len())));
    };
    if let Some(b) = q.before {
        add(" AND id < #", Arg::Int(b));
    }
    if let Some(a) = q.actor.as_deref().filter(|s| !s.is_empty()) {
        add(" AND actor = #", Arg::Text(a.to_string()));
    }
    if let Some(a) = q.action.as_deref().filter(|s| !s.is_empty()) {
        if a.contains('.') {
            add(" AND action = #", Arg::Text(a.to_string()));
        } else {
            add(
                " AND action LIKE # ESCAPE '\\'",
                Arg::Text(format!("{}.%", like_escape(a))),
            );
        }
    }
    if let Some(t) = q.target.as_deref().filter(|s| !s.is_empty()) {
        if t.ends_with('/') {
            add(
                " AND target LIKE # ESCAPE '\\'",
                Arg::Text(format!("{}%", like_escape(t))),
            );
        } else {
            add(" AND target = #", Arg::Text(t.to_string()));
        }
    }
    add(
        " ORDER BY id DESC LIMIT #",
        Arg::Int(q.limit.clamp(1, MAX_ROWS) as i64),
    );
    Sql { text, args }
}

/// RFC 3339 in UTC, to the millisecond.
fn rfc3339(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The table in SQLite (PostgreSQL's is a migration step of `crate::pg`).
const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        server TEXT NOT NULL,
        actor TEXT NOT NULL,
        via TEXT NOT NULL,
        ip TEXT,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS audit_at ON audit(at_ms);
    CREATE INDEX IF NOT EXISTS audit_actor ON audit(actor, id);
    CREATE INDEX IF NOT EXISTS audit_target ON audit(target, id);";

/// Where the trail is kept.
pub(super) enum Db {
    Sqlite(Mutex<rusqlite::Connection>),
    Postgres(Box<OneClient>),
}

impl Db {
    pub(super) fn open(at: &Location) -> Result<Db> {
        match at {
            Location::Sqlite(path) => {
                let c = rusqlite::Connection::open(path)?;
                c.busy_timeout(Duration::from_secs(5))?;
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.execute_batch(SQLITE_SCHEMA)?;
                Ok(Db::Sqlite(Mutex::new(c)))
            }
            Location::Postgres(pg) => {
                let c = OneClient::connect(pg)?;
                c.migrate()?;
                Ok(Db::Postgres(Box::new(c)))
            }
        }
    }

    pub(super) fn insert(&self, server: &str, events: &[Event]) -> Result<()> {
        let fields = |e: &Event| {
            (
                bounded(&e.actor).to_string(),
                e.ip.map(|ip| ip.to_string()),
                bounded(&e.target).to_string(),
                bounded(&e.detail).to_string(),
            )
        };
        match self {
            Db::Sqlite(c) => {
                let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
                let tx = c.transaction()?;
                {
                    let mut st = tx.prepare_cached(
                        "INSERT INTO audit (at_ms, server, actor, via, ip, action, target, detail)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?;
                    for e in events {
                        let (actor, ip, target, detail) = fields(e);
                        st.execute(rusqlite::params![
                            e.at_ms,
                            server,
                            actor,
                            e.via.as_str(),
                            ip,
                            e.action,
                            target,
                            detail
                        ])?;
                    }
                }
                tx.commit()?;
                Ok(())
            }
            Db::Postgres(c) => c.run(|c| {
                let mut tx = c.transaction()?;
                let st = tx.prepare(
                    "INSERT INTO audit (at_ms, server, actor, via, ip, action, target, detail)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )?;
                for e in events {
                    let (actor, ip, target, detail) = fields(e);
                    tx.execute(
                        &st,
                        &[
                            &e.at_ms,
                            &server,
                            &actor,
                            &e.via.as_str(),
                            &ip,
                            &e.action,
                            &target,
                            &detail,
                        ],
                    )?;
                }
                tx.commit()
            }),
        }
    }

    pub(super) fn query(&self, q: &Query) -> Result<Vec<AuditRow>> {
        match self {
            Db::Sqlite(c) => {
                let sql = select(q, |i| format!("?{i}"));
                let c = c.lock().unwrap_or_else(|p| p.into_inner());
                let mut st = c.prepare(&sql.text)?;
                let args: Vec<&dyn rusqlite::ToSql> = sql
                    .args
                    .iter()
                    .map(|a| match a {
                        Arg::Text(s) => s as &dyn rusqlite::ToSql,
                        Arg::Int(i) => i as &dyn rusqlite::ToSql,
                    })
                    .collect();
                let rows = st.query_map(args.as_slice(), |r| {
                    let at_ms = r.get(1)?;
                    Ok(AuditRow {
                        id: r.get(0)?,
                        at: rfc3339(at_ms),
                        at_ms,
                        server: r.get(2)?,
                        actor: r.get(3)?,
                        via: r.get(4)?,
                        ip: r.get(5)?,
                        action: r.get(6)?,
                        target: r.get(7)?,
                        detail: r.get(8)?,
                    })
                })?;
                Ok(rows.collect::<std::result::Result<_, _>>()?)
            }
            Db::Postgres(c) => {
                let sql = select(q, |i| format!("${i}"));
                c.run(|c| {
                    let args: Vec<&(dyn postgres::types::ToSql + Sync)> = sql
                        .args
                        .iter()
                        .map(|a| match a {
                            Arg::Text(s) => s as &(dyn postgres::types::ToSql + Sync),
                            Arg::Int(i) => i as &(dyn postgres::types::ToSql + Sync),
                        })
                        .collect();
                    let rows = c.query(sql.text.as_str(), &args)?;
                    Ok(rows
                        .iter()
                        .map(|r| {
                            let at_ms = r.get(1);
                            AuditRow {
                                id: r.get(0),
                                at: rfc3339(at_ms),
                                at_ms,
                                server: r.get(2),
                                actor: r.get(3),
                                via: r.get(4),
                                ip: r.get(5),
                                action: r.get(6),
                                target: r.get(7),
                                detail: r.get(8),
                            }
                        })
                        .collect())
                })
            }
        }
    }

    /// Deletes rows recorded before `before_ms`; returns how many.
    pub(super) fn prune(&self, before_ms: i64) -> Result<u64> {
        match self {
            Db::Sqlite(c) => {
                let c = c.lock().unwrap_or_else(|p| p.into_inner());
                Ok(c.execute("DELETE FROM audit WHERE at_ms < ?1", [before_ms])? as u64)
            }
            Db::Postgres(c) => {
                c.run(|c| c.execute("DELETE FROM audit WHERE at_ms < $1", &[&before_ms]))
            }
        }
    }
}

/// Copies the trail of a SQLite catalog (`from`, a `DATA/catalog.db`) into the PostgreSQL
/// database of `to` (`archive migrate`): per recording server, the rows newer than the newest
/// the target holds from it, in pages of 10,000, each one transaction; so a second run, or a
/// run after an interrupted one, copies nothing twice. Returns the rows copied. Blocking.
pub fn copy_trail(from: &std::path::Path, to: &crate::pg::PgSettings) -> Result<u64> {
    const PAGE: i64 = 10_000;
    let source = rusqlite::Connection::open(from)?;
    source.busy_timeout(Duration::from_secs(5))?;
    source.execute_batch(SQLITE_SCHEMA)?;
    let target = OneClient::connect(to)?;
    target.migrate()?;
    let newest: std::collections::HashMap<String, i64> = target.run(|c| {
        Ok(
            c.query("SELECT server, MAX(at_ms) FROM audit GROUP BY server", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        )
    })?;
    let (mut after, mut copied) = (0i64, 0u64);
    loop {
        let mut st = source.prepare_cached(
            "SELECT id, at_ms, server, actor, via, ip, action, target, detail FROM audit \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        type Row = (
            i64,
            i64,
            String,
            String,
            String,
            Option<String>,
            String,
            String,
            String,
        );
        let page: Vec<Row> = st
            .query_map(rusqlite::params![after, PAGE], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })?
            .collect::<std::result::Result<_, _>>()?;
        let Some(last) = page.last() else {
            return Ok(copied);
        };
        after = last.0;
        let fresh: Vec<&Row> = page
            .iter()
            .filter(|r| newest.get(&r.2).is_none_or(|n| r.1 > *n))
            .collect();
        target.run(|c| {
            let mut tx = c.transaction()?;
            let st = tx.prepare(
                "INSERT INTO audit (at_ms, server, actor, via, ip, action, target, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )?;
            for r in &fresh {
                tx.execute(&st, &[&r.1, &r.2, &r.3, &r.4, &r.5, &r.6, &r.7, &r.8])?;
            }
            tx.commit()
        })?;
        copied += fresh.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Query;

    #[test]
    fn filters_become_one_statement_with_literal_patterns() {
        let q = Query {
            actor: Some("admin".into()),
            action: Some("account".into()),
            target: Some("/agent_01/".into()),
            before: Some(10),
            limit: 5000,
        };
        let s = select(&q, |i| format!("${i}"));
        assert!(s.text.contains("id < $1"));
        assert!(s.text.contains("actor = $2"));
        assert!(s.text.contains("action LIKE $3"));
        assert!(s.text.contains("target LIKE $4"));
        assert!(s.text.ends_with("LIMIT $5"));
        match &s.args[3] {
            Arg::Text(t) => assert_eq!(t, "/agent\\_01/%"),
            Arg::Int(_) => panic!("text expected"),
        }
        match &s.args[4] {
            Arg::Int(n) => assert_eq!(*n, MAX_ROWS as i64),
            Arg::Text(_) => panic!("a number expected"),
        }
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        let s = "é".repeat(MAX_FIELD);
        let b = bounded(&s);
        assert!(b.len() <= MAX_FIELD && b.len() >= MAX_FIELD - 1);
        assert!(s.starts_with(b));
    }
}
