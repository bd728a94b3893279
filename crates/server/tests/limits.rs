//! The web service's bounds against clients that hold on: silent and idle connections, floods
//! from one address and from many, downloads nobody reads, searches nobody waits for. Each test
//! plays the hostile client with raw sockets on loopback addresses of its own (127.0.0.x).

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::{write, Server};

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: IpAddr = from.parse().unwrap();
    sock.bind(&SocketAddr::new(local, 0).into()).unwrap();
    sock.connect(&to.into()).unwrap();
    sock.into()
}

/// Reads until the server closes the connection or `limit` passes; returns what arrived and
/// whether it was closed (EOF or reset) in time.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let left = limit.saturating_sub(t.elapsed());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, false)
            }
            Err(_) => return (got, true), // reset
        }
    }
}

/// `GET path` from `from` with `Connection: close`: the status and the body.
fn get_from(from: &str, to: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = connect_from(from, to);
    let auth = auth.map_or(String::new(), |a| format!("Authorization: Basic {a}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// `GET path` from 127.0.0.1 with basic auth `auth`, whose answer has begun with `200`: the
/// connection, left unread from there on, and how many bytes were read.
fn answered(to: SocketAddr, path: &str, auth: &str) -> (TcpStream, usize) {
    let mut s = connect_from("127.0.0.1", to);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut first = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let n = s.read(&mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{path}"
    );
    (s, n)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_and_idle_connections_are_closed_after_the_header_timeout() {
    let s = Server::start_with(|_| {}, |c| c.web.header_timeout = Duration::from_secs(1)).await;
    let addr = s.running.web_addr;
    tokio::task::spawn_blocking(move || {
        // Connects and says nothing.
        let t = Instant::now();
        let mut silent = connect_from("127.0.0.1", addr);
        let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(10));
        assert!(closed, "a silent connection was kept past 10 s");
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "closed too early"
        );

        // Sends half a request, then nothing.
        let mut half = connect_from("127.0.0.1", addr);
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let (_, closed) = read_until_closed(&mut half, Duration::from_secs(10));
        assert!(
            closed,
            "a connection with half its headers was kept past 10 s"
        );

        // A whole request answered, then the connection idles with keep-alive.
        let mut idle = connect_from("127.0.0.1", addr);
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (got, closed) = read_until_closed(&mut idle, Duration::from_secs(10));
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
        assert!(closed, "an idle keep-alive connection was kept past 10 s");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_keep_other_clients_and_ftp_served_and_silent_ones_make_room() {
    let s = Server::start_with(
        |_| {},
        |c| {
            c.web.max_connections_per_address = 8;
            c.web.max_connections = 12;
            c.web.header_timeout = Duration::from_secs(60);
        },
    )
    .await;
    let addr = s.running.web_addr;
    let held = tokio::task::spawn_blocking(move || {
        let mut held: Vec<TcpStream> = (0..8).map(|_| connect_from("127.0.0.1", addr)).collect();
        // The ninth from the same address is refused at once, with a reason.
        let mut ninth = connect_from("127.0.0.1", addr);
        let (got, closed) = read_until_closed(&mut ninth, Duration::from_secs(10));
        let text = String::from_utf8_lossy(&got);
        assert!(closed, "the ninth connection from one address was kept");
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(
            text.contains("too many connections from this address"),
            "{text}"
        );
        // Another address is still served.
        assert_eq!(get_from("127.0.0.2", addr, "/healthz", None).0, 200);
        // All places taken by connections that say nothing: a client that sends its request
        // still gets in, and the oldest silent connection makes room for it.
        held.extend((0..4).map(|_| connect_from("127.0.0.2", addr)));
        for _ in 0..3 {
            assert_eq!(get_from("127.0.0.3", addr, "/healthz", None).0, 200);
        }
        let (_, closed) = read_until_closed(&mut held[0], Duration::from_secs(10));
        assert!(
            closed,
            "the oldest silent connection was not closed to make room"
        );
        held
    })
    .await
    .unwrap();
    // The FTP service has limits of its own: a web flood does not keep anyone out of it.
    let mut ftp = s
        .ftp("admin", &s.admin_password)
        .await
        .expect("FTP login during a web flood");
    ftp.list("/").await.unwrap();
    // The flood ends: everyone is served again.
    drop(held);
    let t = Instant::now();
    loop {
        let (status, _) =
            tokio::task::spawn_blocking(move || get_from("127.0.0.3", addr, "/healthz", None))
                .await
                .unwrap();
        if status == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still refused after the flood ended ({status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_nobody_reads_is_cut_after_the_stall_timeout() {
    let size = 64 << 20;
    let s = Server::start_with(
        |a| {
            std::fs::create_dir_all(a.join("agent01")).unwrap();
            let f = std::fs::File::create(a.join("agent01/big.log")).unwrap();
            f.set_len(size).unwrap();
        },
        |c| c.web.stall_timeout = Duration::from_secs(1),
    )
    .await;
    let addr = s.running.web_addr;
    let auth = basic("admin", &s.admin_password);
    tokio::task::spawn_blocking(move || {
        // Reads the start, then stops reading for longer than the stall timeout.
        let (mut c, n) = answered(addr, "/api/v1/download/agent01/big.log", &auth);
        std::thread::sleep(Duration::from_secs(4)); // the stall being tested, not a wait for an event
        let (rest, closed) = read_until_closed(&mut c, Duration::from_secs(20));
        assert!(closed);
        assert!(
            ((n + rest.len()) as u64) < size,
            "the whole file arrived: the stalled connection was never cut"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_searches_are_capped_and_a_reader_who_stops_reading_frees_its_place() {
    let s = Server::start_with(
        |a| {
            let lines: String = (0..50_000)
                .map(|i| format!("line {i} request ok\n"))
                .collect();
            for i in 0..4 {
                write(&a.join(format!("agent01/f{i}.log")), lines.as_bytes());
            }
        },
        |c| {
            c.web.max_searches = 1;
            c.web.max_searches_per_user = 1;
            c.web.search_max_matches = 1_000_000;
            c.web.search_timeout = Duration::from_secs(2);
        },
    )
    .await;
    s.add_user("viewer", logarchive_server::users::Role::Viewer);
    let addr = s.running.web_addr;
    let admin = basic("admin", &s.admin_password);
    let viewer = basic("viewer", support::PASSWORD);
    let search = "/api/v1/search?content=request";
    tokio::task::spawn_blocking(move || {
        // A search whose reader never reads: its hits fill the queue.
        let (stuck, _) = answered(addr, "/search?content=request", &admin);
        // While it runs: the same account is told it has one running, everyone that the
        // server is at its limit.
        let (status, text) = get_from("127.0.0.2", addr, search, Some(&admin));
        assert_eq!(status, 503, "{text}");
        assert!(
            text.contains("Retry-After") || text.contains("retry-after"),
            "{text}"
        );
        assert!(text.contains("already have 1"), "{text}");
        let (status, text) = get_from("127.0.0.2", addr, search, Some(&viewer));
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("content searches are running"), "{text}");
        // The stuck reader cannot hold its place past the search's time limit: a new search
        // gets through soon after it (the stuck connection is still open).
        let t = Instant::now();
        loop {
            let (status, text) = get_from("127.0.0.2", addr, search, Some(&viewer));
            if status == 200 {
                assert!(text.contains("\"timed_out\""), "{text}");
                break;
            }
            assert_eq!(status, 503, "{text}");
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "a reader who stopped reading held the only search place past the deadline"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(stuck);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_search_page_that_finds_nothing_stops_its_search() {
    let s = Server::start_with(
        |a| {
            // Long runs of letters and a pattern with no literal to skip by: ~15 s to search.
            let line = format!("{}\n", "a".repeat(4000));
            write(
                &a.join("agent01/big.log"),
                line.repeat((256 << 20) / line.len()).as_bytes(),
            );
        },
        |c| {
            c.web.max_searches = 1;
            c.web.search_timeout = Duration::from_secs(60);
        },
    )
    .await;
    s.add_user("viewer", logarchive_server::users::Role::Viewer);
    let addr = s.running.web_addr;
    let admin = basic("admin", &s.admin_password);
    let viewer = basic("viewer", support::PASSWORD);
    tokio::task::spawn_blocking(move || {
        let search = "/search?content=%5Ba-z%5D%7B100%7D%5B0-9%5D&regex=true";
        let (page, _) = answered(addr, search, &admin);
        let (status, _) = get_from(
            "127.0.0.2",
            addr,
            "/api/v1/search?content=zzz&q=no-such-file",
            Some(&viewer),
        );
        assert_eq!(status, 503, "the only search place is taken");
        // The reader closes the page: the search stops within a few seconds, not at its end.
        drop(page);
        let t = Instant::now();
        loop {
            let (status, text) = get_from(
                "127.0.0.2",
                addr,
                "/api/v1/search?content=zzz&q=no-such-file",
                Some(&viewer),
            );
            if status == 200 {
                break;
            }
            assert_eq!(status, 503, "{text}");
            assert!(
                t.elapsed() < Duration::from_secs(8),
                "the search of a closed page went on"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
}
