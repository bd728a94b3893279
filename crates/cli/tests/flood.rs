//! A flood of web connections against the real binary running under a small open-files limit
//! (1024, a default Debian service's): the web service holds no more than its share of
//! descriptors, and the FTP service keeps taking logins and uploads during the flood.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};
use support::{add_user, bin, server_command, start_server};

/// Silent connections the flood opens: three times the server's descriptor limit.
const FLOOD: usize = 3000;
/// Source addresses they come from (127.0.0.2 ...): a distributed flood, not one address.
const SOURCES: usize = 60;

fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&SocketAddr::new(from, 0).into()).ok()?;
    // A server that stopped accepting leaves the rest of the flood waiting: that is fine.
    sock.connect_timeout(&to.into(), Duration::from_millis(500))
        .ok()?;
    Some(sock.into())
}

#[test]
fn a_web_connection_flood_cannot_take_the_descriptors_the_ftp_service_needs() {
    let limit = logarchive_ftp::os::raise_open_files_limit();
    assert!(
        limit as usize > FLOOD + 500,
        "this test opens {FLOOD} connections and may open only {limit} files"
    );
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    add_user(&data, "agent01", "agent-password", &[]);
    let mut cmd = server_command(&data, "127.0.0.1:0");
    // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = start_server(cmd);
    let web: SocketAddr = server.web.parse().unwrap();

    let flood: Vec<TcpStream> = (0..FLOOD)
        .filter_map(|i| {
            let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % SOURCES) as u8);
            connect_from(from.into(), web)
        })
        .collect();
    eprintln!("{} of {FLOOD} flood connections opened", flood.len());

    // During the flood: an upload over FTP, within a few seconds.
    let file = d.path().join("during-the-flood.log");
    std::fs::write(&file, "a line written during a web flood\n").unwrap();
    let t = Instant::now();
    let out = bin()
        .env("LOGARCHIVE_PASSWORD", "agent-password")
        .args(["ftp", "put"])
        .arg(format!("ftp://agent01@{}/", server.ftp))
        .arg(&file)
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "an FTP upload failed during the web flood: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(10), "the upload took {took:?}");
    eprintln!("FTP upload during the flood: {took:?}");
    assert_eq!(
        std::fs::read(data.join("archive/agent01/during-the-flood.log")).unwrap(),
        std::fs::read(&file).unwrap()
    );

    // The flood ends: the web interface answers again.
    drop(flood);
    let t = Instant::now();
    while !healthy(&server.web) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the web interface did not recover after the flood"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `GET /healthz` answers 200 now.
fn healthy(web: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(web) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200")
}
