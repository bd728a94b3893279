//! The client against a server we did not write: pyftpdlib (PyPI; `.ci/run` installs it).

use logarchive_ftp::client::{
    Client, ClientConfig, DownloadOptions, EntryKind, UploadMode, UploadOptions,
};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Pyftpd {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
}

impl Drop for Pyftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_pyftpdlib() -> Pyftpd {
    let root = tempfile::tempdir().unwrap();
    let script = r#"
import sys, logging
try:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer
except ImportError:
    print('NO-PYFTPDLIB', flush=True); sys.exit(3)
logging.basicConfig(level=logging.WARNING)
a = DummyAuthorizer()
a.add_user('peer', 'peer-password', sys.argv[1], perm='elradfmwMT')
h = FTPHandler; h.authorizer = a
s = FTPServer(('127.0.0.1', 0), h)
print('PORT', s.address[1], flush=True)
s.serve_forever()
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(root.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .expect("pyftpdlib output")
        .unwrap();
    assert!(
        !line.contains("NO-PYFTPDLIB"),
        "pyftpdlib is not installed: `python3 -m pip install pyftpdlib` (.ci/run does)"
    );
    let port = line
        .trim_start_matches("PORT ")
        .trim()
        .parse()
        .expect("port");
    Pyftpd { child, port, root }
}

#[tokio::test]
async fn basic_suite_against_pyftpdlib() {
    let peer = start_pyftpdlib();
    let mut cfg = ClientConfig::new("127.0.0.1", peer.port, "peer", "peer-password");
    cfg.io_timeout = Duration::from_secs(20);
    cfg.reconnect_attempts = 10;
    cfg.reconnect_base = Duration::from_millis(50);
    let mut c = Client::connect(cfg).await.expect("login at pyftpdlib");
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    let mut bytes = b"lf\ncrlf\r\ncr\r".repeat(20_000);
    bytes.extend(0u8..=255);
    std::fs::write(&f, &bytes).unwrap();

    c.ensure_dir("/Logs/App/20240723").await.unwrap();
    assert_eq!(c.pwd().await.unwrap(), "/Logs/App/20240723");
    let up = c
        .upload(&f, "a.txt", UploadOptions::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(peer.root.path().join("Logs/App/20240723/a.txt")).unwrap(),
        bytes,
        "binary mode"
    );
    assert_eq!(c.size("a.txt").await.unwrap(), bytes.len() as u64);
    c.mtime("a.txt").await.unwrap();
    let e = c.stat("/Logs/App/20240723/a.txt").await.unwrap().unwrap();
    assert_eq!((e.kind, e.size), (EntryKind::File, bytes.len() as u64));
    assert!(c.exists("/Logs").await.unwrap() && !c.exists("/Nope").await.unwrap());
    let l = c.list("/Logs/App").await.unwrap();
    assert_eq!(
        (l.len(), l[0].name.as_str(), l[0].kind),
        (1, "20240723", EntryKind::Dir)
    );

    let back = tmp.path().join("back");
    std::fs::write(&back, &bytes[..5000]).unwrap();
    let d = c
        .download("a.txt", &back, DownloadOptions::default().resume(true))
        .await
        .unwrap();
    assert_eq!(d.sha256, up.sha256);
    assert_eq!(d.bytes, bytes.len() as u64 - 5000);

    let part = tmp.path().join("part");
    std::fs::write(&part, &bytes[..70_000]).unwrap();
    c.upload(&part, "r.txt", UploadOptions::default())
        .await
        .unwrap();
    let r = c
        .upload(&f, "r.txt", UploadOptions::new(UploadMode::Resume))
        .await
        .unwrap();
    assert_eq!(
        (r.bytes, r.sha256.as_str()),
        (bytes.len() as u64 - 70_000, up.sha256.as_str())
    );
    assert_eq!(
        std::fs::read(peer.root.path().join("Logs/App/20240723/r.txt")).unwrap(),
        bytes
    );

    c.rename("r.txt", "s.txt").await.unwrap();
    c.delete("s.txt").await.unwrap();
    c.mkdir("/empty").await.unwrap();
    c.rmdir("/empty").await.unwrap();
    c.quit().await.unwrap();
}
