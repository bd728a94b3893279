//! The connections of the PostgreSQL metadata: a few threads, each owning one connection
//! (made when first needed, made again after it broke) and its prepared statements, run the
//! calls that async code hands them and wait for; transactions retried on conflict; errors
//! sorted into what the FTP engine understands.

use super::super::exists;
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, GenericClient, IsolationLevel, Row, Statement};
use std::collections::HashMap;
use std::io;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Threads (and connections) that run the calls.
const WORKERS: usize = 4;
/// Times a transaction is tried when PostgreSQL reports a conflict with another one.
const ATTEMPTS: u32 = 30;
/// How long after a failed connection calls fail at once.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// What a call can fail with inside: PostgreSQL's errors are sorted at the end (retry, map to
/// a kind), the metadata's own answers are final.
pub(super) enum E {
    Pg(postgres::Error),
    Io(io::Error),
}

impl From<postgres::Error> for E {
    fn from(e: postgres::Error) -> E {
        E::Pg(e)
    }
}

impl From<io::Error> for E {
    fn from(e: io::Error) -> E {
        E::Io(e)
    }
}

pub(super) type R<T> = Result<T, E>;

/// PostgreSQL not there to answer: refused, reset, closed, shutting down, starting up, out of
/// connections (SQLSTATE classes 08, 53, 57).
fn unavailable(e: &postgres::Error) -> bool {
    e.is_closed()
        || match e.code() {
            None => true,
            Some(c) => matches!(&c.code()[..2], "08" | "53" | "57"),
        }
}

fn conflict(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE) | Some(&SqlState::T_R_DEADLOCK_DETECTED)
    )
}

pub(super) fn io_error(e: E) -> io::Error {
    match e {
        E::Io(e) => e,
        E::Pg(e) if unavailable(&e) => io::Error::new(
            io::ErrorKind::NotConnected,
            format!("object store metadata (PostgreSQL) unavailable: {e}"),
        ),
        E::Pg(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => exists(),
        E::Pg(e) if conflict(&e) => io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!("object store metadata busy, try again: {e}"),
        ),
        E::Pg(e) => io::Error::other(format!("object store metadata (PostgreSQL): {e}")),
    }
}

/// One connection and its prepared statements (each prepared once, on first use).
pub(super) struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// Statements run on a connection or inside a transaction, prepared once per connection.
pub(super) struct Q<'a, C: GenericClient> {
    c: &'a mut C,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl<C: GenericClient> Q<'_, C> {
    fn statement(&mut self, sql: &'static str) -> R<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.c.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    pub(super) fn rows(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> R<Vec<Row>> {
        let st = self.statement(sql)?;
        Ok(self.c.query(&st, params)?)
    }

    pub(super) fn row(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> R<Option<Row>> {
        let st = self.statement(sql)?;
        Ok(self.c.query_opt(&st, params)?)
    }

    pub(super) fn exec(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> R<u64> {
        let st = self.statement(sql)?;
        Ok(self.c.execute(&st, params)?)
    }
}

impl Conn {
    pub(super) fn q(&mut self) -> Q<'_, Client> {
        Q {
            c: &mut self.client,
            statements: &mut self.statements,
        }
    }

    /// Runs `f` in one transaction at `level`, again while it conflicts with another.
    pub(super) fn tx<T>(
        &mut self,
        level: IsolationLevel,
        mut f: impl FnMut(&mut Q<'_, postgres::Transaction<'_>>) -> R<T>,
    ) -> R<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self
                .client
                .build_transaction()
                .isolation_level(level)
                .start()?;
            let mut q = Q {
                c: &mut tx,
                statements: &mut self.statements,
            };
            let r = f(&mut q).and_then(|v| {
                tx.commit()?;
                Ok(v)
            });
            match r {
                Err(E::Pg(e)) if conflict(&e) && attempt < ATTEMPTS => {
                    // Apart, so the same two do not meet again at once.
                    let ms = rand::random::<u64>() % (2 + 2 * attempt as u64);
                    std::thread::sleep(Duration::from_millis(ms));
                }
                r => return r,
            }
        }
    }

    /// A change: read committed, each statement seeing what committed before it; the rows it
    /// depends on are locked by the change itself (see the module above).
    pub(super) fn write<T>(
        &mut self,
        f: impl FnMut(&mut Q<'_, postgres::Transaction<'_>>) -> R<T>,
    ) -> R<T> {
        self.tx(IsolationLevel::ReadCommitted, f)
    }
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// A thread's connection, made when first needed and again after it broke.
struct Worker {
    /// How to connect, and the settings to connect with (the given ones, options added).
    pg: crate::s3::PgConnection,
    config: postgres::Config,
    conn: Option<Conn>,
    down_until: Arc<Mutex<Option<Instant>>>,
}

impl Worker {
    fn run<T>(&mut self, op: &mut dyn FnMut(&mut Conn) -> R<T>) -> io::Result<T> {
        for attempt in 0..2 {
            let fresh = self.conn.is_none();
            if fresh {
                match self.pg.connect_with(&self.config) {
                    Ok(client) => {
                        self.conn = Some(Conn {
                            client,
                            statements: HashMap::new(),
                        });
                    }
                    Err(e) => {
                        *lock(&self.down_until) = Some(Instant::now() + DOWN_FOR);
                        return Err(io_error(E::Pg(e)));
                    }
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            match op(conn) {
                Ok(v) => return Ok(v),
                Err(E::Pg(e)) if unavailable(&e) || conn.client.is_closed() => {
                    // A connection PostgreSQL dropped (a restart since its last use) is found
                    // broken by its first statement: nothing was done, try once on a new one.
                    self.conn = None;
                    if !fresh && attempt == 0 {
                        continue;
                    }
                    *lock(&self.down_until) = Some(Instant::now() + DOWN_FOR);
                    return Err(io_error(E::Pg(e)));
                }
                Err(e) => return Err(io_error(e)),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "object store metadata (PostgreSQL) unavailable",
        ))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The metadata in PostgreSQL.
pub(crate) struct PgMeta {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    down_until: Arc<Mutex<Option<Instant>>>,
    what: String,
}

impl std::fmt::Debug for PgMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMeta").field("db", &self.what).finish()
    }
}

impl Drop for PgMeta {
    fn drop(&mut self) {
        // The workers end when the queue closes, each closing its connection on its own
        // thread.
        lock(&self.jobs).take();
    }
}

impl PgMeta {
    /// Starts the workers and checks that the tables are there (the server's migrations make
    /// them). PostgreSQL unreachable now is no error: calls fail until it answers.
    pub(crate) fn open(pg: &crate::s3::PgConnection) -> io::Result<PgMeta> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let down_until = Arc::new(Mutex::new(None));
        // Every query here finds rows by an index, and joins row by row in the order written
        // (a path lookup from the root down). While a new archive's tables are young their
        // statistics say "empty", and PostgreSQL would scan or hash them whole, or start a
        // path's join at its last name (measured: 1 to 4.5 ms per path lookup at 6,000 files
        // instead of 0.03 ms) until autovacuum analyzes them, a minute or more later.
        let mut config = pg.config().clone();
        let options = config.get_options().unwrap_or("").to_string();
        config.options(&format!(
            "{options} -c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off \
             -c join_collapse_limit=1"
        ));
        for i in 0..WORKERS {
            let rx = Arc::clone(&rx);
            let mut w = Worker {
                pg: pg.clone(),
                config: config.clone(),
                conn: None,
                down_until: Arc::clone(&down_until),
            };
            std::thread::Builder::new()
                .name(format!("s3-meta-pg-{i}"))
                .spawn(move || loop {
                    let job = lock(&rx).recv();
                    match job {
                        Ok(job) => job(&mut w),
                        Err(_) => return,
                    }
                })?;
        }
        let what = format!(
            "{:?}/{}",
            config.get_hosts(),
            config.get_dbname().unwrap_or("")
        );
        let meta = PgMeta {
            jobs: Mutex::new(Some(tx)),
            down_until,
            what,
        };
        match meta.call(|c| {
            c.q()
                .row("SELECT id FROM s3_node WHERE id = 1", &[])
                .map(|_| ())
        }) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{e} (the server creates these tables when it starts)"),
                ))
            }
            Ok(()) => {}
        }
        Ok(meta)
    }

    /// Runs `op` on a worker's connection and waits for it.
    pub(super) fn call<T: Send + 'static>(
        &self,
        mut op: impl FnMut(&mut Conn) -> R<T> + Send + 'static,
    ) -> io::Result<T> {
        if lock(&self.down_until).is_some_and(|t| Instant::now() < t) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "object store metadata (PostgreSQL) unavailable",
            ));
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |w: &mut Worker| {
            let _ = reply.send(w.run(&mut op));
        });
        lock(&self.jobs)
            .as_ref()
            .ok_or_else(|| io::Error::other("object store metadata closed"))?
            .send(job)
            .map_err(|_| io::Error::other("object store metadata closed"))?;
        answer
            .recv()
            .map_err(|_| io::Error::other("object store metadata worker ended"))?
    }
}
