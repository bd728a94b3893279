//! A real PostgreSQL for tests (feature `postgres-harness`): Debian's server binaries
//! (`/usr/lib/postgresql/*/bin`, or `$PG_BIN`), a cluster made by `initdb` in a temp folder,
//! listening on 127.0.0.1 at an OS-chosen port and on a socket in that folder. Not a mock: the
//! same server an operator runs, with password logins (SCRAM) over TCP.
//!
//! PostgreSQL refuses to run as root: under root the cluster belongs to, and runs as, `nobody`.
//! A small `sh` guard stops it (`pg_ctl stop -m immediate`) and removes the folder when the pipe
//! from this process closes: when the [`Postgres`] is dropped, and also when the test binary
//! dies.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

/// The role the catalog logs in as, and its password.
pub const ROLE: &str = "logarchive";
const PASSWORD: &str = "logarchive-test-password";

/// A running PostgreSQL cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// 127.0.0.1's port.
    pub port: u16,
    guard: Child,
    pipe: Option<ChildStdin>,
    /// TCP connections only over TLS, with this certificate and key (in the cluster's folder).
    tls: bool,
}

/// The uid/gid the cluster runs as when this process is root.
const NOBODY: u32 = 65534;

fn bin_dir() -> io::Result<PathBuf> {
    if let Some(b) = std::env::var_os("PG_BIN") {
        return Ok(b.into());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no PostgreSQL server under /usr/lib/postgresql: `apt-get install postgresql` \
             (or set PG_BIN to the folder of initdb and pg_ctl)",
        )
    })
}

impl Postgres {
    /// Makes a cluster and starts it (waiting until it accepts connections, at most 60 s),
    /// with the role [`ROLE`] and `pg_stat_statements`. Blocking.
    pub fn start() -> io::Result<Postgres> {
        Self::start_with(None)
    }

    /// [`Postgres::start`], taking TCP connections only over TLS with the PEM certificate
    /// `cert` and its key `key` (`hostssl` lines; a plain TCP connection is rejected). The
    /// Unix socket stays plain (the harness's own `psql`).
    pub fn start_tls(cert: &Path, key: &Path) -> io::Result<Postgres> {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> io::Result<Postgres> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("pg").tempdir()?;
        let root = rustix::process::geteuid().is_root();
        if root {
            chown(dir.path())?;
        }
        let pwfile = dir.path().join("superuser.pw");
        std::fs::write(&pwfile, "superuser-test-password\n")?;
        if root {
            chown(&pwfile)?;
        }
        std::fs::create_dir(dir.path().join("sock"))?;
        if root {
            chown(&dir.path().join("sock"))?;
        }
        let data = dir.path().join("data");
        run(as_cluster_owner(
            Command::new(bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8", "-N"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display())),
            root,
        ))?;
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
                let to = data.join(to);
                std::fs::copy(from, &to)?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
                if root {
                    chown(&to)?;
                }
            }
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )?;
        }
        // The guard: waits for its stdin to close, then stops the cluster and removes it all.
        let guard = as_cluster_owner(
            Command::new("sh")
                .arg("-c")
                .arg(r#"read _; "$PG_BIN/pg_ctl" -D "$PG_DIR/data" stop -m immediate >/dev/null 2>&1; rm -rf "$PG_DIR""#)
                .env("PG_BIN", &bin)
                .env("PG_DIR", dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            root,
        )
        .spawn()?;
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            guard,
            pipe: None,
            tls: tls.is_some(),
        };
        pg.pipe = pg.guard.stdin.take();
        // A port is free when chosen; another process may take it before the server binds it.
        let mut last = None;
        for _ in 0..5 {
            pg.port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            match pg.start_again() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        pg.sql(&format!(
            "CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'; CREATE EXTENSION pg_stat_statements;"
        ))?;
        std::fs::write(pg.password_file(), format!("{PASSWORD}\n"))?;
        Ok(pg)
    }

    /// Starts the (stopped) cluster again on its port, waiting until it accepts connections.
    pub fn start_again(&self) -> io::Result<()> {
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c fsync=off -c full_page_writes=off -c max_connections=300 \
             -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all",
            self.port,
            self.dir.path().join("sock").display()
        );
        if self.tls {
            // server.crt and server.key in the data folder: the default file names.
            opts.push_str(" -c ssl=on");
        }
        run(as_cluster_owner(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"]),
            rustix::process::geteuid().is_root(),
        ))
        .map(drop)
        .map_err(|e| io::Error::other(format!("{e}\n{}", self.log_tail())))
    }

    /// Stops the cluster (`pg_ctl stop -m fast`: sessions are cut, as at a restart).
    pub fn stop(&self) -> io::Result<()> {
        run(as_cluster_owner(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-w", "-t", "60", "-m", "fast", "stop"]),
            rustix::process::geteuid().is_root(),
        ))
        .map(drop)
    }

    /// A database owned by [`ROLE`]; its URL (no password: see [`Postgres::password_file`]).
    pub fn database(&self, name: &str) -> io::Result<String> {
        self.sql(&format!("CREATE DATABASE {name} OWNER {ROLE}"))?;
        Ok(format!("postgres://{ROLE}@127.0.0.1:{}/{name}", self.port))
    }

    /// A file holding [`ROLE`]'s password (for `[catalog] password_file`).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("role.pw")
    }

    /// Runs SQL as the superuser through `psql` on the socket; returns its output (unaligned,
    /// tuples only).
    pub fn sql(&self, sql: &str) -> io::Result<String> {
        self.sql_in("postgres", sql)
    }

    /// [`Postgres::sql`] in the database `db`.
    pub fn sql_in(&self, db: &str, sql: &str) -> io::Result<String> {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let out = run(as_cluster_owner(
            Command::new(psql)
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-U",
                    "postgres",
                ])
                .arg("-h")
                .arg(self.dir.path().join("sock"))
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-d")
                .arg(db)
                .arg("-c")
                .arg(sql),
            rustix::process::geteuid().is_root(),
        ))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The last lines of the server's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- postgres log (last lines) ---\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Closing the pipe makes the guard stop the cluster and remove its folder.
        drop(self.pipe.take());
        let _ = self.guard.wait();
    }
}

fn chown(p: &Path) -> io::Result<()> {
    std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY))
}

fn as_cluster_owner(cmd: &mut Command, root: bool) -> &mut Command {
    if root {
        // (std drops the supplementary groups when it changes the uid.)
        cmd.uid(NOBODY).gid(NOBODY);
        // `nobody`'s home does not exist: keep tools from looking there.
        cmd.env("HOME", "/tmp");
    }
    cmd.current_dir("/")
}

fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{:?} failed ({}): {}{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}
