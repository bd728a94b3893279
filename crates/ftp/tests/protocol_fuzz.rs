//! Hostile input on the control channel: 100,000 random and mutated FTP command lines (long
//! lines, NUL, invalid UTF-8, every command with odd arguments, commands out of order, PORT and
//! EPRT to other hosts) over real sockets from 8 concurrent clients, and 20,000 more over TLS
//! control connections. Afterwards the server still serves, nothing outside the fuzzing
//! account's home has changed, and nothing in the process panicked.

mod common;

use common::*;
use rustls::pki_types::pem::PemObject;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LINES: usize = 100_000;
const TLS_LINES: usize = 20_000;

/// Panics anywhere in this process (a session task that panics is caught by its runtime: only
/// a hook sees it).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        default(info);
    }));
}
const WORKERS: usize = 8;
/// Lines per connection before it is dropped and a new one opened.
const PER_CONNECTION: usize = 400;

const COMMANDS: &[&str] = &[
    "USER",
    "PASS",
    "ACCT",
    "CWD",
    "CDUP",
    "SMNT",
    "REIN",
    "PORT",
    "PASV",
    "EPRT",
    "EPSV",
    "TYPE",
    "STRU",
    "MODE",
    "RETR",
    "STOR",
    "STOU",
    "APPE",
    "ALLO",
    "REST",
    "RNFR",
    "RNTO",
    "ABOR",
    "DELE",
    "RMD",
    "MKD",
    "PWD",
    "LIST",
    "NLST",
    "SITE",
    "SYST",
    "STAT",
    "HELP",
    "NOOP",
    "FEAT",
    "OPTS",
    "AUTH",
    "PBSZ",
    "PROT",
    "CCC",
    "MDTM",
    "SIZE",
    "MLST",
    "MLSD",
    "HOST",
    "LANG",
    "XMKD",
    "XRMD",
    "XPWD",
    "XCUP",
    "XCWD",
    "MFMT",
    "SITE SHA256",
    "SITE MD5",
    "SITE CHMOD 777",
    "OPTS UTF8 ON",
];

const ARGS: &[&[u8]] = &[
    b"",
    b"..",
    b"../../..",
    b"/../../../etc/passwd",
    b"/",
    b"//",
    b"~root",
    b"\\..\\..\\outside",
    b"C:\\windows",
    b"%2e%2e/%2e%2e",
    b"*",
    b"-la /",
    b"-1",
    b"18446744073709551616",
    b"99999999999999999999999999",
    b"8,8,8,8,0,21",
    b"127,0,0,1,0,22",
    b"1,2,3,4,5,6,7,8",
    b"|1|8.8.8.8|21|",
    b"|2|::1|22|",
    b"|3|x|y|",
    b"A",
    b"I",
    b"E",
    b"L 8",
    b"TLS",
    b"a\x00b",
    b"\xff\xfe\xfd",
    b"\xc3\x28",
    b"../agent02/keep.log",
    b"/agent02/keep.log",
    b"link-out/secret.txt",
    b"link-out",
    b"new dir/x.log",
    b"x.log",
    b".x.log.logarchive-tmp",
    b"/.logarchive/status.json",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn line(r: &mut Rng) -> Vec<u8> {
    let mut l = Vec::new();
    match r.below(10) {
        // Random bytes, including NUL, CR and invalid UTF-8.
        0 => (0..r.below(200)).for_each(|_| l.push(r.next() as u8)),
        // A very long line.
        1 => {
            l.extend_from_slice(COMMANDS[r.below(COMMANDS.len())].as_bytes());
            l.push(b' ');
            l.extend(std::iter::repeat_n(
                b'A' + (r.below(26) as u8),
                4096 + r.below(20_000),
            ));
        }
        // A command with a mutated argument.
        2 => {
            l.extend_from_slice(COMMANDS[r.below(COMMANDS.len())].as_bytes());
            l.push(b' ');
            let mut a = ARGS[r.below(ARGS.len())].to_vec();
            for _ in 0..r.below(4) {
                if !a.is_empty() {
                    let i = r.below(a.len());
                    a[i] = r.next() as u8;
                }
            }
            l.extend(a);
        }
        // Case games and odd spacing.
        3 => {
            let c = COMMANDS[r.below(COMMANDS.len())].to_ascii_lowercase();
            l.extend_from_slice(b"   ");
            l.extend_from_slice(c.as_bytes());
            l.extend_from_slice(b"\t\t");
            l.extend_from_slice(ARGS[r.below(ARGS.len())]);
        }
        // A well-formed command with an odd argument (the most common case).
        _ => {
            l.extend_from_slice(COMMANDS[r.below(COMMANDS.len())].as_bytes());
            if r.below(5) != 0 {
                l.push(b' ');
                l.extend_from_slice(ARGS[r.below(ARGS.len())]);
            }
        }
    }
    match r.below(20) {
        0 => l.push(b'\n'),
        1 => {}
        _ => l.extend_from_slice(b"\r\n"),
    }
    l
}

/// A control connection, plain or (after AUTH TLS) encrypted.
type Control = Box<dyn Duplex>;
trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Duplex for T {}

/// Connects; with `tls`, upgrades with AUTH TLS first.
async fn open(port: u16, tls: Option<&tokio_rustls::TlsConnector>) -> Option<Control> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let Some(tls) = tls else {
        return Some(Box::new(s));
    };
    let mut buf = vec![0u8; 4096];
    let greeting = s.read(&mut buf).await.ok()?;
    if greeting == 0 {
        return None;
    }
    s.write_all(b"AUTH TLS\r\n").await.ok()?;
    let n = s.read(&mut buf).await.ok()?;
    if !buf[..n].starts_with(b"234") {
        return None;
    }
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let t = tokio::time::timeout(Duration::from_secs(10), tls.connect(name, s))
        .await
        .ok()?
        .ok()?;
    Some(Box::new(t))
}

async fn worker(
    port: u16,
    seed: u64,
    budget: Arc<AtomicUsize>,
    tls: Option<tokio_rustls::TlsConnector>,
) -> usize {
    let mut r = Rng(seed | 1);
    let mut sent = 0;
    loop {
        let Some(s) = open(port, tls.as_ref()).await else {
            tokio::task::yield_now().await;
            if budget.load(Ordering::Relaxed) == 0 {
                return sent;
            }
            continue;
        };
        let (mut rd, mut wr) = tokio::io::split(s);
        // Drain replies so the server never blocks writing to us.
        let drain = async {
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        let send = async {
            // Half of the connections log in first, to reach the commands behind the login.
            if r.below(2) == 0 {
                let login = format!("USER agent01\r\nPASS {PASSWORD}\r\n");
                if wr.write_all(login.as_bytes()).await.is_err() {
                    return;
                }
            }
            for _ in 0..PER_CONNECTION {
                let take =
                    budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1));
                if take.is_err() {
                    return;
                }
                let l = line(&mut r);
                sent += 1;
                // A stalled connection (the server waiting on a data connection that never
                // comes) is dropped rather than waited for.
                match tokio::time::timeout(Duration::from_secs(2), wr.write_all(&l)).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
            let _ = wr.write_all(b"QUIT\r\n").await;
        };
        tokio::select! {
            _ = send => {}
            _ = async { drain.await; std::future::pending::<()>().await } => {}
        }
        if budget.load(Ordering::Relaxed) == 0 {
            return sent;
        }
    }
}

/// Runs `lines` hostile lines from WORKERS connections; returns how many were sent.
async fn fuzz(port: u16, lines: usize, tls: Option<tokio_rustls::TlsConnector>) -> usize {
    let budget = Arc::new(AtomicUsize::new(lines));
    let tasks: Vec<_> = (0..WORKERS)
        .map(|i| {
            tokio::spawn(worker(
                port,
                0x1234_5678 + i as u64 * 7919,
                Arc::clone(&budget),
                tls.clone(),
            ))
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += tokio::time::timeout(Duration::from_secs(600), t)
            .await
            .expect("the fuzzer finishes")
            .unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_hostile_lines_change_nothing_outside_the_home() {
    let s = TestServer::start_with(|c| {
        // Counting failures would lock 127.0.0.1 out after five random PASS lines; the lockout
        // has its own test. Here every line must reach the parser.
        c.login_max_failures = u32::MAX;
        c.max_sessions = 64;
    })
    .await;
    s.add("agent01", Role::Agent);
    s.add("agent02", Role::Agent);
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"outside the archive\n").unwrap();
    let a1 = s.archive().join("agent01");
    let a2 = s.archive().join("agent02");
    std::fs::create_dir_all(&a1).unwrap();
    std::fs::create_dir_all(&a2).unwrap();
    std::fs::write(a2.join("keep.log"), b"agent02's file\n").unwrap();
    std::os::unix::fs::symlink(&outside, a1.join("link-out")).unwrap();
    // Everything but agent01's own home, which the fuzzer may legitimately change.
    let snapshot = || -> Vec<(std::path::PathBuf, String)> {
        tree_snapshot(s.dir.path())
            .into_iter()
            .filter(|(p, _)| !p.starts_with(&a1) || p == &a1.join("link-out"))
            .collect()
    };
    let before = snapshot();

    count_panics();
    let total = fuzz(s.port(), LINES, None).await;
    println!("sent {total} hostile command lines");
    assert_eq!(total, LINES);

    // Still serving: log in, upload, list, download.
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("after.log");
    random_file(&f, 100_000, 5);
    let mut c = s.client("agent01").await;
    c.upload_verified(&f, "/after-fuzz.log", None)
        .await
        .unwrap();
    assert!(c
        .list("/")
        .await
        .unwrap()
        .iter()
        .any(|e| e.name == "after-fuzz.log"));
    let back = tmp.path().join("back.log");
    c.download("/after-fuzz.log", &back, Default::default())
        .await
        .unwrap();
    assert_eq!(sha256_file(&back), sha256_file(&f));
    assert_eq!(
        before,
        snapshot(),
        "something outside agent01's home changed"
    );
    assert_eq!(PANICS.load(Ordering::Relaxed), 0, "something panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_over_tls_never_panic() {
    let s = TestServer::start_tls(|c| {
        c.login_max_failures = u32::MAX;
        c.max_sessions = 64;
    })
    .await;
    s.add("agent01", Role::Agent);
    count_panics();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(s.cert.as_ref().unwrap()).unwrap();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let total = fuzz(s.port(), TLS_LINES, Some(tls)).await;
    println!("sent {total} hostile command lines over TLS");
    assert_eq!(total, TLS_LINES);
    let mut c = s.client("agent01").await;
    assert!(c.list("/").await.is_ok(), "still serving over FTPS");
    assert_eq!(PANICS.load(Ordering::Relaxed), 0, "something panicked");
}
