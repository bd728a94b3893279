//! The protocol engine on the wire, command by command, with a raw control connection: every
//! check before the 150, bad lines answered without ending the session, RFC 3659 and 4217 details
//! clients depend on, ABOR mid-transfer, and the engine's own limits (line length, login deadline,
//! connections per address, pending logins, data connections only from the client).

mod common;

use common::*;
use logarchive_ftp::server::VirtualPath;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A control connection spoken to line by line.
struct Raw {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Self::from(TcpStream::connect(addr).await.expect("connect")).await
    }

    async fn from(s: TcpStream) -> Raw {
        let (rd, wr) = s.into_split();
        let mut r = Raw {
            rd: BufReader::new(rd),
            wr,
        };
        let (code, _) = r.reply().await;
        assert_eq!(code, 220);
        r
    }

    /// The next reply: (code, all its text).
    async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        let mut first = String::new();
        tokio::time::timeout(Duration::from_secs(20), self.rd.read_line(&mut first))
            .await
            .expect("a reply within 20 s")
            .expect("reading a reply");
        assert!(first.len() >= 4, "short reply {first:?}");
        let code: u16 = first[..3]
            .parse()
            .unwrap_or_else(|_| panic!("reply {first:?}"));
        text.push_str(&first);
        if first.as_bytes()[3] == b'-' {
            loop {
                let mut l = String::new();
                self.rd.read_line(&mut l).await.unwrap();
                text.push_str(&l);
                if l.starts_with(&format!("{code} ")) || l.is_empty() {
                    break;
                }
            }
        }
        (code, text)
    }

    async fn send(&mut self, line: &str) {
        self.wr
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(line).await;
        self.reply().await
    }

    async fn login(&mut self, user: &str) {
        assert_eq!(self.cmd(&format!("USER {user}")).await.0, 331);
        assert_eq!(self.cmd(&format!("PASS {PASSWORD}")).await.0, 230);
    }

    /// EPSV, and the port it gave.
    async fn epsv(&mut self) -> u16 {
        let (code, text) = self.cmd("EPSV").await;
        assert_eq!(code, 229, "{text}");
        text.split("|||")
            .nth(1)
            .and_then(|r| r.split('|').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {text}"))
    }
}

fn server_addr(s: &TestServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], s.port()))
}

#[tokio::test]
async fn refusals_come_before_the_150_and_read_no_data() {
    refusals_before_150(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_before_the_150_and_read_no_data_on_s3() {
    refusals_before_150(Backend::S3).await
}

async fn refusals_before_150(backend: Backend) {
    let s = TestServer::start_on(backend).await;
    s.add("agent01", Role::Agent);
    let mut c = Raw::connect(server_addr(&s)).await;
    c.login("agent01").await;
    // A file the agent may not overwrite.
    let port = c.epsv().await;
    c.send("STOR a.log").await;
    let mut data = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(c.reply().await.0, 150);
    data.write_all(b"first\n").await.unwrap();
    drop(data);
    assert_eq!(c.reply().await.0, 226);
    let port = c.epsv().await;
    let mut data = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (code, text) = c.cmd("STOR a.log").await;
    assert_eq!(code, 550, "refused first, no 150: {text}");
    // The data connection is closed unread: a big upload fails at once instead of hanging.
    let payload = vec![b'x'; 8 << 20];
    let sent = tokio::time::timeout(Duration::from_secs(10), data.write_all(&payload)).await;
    assert!(
        matches!(sent, Ok(Err(_))),
        "the refused upload's bytes were taken: {sent:?}"
    );
    assert_eq!(s.get("/agent01/a.log").await.unwrap(), b"first\n");
    // Missing files and folders: refused before 150 too, the session goes on.
    let _ = c.epsv().await;
    assert_eq!(c.cmd("RETR missing.log").await.0, 550);
    let _ = c.epsv().await;
    assert_eq!(c.cmd("MLSD missing-dir").await.0, 550);
    let _ = c.epsv().await;
    assert_eq!(c.cmd("STOR no/such/dir/x.log").await.0, 550);
    assert_eq!(c.cmd("NOOP").await.0, 200);
    // Without a passive port first: 425, not a hang.
    assert_eq!(c.cmd("RETR a.log").await.0, 425);
}

#[tokio::test]
async fn bad_lines_are_answered_and_the_session_goes_on() {
    let s = TestServer::start().await;
    s.add("agent01", Role::Agent);
    let mut c = Raw::connect(server_addr(&s)).await;
    assert_eq!(c.cmd("FOO bar").await.0, 500);
    assert_eq!(c.cmd("LIST").await.0, 530, "not logged in");
    c.login("agent01").await;
    assert_eq!(c.cmd("OPTS UTF8 ON").await.0, 200);
    assert_eq!(c.cmd("OPTS UTF-8 ON").await.0, 200);
    let (code, text) = c.cmd("OPTS MLST type;size;").await;
    assert_eq!((code, text.trim_end()), (200, "200 MLST OPTS type;size;"));
    assert_eq!(c.cmd("SIZE").await.0, 501);
    assert_eq!(c.cmd("MDTM").await.0, 501);
    assert_eq!(c.cmd("REST abc").await.0, 501);
    assert_eq!(c.cmd("TYPE X").await.0, 501);
    c.wr.write_all(b"CWD \xff\xfe\r\n").await.unwrap();
    assert_eq!(c.reply().await.0, 501, "not UTF-8");
    assert_eq!(c.cmd("PORT 127,0,0,1,0,22").await.0, 502);
    assert_eq!(c.cmd("NOOP").await.0, 200, "still going");
    let (code, feat) = c.cmd("FEAT").await;
    assert_eq!(code, 211);
    for f in [
        "EPSV",
        "MLST type*;size*;",
        "MFMT",
        "SIZE",
        "REST STREAM",
        "UTF8",
        "TVFS",
    ] {
        assert!(feat.contains(f), "FEAT lacks {f}: {feat}");
    }
}

#[tokio::test]
async fn paths_replies_and_listings_as_clients_expect() {
    paths_replies_and_listings(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_replies_and_listings_as_clients_expect_on_s3() {
    paths_replies_and_listings(Backend::S3).await
}

async fn paths_replies_and_listings(backend: Backend) {
    let s = TestServer::start_on(backend).await;
    s.add("agent01", Role::Agent);
    let mut c = Raw::connect(server_addr(&s)).await;
    c.login("agent01").await;
    let (code, text) = c.cmd("MKD a").await;
    assert_eq!(
        (code, text.trim_end()),
        (257, "257 \"/a\" created"),
        "quoted"
    );
    assert_eq!(c.cmd("MKD a/b").await.0, 257);
    assert_eq!(c.cmd("CWD a/b").await.0, 250);
    assert_eq!(
        c.cmd("PWD").await.1.trim_end(),
        "257 \"/a/b\" is the current directory"
    );
    assert_eq!(c.cmd("CWD ..").await.0, 250);
    assert_eq!(
        c.cmd("PWD").await.1.trim_end(),
        "257 \"/a\" is the current directory",
        "normalised"
    );
    assert_eq!(c.cmd("CDUP").await.0, 250);
    assert_eq!(
        c.cmd("PWD").await.1.trim_end(),
        "257 \"/\" is the current directory"
    );
    assert_eq!(c.cmd("CWD ../../..").await.0, 250, "stops at the home");
    assert_eq!(
        c.cmd("PWD").await.1.trim_end(),
        "257 \"/\" is the current directory"
    );
    s.put("/agent01/a/f.log", b"12345").await;
    assert_eq!(c.cmd("CWD a").await.0, 250);
    // Relative MLST, SIZE of a folder, MLSD of a file.
    let (code, text) = c.cmd("MLST f.log").await;
    assert_eq!(code, 250, "{text}");
    assert!(text.contains("type=file;size=5;"), "{text}");
    assert_eq!(c.cmd("SIZE b").await.0, 550, "a folder has no SIZE");
    assert_eq!(c.cmd("SIZE f.log").await.1.trim_end(), "213 5");
    let _ = c.epsv().await;
    assert_eq!(c.cmd("MLSD f.log").await.0, 501, "MLSD lists folders");
    // MFMT sets the time; MDTM shows it.
    let (code, text) = c.cmd("MFMT 20240723101112 f.log").await;
    assert_eq!(
        (code, text.trim_end()),
        (213, "213 Modify=20240723101112; /a/f.log")
    );
    assert_eq!(c.cmd("MDTM f.log").await.1.trim_end(), "213 20240723101112");
    let vp = VirtualPath::parse(std::path::Path::new("/agent01/a/f.log")).unwrap();
    assert_eq!(
        s.store.stat(&vp).await.unwrap().modified,
        Some(std::time::UNIX_EPOCH + Duration::from_secs(1_721_729_472))
    );
    assert_eq!(c.cmd("MFMT 20241332000000 f.log").await.0, 501);
    // SITE SHA256 with a relative path.
    let (code, text) = c.cmd("SITE SHA256 f.log").await;
    assert_eq!(code, 213, "{text}");
    assert!(text.contains("5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"));
    // A name with a quote in a 257 reply.
    assert_eq!(
        c.cmd("MKD q\"t").await.1.trim_end(),
        "257 \"/a/q\"\"t\" created"
    );
}

#[tokio::test]
async fn pasv_is_refused_on_ipv6_and_epsv_works() {
    let s = TestServer::start_with(|c| c.listen = "[::1]:0".parse().unwrap()).await;
    s.add("agent01", Role::Agent);
    let addr = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, s.port()));
    let mut c = Raw::connect(addr).await;
    c.login("agent01").await;
    assert_eq!(
        c.cmd("PASV").await.0,
        522,
        "PASV cannot name an IPv6 address"
    );
    assert_eq!(c.cmd("EPSV 1").await.0, 522);
    let port = c.epsv().await;
    c.send("LIST").await;
    let mut data = TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, port))
        .await
        .unwrap();
    assert_eq!(c.reply().await.0, 150);
    let mut listing = Vec::new();
    data.read_to_end(&mut listing).await.unwrap();
    assert_eq!(c.reply().await.0, 226);
    assert_eq!(c.cmd("NOOP").await.0, 200, "the session goes on");
}

#[tokio::test]
async fn abor_ends_a_running_download_and_the_session_goes_on() {
    abor_mid_download(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abor_ends_a_running_download_and_the_session_goes_on_on_s3() {
    abor_mid_download(Backend::S3).await
}

async fn abor_mid_download(backend: Backend) {
    let s = TestServer::start_on(backend).await;
    s.add_custom(
        "slow",
        "/slow",
        logarchive_ftp::rights::Rights::parse_list("list,read").unwrap(),
    );
    s.users
        .update(
            "slow",
            UserUpdate {
                download_limit: Some(logarchive_ftp::rate::ByteRate(64 * 1024)),
                ..Default::default()
            },
        )
        .unwrap();
    s.put("/slow/big.log", &vec![b'x'; 4 << 20]).await;
    let mut c = Raw::connect(server_addr(&s)).await;
    c.login("slow").await;
    let port = c.epsv().await;
    c.send("RETR big.log").await;
    let mut data = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(c.reply().await.0, 150);
    let mut some = vec![0u8; 1024];
    data.read_exact(&mut some).await.unwrap();
    let t = Instant::now();
    c.send("ABOR").await;
    assert_eq!(c.reply().await.0, 426);
    assert_eq!(c.reply().await.0, 226);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "ABOR took {:?}",
        t.elapsed()
    );
    assert_eq!(c.cmd("NOOP").await.0, 200);
    // The data connection was ended.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), data.read_to_end(&mut rest)).await;
    assert!(rest.len() < 4 << 20, "the whole file was sent despite ABOR");
}

#[tokio::test]
async fn data_connections_are_taken_only_from_the_client() {
    let s = TestServer::start().await;
    s.add("agent01", Role::Agent);
    s.put("agent01/secret.log", b"for the client only\n").await;
    let mut c = Raw::connect(server_addr(&s)).await;
    c.login("agent01").await;
    let port = c.epsv().await;
    // A stranger (127.0.0.2) takes the passive port first.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut thief = sock
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    c.send("RETR secret.log").await;
    let mut data = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(c.reply().await.0, 150);
    let mut got = Vec::new();
    data.read_to_end(&mut got).await.unwrap();
    assert_eq!(c.reply().await.0, 226);
    assert_eq!(got, b"for the client only\n");
    let mut stolen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), thief.read_to_end(&mut stolen)).await;
    assert!(stolen.is_empty(), "the stranger got {stolen:?}");
}

#[tokio::test]
async fn an_endless_line_closes_the_session_without_growing_memory() {
    let s = TestServer::start().await;
    let mut c = Raw::connect(server_addr(&s)).await;
    // A gibibyte without a line end: the server reads at most a few KiB of it.
    let chunk = vec![b'A'; 1 << 20];
    let mut sent = 0usize;
    while sent < 1 << 30 {
        match tokio::time::timeout(Duration::from_secs(10), c.wr.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
    }
    assert!(sent < 64 << 20, "the server took {sent} bytes of one line");
    let (code, _) = c.reply().await;
    assert_eq!(code, 500);
    let mut rest = Vec::new();
    let _ = c.rd.read_to_end(&mut rest).await;
    // A long line under the bound is answered and the session goes on.
    let mut c = Raw::connect(server_addr(&s)).await;
    let long = format!("NOOP {}", "x".repeat(4000));
    assert_eq!(c.cmd(&long).await.0, 200);
}

#[tokio::test]
async fn logins_have_a_deadline() {
    let s = TestServer::start_with(|c| c.login_timeout = Duration::from_millis(500)).await;
    let mut c = Raw::connect(server_addr(&s)).await;
    let t = Instant::now();
    let (code, _) = c.reply().await;
    assert_eq!(code, 421);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connections_per_address_are_bounded() {
    let s = TestServer::start_with(|c| c.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Raw::connect(server_addr(&s)).await);
    }
    let mut fourth = TcpStream::connect(server_addr(&s)).await.unwrap();
    let mut reply = String::new();
    let mut rd = BufReader::new(&mut fourth);
    rd.read_line(&mut reply).await.unwrap();
    assert!(reply.starts_with("421"), "{reply}");
    // Another address is not affected.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let other = sock.connect(server_addr(&s)).await.unwrap();
    let _ = Raw::from(other).await;
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(65_536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// Median seconds of one verified 16 KiB upload by a fresh client, over `n` uploads.
async fn upload_latency(s: &TestServer, n: usize, tag: &str) -> Duration {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    random_file(&f, 16 * 1024, 9);
    let mut c = s.client("agent01").await;
    let mut times = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        c.upload_verified(&f, &format!("/{tag}-{i}.log"), None)
            .await
            .unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_never_keep_an_agent_out() {
    raise_fd_limit();
    let s = TestServer::start().await;
    s.add("agent01", Role::Agent);
    let quiet = upload_latency(&s, 30, "quiet").await;
    // 1,000 connections that never log in, from two other addresses.
    let mut idle = Vec::new();
    for i in 0..1000u32 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        let from = if i % 2 == 0 {
            "127.0.0.2:0"
        } else {
            "127.0.0.3:0"
        };
        sock.bind(from.parse().unwrap()).unwrap();
        if let Ok(c) = sock.connect(server_addr(&s)).await {
            idle.push(c);
        }
    }
    let busy = upload_latency(&s, 30, "busy").await;
    eprintln!(
        "median verified 16 KiB upload: {quiet:?} alone, {busy:?} beside 1,000 idle connections"
    );
    assert!(
        busy < quiet * 4 + Duration::from_millis(20),
        "{busy:?} beside the idle connections, {quiet:?} without"
    );
    // The server kept only a bounded number of them.
    assert!(
        s.handle.sessions().len() <= 128 + 2,
        "{} sessions",
        s.handle.sessions().len()
    );
}

/// The object store out of reach: an upload or a download that needs it gets 451 (try again
/// later), not a hang, a 550 or a closed session; the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_out_of_reach_is_a_451_and_the_session_goes_on() {
    let weed = SeaweedFs::start().expect("SeaweedFS");
    let s = TestServer::start_on_store(&weed).await;
    s.add("agent01", Role::Agent);
    // Past what waits inline in the metadata: these need the object store itself. (Small
    // uploads are kept in the metadata and packed later, so they do not.)
    s.put("/agent01/kept.log", &vec![b'k'; 3 << 20]).await;
    let mut c = Raw::connect(server_addr(&s)).await;
    c.login("agent01").await;
    drop(weed); // killed, by PID
    let port = c.epsv().await;
    c.send("STOR new.log").await;
    let mut data = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(c.reply().await.0, 150);
    let _ = data.write_all(&vec![b'n'; 3 << 20]).await;
    drop(data);
    let (code, text) = tokio::time::timeout(Duration::from_secs(60), c.reply())
        .await
        .expect("a reply to the upload within 60 s");
    assert_eq!(code, 451, "upload into an unreachable store: {text}");
    let port = c.epsv().await;
    c.send("RETR kept.log").await;
    let mut data = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(c.reply().await.0, 150);
    let mut got = Vec::new();
    let _ = data.read_to_end(&mut got).await;
    let (code, text) = tokio::time::timeout(Duration::from_secs(60), c.reply())
        .await
        .expect("a reply to the download within 60 s");
    assert_eq!(code, 451, "download from an unreachable store: {text}");
    assert_eq!(c.cmd("NOOP").await.0, 200, "the session goes on");
}
