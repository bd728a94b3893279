//! PostgreSQL (`[catalog] url`): where it is and how to log in ([`PgSettings`]), the schema and
//! its migrations, errors as the catalog's, and one reconnecting connection (`OneClient`) —
//! shared by the catalog (`catalog/postgres.rs`), the accounts (`users/pg.rs`), the web
//! sessions (`web/shared_sessions.rs`) and the path locks (`path_locks.rs`).
//!
//! Kept here: the schema's steps are versioned in `logarchive_migrations` and applied at start
//! under a transaction-scoped advisory lock, so servers starting together apply each once;
//! text columns compare bytewise (`COLLATE "C"`, as SQLite does: the path-range queries rely on
//! it); a password never comes from the URL.

use crate::catalog::CatalogError;
use crate::pg_tls::PgTls;
use postgres::{Client, NoTls};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

type Result<T> = std::result::Result<T, CatalogError>;

/// Where the PostgreSQL catalog is and how to log in.
#[derive(Clone)]
pub struct PgSettings {
    config: tokio_postgres::Config,
    /// The URL as given (it holds no password): for messages.
    url: String,
    /// With `sslmode=require` (or `verify-ca`, `verify-full`): every connection is TLS,
    /// verified (`crate::pg_tls`).
    tls: Option<PgTls>,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &self.url)
            .finish()
    }
}

impl PgSettings {
    /// From `[catalog] url` and `password_file` (else `PGPASSWORD`). A password inside the URL
    /// is refused: config files get shown and copied, password files get permissions.
    pub fn new(url: &str, password_file: Option<&Path>) -> Result<PgSettings> {
        let setup = |m: String| CatalogError::Setup(m);
        let (ours, root_cert) = crate::pg_tls::take_tls_words(url)
            .map_err(|e| setup(format!("[catalog] url {url:?}: {e}")))?;
        let mut config: tokio_postgres::Config = ours
            .parse()
            .map_err(|e| setup(format!("[catalog] url {url:?}: {e}")))?;
        if config.get_password().is_some() {
            return Err(setup(
                "[catalog] url holds a password: put it in password_file (or PGPASSWORD) instead"
                    .into(),
            ));
        }
        // TLS only when asked for: tokio-postgres's default (`prefer`) would otherwise try it
        // with every server, and fail on one whose certificate we cannot verify.
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Require => Some(
                PgTls::new(root_cert.as_deref().map(Path::new))
                    .map_err(|e| setup(format!("[catalog] url {url:?}: TLS: {e}")))?,
            ),
            _ if root_cert.is_some() => {
                return Err(setup(format!(
                    "[catalog] url {url:?} names sslrootcert without sslmode=verify-full (or \
                     require): add it, or TLS is not used"
                )))
            }
            _ => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
        };
        let password = match password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| setup(format!("[catalog] password_file {}: {e}", p.display())))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            None => std::env::var("PGPASSWORD").ok(),
        };
        if let Some(p) = password {
            config.password(p.as_bytes());
        }
        if config.get_user().is_none() {
            config.user("logarchive");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A server that vanished (no RST) is noticed in seconds, not at TCP's 15 minutes.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            // A request that gets no acknowledgement for 5 s fails (the web answers 503)
            // rather than hang for TCP's minutes.
            .tcp_user_timeout(Duration::from_secs(5))
            .application_name("logarchive");
        Ok(PgSettings {
            config,
            url: url.to_string(),
            tls,
        })
    }

    /// The URL (without a password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connects with the blocking client.
    pub(crate) fn connect(&self) -> std::result::Result<Client, postgres::Error> {
        self.store_connection().connect()
    }

    /// Connects with the async client; the connection's task is `spawn`ed (its end is said
    /// at DEBUG: the next use of the client fails and says why).
    pub(crate) async fn connect_async(
        &self,
    ) -> std::result::Result<tokio_postgres::Client, tokio_postgres::Error> {
        async fn drive(
            c: impl std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>,
        ) {
            if let Err(e) = c.await {
                tracing::debug!("a PostgreSQL connection ended: {e}");
            }
        }
        match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
        }
    }

    /// How the store (S3 metadata) connects: these settings, with TLS if asked for.
    pub fn store_connection(&self) -> logarchive_store::s3::PgConnection {
        let config = postgres::Config::from(self.config.clone());
        match self.tls.clone() {
            Some(tls) => {
                logarchive_store::s3::PgConnection::new(config, move |c| c.connect(tls.clone()))
            }
            None => logarchive_store::s3::PgConnection::plain(config),
        }
    }

    /// Whether connections are TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// The schema, one step per version; never edit a step that has shipped, add one.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "files, folders, local names",
        r#"
    CREATE TABLE files (
        id BIGSERIAL PRIMARY KEY,
        path TEXT COLLATE "C" NOT NULL UNIQUE,
        dir TEXT COLLATE "C" NOT NULL,
        name TEXT COLLATE "C" NOT NULL,
        agent TEXT COLLATE "C" NOT NULL,
        size BIGINT NOT NULL,
        sha256 TEXT,
        modified_ms BIGINT NOT NULL,
        archived_ms BIGINT NOT NULL,
        appended_ms BIGINT
    );
    -- Folder listings read only this index, in name order.
    CREATE INDEX files_dir_listing ON files (dir, name)
        INCLUDE (path, agent, size, sha256, modified_ms, archived_ms, appended_ms);
    CREATE INDEX files_agent ON files (agent, archived_ms);
    CREATE INDEX files_archived ON files (archived_ms);
    -- Substring search on names, any case.
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX files_name_trgm ON files USING gin (lower(name) gin_trgm_ops);
    CREATE TABLE dirs (
        path TEXT COLLATE "C" PRIMARY KEY,
        parent TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX dirs_parent ON dirs (parent, path);
    CREATE TABLE aliases (
        path TEXT COLLATE "C" NOT NULL,
        name TEXT COLLATE "C" NOT NULL,
        base TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (path, name)
    );
    CREATE INDEX aliases_base ON aliases (base);
    "#,
    ),
    (
        "accounts",
        r#"
    -- One row per account: its text is the account as users.toml writes it (one [users.NAME]
    -- table), so both stores share one format and one validation.
    CREATE TABLE accounts (
        name TEXT COLLATE "C" PRIMARY KEY,
        record TEXT NOT NULL
    );
    -- Bumped by every change, with NOTIFY logarchive_accounts: servers re-read on either.
    CREATE TABLE accounts_version (
        one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
        version BIGINT NOT NULL
    );
    INSERT INTO accounts_version (version) VALUES (0);
    "#,
    ),
    (
        "web sessions",
        r#"
    -- A web session is valid on every server: `key` is the SHA-256 of its token (the table
    -- never holds a usable token), `credentials` the account's password stamp at login.
    CREATE TABLE web_sessions (
        key BYTEA PRIMARY KEY,
        username TEXT COLLATE "C" NOT NULL,
        csrf TEXT NOT NULL,
        credentials BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL
    );
    CREATE INDEX web_sessions_user ON web_sessions (username);
    CREATE INDEX web_sessions_expires ON web_sessions (expires_ms);
    "#,
    ),
    (
        "object store metadata",
        // The S3 back-end's tree, segment maps and garbage: its own crate's schema.
        logarchive_store::s3::POSTGRES_SCHEMA,
    ),
    (
        "login outcomes",
        r#"
    -- Each server's login outcomes (FTP and web), so every server's lockout counts them all
    -- (`shared_lockouts.rs`); rows older than the lockout window are deleted.
    CREATE TABLE login_events (
        id BIGSERIAL PRIMARY KEY,
        server BIGINT NOT NULL,
        service TEXT NOT NULL,
        name TEXT NOT NULL,
        ip TEXT NOT NULL,
        success BOOLEAN NOT NULL,
        at_ms BIGINT NOT NULL
    );
    CREATE INDEX login_events_at ON login_events (at_ms);
    "#,
    ),
    (
        "audit trail",
        r#"
    -- Who changed what, through which server (`audit/`); rows older than `[audit] keep`
    -- are deleted.
    CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        server TEXT NOT NULL,
        actor TEXT NOT NULL,
        via TEXT NOT NULL,
        ip TEXT,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit (at_ms);
    CREATE INDEX audit_actor ON audit (actor, id);
    CREATE INDEX audit_target ON audit (target text_pattern_ops, id);
    "#,
    ),
];

/// The advisory lock migrations hold (any fixed number; "logarchv" in ASCII).
const MIGRATION_LOCK: i64 = 0x6c6f_6761_7263_6876;

/// A PostgreSQL error as the catalog's: the server's answers about the request as they are;
/// what says the server is not there to answer (refused, reset, timed out, closed, shutting
/// down, starting up, out of connections: SQLSTATE classes 08, 53 and 57) as "unavailable",
/// which clears by itself.
pub(crate) fn pg_error(e: postgres::Error) -> CatalogError {
    let transient = match e.code() {
        // A certificate refused (or a TLS misconfiguration) stays so until someone acts.
        None if tls_refusal(&e) => false,
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            e.is_closed() || matches!(class, "08" | "53" | "57")
        }
    };
    if transient {
        CatalogError::Unavailable(e.to_string())
    } else {
        CatalogError::Postgres(e)
    }
}

/// Whether `e` is TLS refusing the server (its certificate, its protocol), not the network.
fn tls_refusal(e: &postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        // (An io::Error's source skips the error it wraps: look inside it.)
        let inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        if [Some(s), inner]
            .into_iter()
            .flatten()
            .any(|e| e.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// A connection of its own (an accounts' listener, a reconnect). The schema is the business
/// of whoever opens a store first ([`OneClient::migrate`], the catalog's connect).
pub(crate) fn connect(settings: &PgSettings) -> Result<Client> {
    settings.connect().map_err(|e| connect_error(settings, e))
}

/// One connection of its own (accounts, web sessions), made again when it broke; closed on a
/// thread of its own (closing blocks on the client's runtime, which an async thread may not).
pub(crate) struct OneClient {
    settings: PgSettings,
    conn: Mutex<Option<Client>>,
}

impl std::fmt::Debug for OneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneClient")
            .field("url", &self.settings.url)
            .finish()
    }
}

impl Drop for OneClient {
    fn drop(&mut self) {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(c) = conn {
            let _ = std::thread::Builder::new()
                .name("catalog-close".into())
                .spawn(move || drop(c));
        }
    }
}

impl OneClient {
    /// Connects now.
    pub(crate) fn connect(settings: &PgSettings) -> Result<OneClient> {
        Ok(OneClient {
            settings: settings.clone(),
            conn: Mutex::new(Some(connect(settings)?)),
        })
    }

    /// Brings the schema up to date (once per process that may be the first to use the
    /// database: a server's start, `logarchive user`).
    pub(crate) fn migrate(&self) -> Result<()> {
        self.run(migrate)
    }

    pub(crate) fn settings(&self) -> &PgSettings {
        &self.settings
    }

    /// The connection, made again first if it broke.
    pub(crate) fn client(&self) -> Result<std::sync::MutexGuard<'_, Option<Client>>> {
        let mut g = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_ref().is_none_or(|c| c.is_closed()) {
            *g = None;
            *g = Some(connect(&self.settings)?);
        }
        Ok(g)
    }

    /// Runs `op`; once more on a new connection if the old one turns out broken (the server
    /// restarted since it was last used). `op` must be harmless to repeat.
    pub(crate) fn run<T>(
        &self,
        mut op: impl FnMut(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        for attempt in 0..2 {
            let mut g = self.client()?;
            let Some(c) = g.as_mut() else { continue };
            match op(c) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let closed = c.is_closed();
                    let e = pg_error(e);
                    if closed || matches!(e, CatalogError::Unavailable(_)) {
                        *g = None;
                        if attempt == 0 {
                            continue;
                        }
                    }
                    return Err(e);
                }
            }
        }
        Err(CatalogError::Unavailable(
            "PostgreSQL does not answer".into(),
        ))
    }
}

/// A failed connection: unavailable (try later) or refused (fix the settings).
pub(crate) fn connect_error(settings: &PgSettings, e: postgres::Error) -> CatalogError {
    match pg_error(e) {
        CatalogError::Unavailable(m) => {
            CatalogError::Unavailable(format!("connecting to {}: {m}", settings.url))
        }
        CatalogError::Postgres(e) => CatalogError::Setup(format!(
            "connecting to the catalog at {}: {e}",
            settings.url
        )),
        e => CatalogError::Setup(format!(
            "connecting to the catalog at {}: {e}",
            settings.url
        )),
    }
}

/// Applies the steps of [`MIGRATIONS`] the database lacks, each once, whichever server gets
/// there first.
pub(crate) fn migrate(client: &mut Client) -> std::result::Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // "already exists, skipping" is no news at every connection.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS logarchive_migrations (
            version INTEGER PRIMARY KEY,
            what TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    let have: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM logarchive_migrations",
            &[],
        )?
        .get(0);
    for (i, (what, sql)) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if version <= have {
            continue;
        }
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO logarchive_migrations (version, what) VALUES ($1, $2)",
            &[&version, what],
        )?;
        tracing::info!(version, what, "catalog schema migrated");
    }
    tx.commit()?;
    if have > MIGRATIONS.len() as i32 {
        // A newer logarchive went first: its schema is a superset as long as its steps only
        // add; say so rather than refuse.
        tracing::warn!(
            "the catalog's schema is version {have}, newer than this logarchive's {}: \
             upgrade this server",
            MIGRATIONS.len()
        );
    }
    Ok(())
}
