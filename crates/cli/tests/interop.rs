//! Real FTP clients against `logarchive server`: lftp, curl, rclone, wget and ncftp from Debian
//! (Python's ftplib has its own suite in crates/ftp/tests/peer_ftplib.rs). Each client logs in,
//! makes nested folders, uploads into them (a 0-byte file, unicode and space names, a few MB),
//! downloads and compares SHA-256, resumes both ways, renames, deletes (as an admin), mirrors
//! both ways, speaks FTPS with a private CA, EPSV and PASV, IPv6; an agent account's refused
//! operations get a clean 550 and never hang. Every client runs with a hard time limit.
//!
//! Needs the clients installed (`./test.sh` / .ci/run install them): a missing one fails the
//! test with the package to install, it is never skipped silently.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{add_user, server_command, start_server, Rng, Server};

const ADMIN_PW: &str = "admin-password-1";
const AGENT_PW: &str = "agent-password-1";

/// Runs `cmd` with a hard limit; its output. A client that hangs fails the test.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {what}: {e} (is the client installed? ./test.sh installs it)")
        });
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = Vec::new();
            let mut err = Vec::new();
            child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
            return Output {
                status,
                stdout: out,
                stderr: err,
            };
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// Relative path → SHA-256 of every file under `dir`.
fn shas(dir: &Path) -> BTreeMap<String, String> {
    support::sha_tree(dir)
}

/// A folder with what clients trip over: nested folders, an empty file, unicode and spaces, a
/// few MB.
fn sample(dir: &Path) {
    let mut r = Rng(42);
    let big: Vec<u8> = (0..3_000_000).map(|_| (r.next() % 251) as u8).collect();
    for (rel, bytes) in [
        ("empty.log", Vec::new()),
        ("plain.log", b"line 1\nline 2\r\n".to_vec()),
        (
            "Ünïcødé dir/with space.log",
            "línea ✓\n".as_bytes().to_vec(),
        ),
        ("deep/a/b/big.log", big),
    ] {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

/// A private CA and a server certificate for localhost and 127.0.0.1 signed by it.
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "logarchive interop test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (ca_pem, cert_pem, key_pem) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    (ca_pem, cert_pem, key_pem)
}

struct World {
    dir: tempfile::TempDir,
    server: Server,
    ca: PathBuf,
}

impl World {
    fn start(listen: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        add_user(&data, "admin", ADMIN_PW, &["--role", "admin"]);
        add_user(&data, "agent01", AGENT_PW, &[]);
        let (ca, cert, key) = private_ca(dir.path());
        let mut cmd = server_command(&data, listen);
        cmd.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
        let server = start_server(cmd);
        World { dir, server, ca }
    }

    fn port(&self) -> u16 {
        self.server.ftp.port()
    }

    fn archive(&self) -> PathBuf {
        self.dir.path().join("data/archive")
    }

    fn local(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

fn lftp(w: &World, user: &str, pw: &str, tls: bool, script: &str) -> Output {
    let settings = if tls {
        format!(
            "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:ca-file {}; set ssl:verify-certificate true;",
            w.ca.display()
        )
    } else {
        "set ftp:ssl-allow false;".to_string()
    };
    let host = if tls { "localhost" } else { "127.0.0.1" };
    run(
        Command::new("lftp")
            .arg("-c")
            .arg(format!(
                "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 20; {settings} open -u {user},{pw} -p {} {host}; {script}",
                w.port()
            )),
        Duration::from_secs(120),
    )
}

fn lftp_ok(w: &World, user: &str, pw: &str, tls: bool, script: &str) -> String {
    let out = lftp(w, user, pw, tls, script);
    assert!(
        out.status.success(),
        "lftp {script}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lftp_mirror_both_ways_resume_rename_delete_plain_and_ftps() {
    let w = World::start("127.0.0.1:0");
    for tls in [false, true] {
        let tag = if tls { "ftps" } else { "plain" };
        let src = w.local(&format!("lftp-src-{tag}"));
        sample(&src);
        // mkdir -p, mirror up into new folders, and back down.
        lftp_ok(
            &w,
            "admin",
            ADMIN_PW,
            tls,
            &format!("mkdir -p {tag}/x/y; mirror -R {} {tag}/up", src.display()),
        );
        assert_eq!(shas(&w.archive().join(format!("{tag}/up"))), shas(&src));
        let back = w.local(&format!("lftp-back-{tag}"));
        lftp_ok(
            &w,
            "admin",
            ADMIN_PW,
            tls,
            &format!("mirror {tag}/up {}", back.display()),
        );
        assert_eq!(shas(&back), shas(&src));
        // Resume an upload (the server holds the first MB) and a download.
        let big = src.join("deep/a/b/big.log");
        let remote = w.archive().join(format!("{tag}/resume.log"));
        std::fs::write(&remote, &std::fs::read(&big).unwrap()[..1_000_000]).unwrap();
        lftp_ok(
            &w,
            "admin",
            ADMIN_PW,
            tls,
            &format!("put -c {} -o {tag}/resume.log", big.display()),
        );
        assert_eq!(sha(&remote), sha(&big), "upload resumed");
        let partial = w.local(&format!("lftp-partial-{tag}")).join("resume.log");
        std::fs::write(&partial, &std::fs::read(&big).unwrap()[..700_000]).unwrap();
        lftp_ok(
            &w,
            "admin",
            ADMIN_PW,
            tls,
            &format!("get -c {tag}/resume.log -o {}", partial.display()),
        );
        assert_eq!(sha(&partial), sha(&big), "download resumed");
        // Rename and delete (admin).
        lftp_ok(
            &w,
            "admin",
            ADMIN_PW,
            tls,
            &format!(
                "mv {tag}/resume.log {tag}/renamed.log; rm {tag}/up/plain.log; rmdir {tag}/x/y"
            ),
        );
        assert!(w.archive().join(format!("{tag}/renamed.log")).exists());
        assert!(!w.archive().join(format!("{tag}/up/plain.log")).exists());
        assert!(!w.archive().join(format!("{tag}/x/y")).exists());
    }
    // An agent account: uploads into new folders, but may not overwrite or delete: clean
    // refusals, no hang.
    let f = w.local("agent").join("a.log");
    std::fs::write(&f, b"agent line\n").unwrap();
    lftp_ok(
        &w,
        "agent01",
        AGENT_PW,
        false,
        &format!("mkdir -p Logs/App; put {} -o Logs/App/a.log", f.display()),
    );
    for script in [
        format!("put {} -o Logs/App/a.log", f.display()),
        "rm Logs/App/a.log".to_string(),
        "mv Logs/App/a.log Logs/App/b.log".to_string(),
    ] {
        let t = Instant::now();
        let out = lftp(&w, "agent01", AGENT_PW, false, &script);
        assert!(!out.status.success(), "{script} was allowed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("550"), "{script}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{script} took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(
        std::fs::read(w.archive().join("agent01/Logs/App/a.log")).unwrap(),
        b"agent line\n"
    );
}

fn curl(args: &[&str]) -> Output {
    run(
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "60"])
            .args(args),
        Duration::from_secs(90),
    )
}

#[test]
fn curl_uploads_downloads_resumes_and_renames_over_epsv_pasv_and_ftps() {
    let w = World::start("127.0.0.1:0");
    let src = w.local("curl-src");
    sample(&src);
    let big = src.join("deep/a/b/big.log");
    let auth = format!("admin:{ADMIN_PW}");
    let base = format!("ftp://127.0.0.1:{}", w.port());
    let tls_base = format!("ftp://localhost:{}", w.port());
    let ca = w.ca.display().to_string();
    for (name, url, extra) in [
        ("epsv", base.clone(), vec![]),
        ("pasv", base.clone(), vec!["--disable-epsv"]),
        (
            "ftps",
            tls_base.clone(),
            vec!["--ssl-reqd", "--cacert", ca.as_str()],
        ),
    ] {
        let remote = format!("{url}/curl/{name}/new/dirs/big.log");
        let out = curl(
            &[
                &[
                    "--user",
                    &auth,
                    "--ftp-create-dirs",
                    "-T",
                    big.to_str().unwrap(),
                    &remote,
                ][..],
                &extra[..],
            ]
            .concat(),
        );
        assert!(
            out.status.success(),
            "{name} upload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = w.local(&format!("curl-{name}")).join("big.log");
        let out = curl(
            &[
                &["--user", &auth, "-o", got.to_str().unwrap(), &remote][..],
                &extra[..],
            ]
            .concat(),
        );
        assert!(
            out.status.success(),
            "{name} download: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha(&got), sha(&big), "{name}");
        // Unicode and space names, and an empty file.
        for rel in ["Ünïcødé dir/with space.log", "empty.log"] {
            let enc = rel.replace(' ', "%20");
            let out = curl(
                &[
                    &[
                        "--user",
                        &auth,
                        "--ftp-create-dirs",
                        "-T",
                        src.join(rel).to_str().unwrap(),
                        &format!("{url}/curl/{name}/{enc}"),
                    ][..],
                    &extra[..],
                ]
                .concat(),
            );
            assert!(
                out.status.success(),
                "{name} {rel}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                sha(&w.archive().join(format!("curl/{name}/{rel}"))),
                sha(&src.join(rel)),
                "{name} {rel}"
            );
        }
    }
    // Resume a download (-C -) and an upload (-C - -T).
    let partial = w.local("curl-resume").join("big.log");
    std::fs::write(&partial, &std::fs::read(&big).unwrap()[..1_234_567]).unwrap();
    let out = curl(&[
        "--user",
        &auth,
        "-C",
        "-",
        "-o",
        partial.to_str().unwrap(),
        &format!("{base}/curl/epsv/new/dirs/big.log"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha(&partial), sha(&big));
    let remote = w.archive().join("curl/up-resume.log");
    std::fs::write(&remote, &std::fs::read(&big).unwrap()[..777_777]).unwrap();
    let out = curl(&[
        "--user",
        &auth,
        "-C",
        "-",
        "-T",
        big.to_str().unwrap(),
        &format!("{base}/curl/up-resume.log"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha(&remote), sha(&big));
    // Rename with quoted commands.
    let out = curl(&[
        "--user",
        &auth,
        "-Q",
        "-RNFR curl/up-resume.log",
        "-Q",
        "-RNTO curl/renamed.log",
        &format!("{base}/"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w.archive().join("curl/renamed.log").exists());
    // An agent may not overwrite: curl gets the 550 and exits at once.
    let agent = format!("agent01:{AGENT_PW}");
    let f = w.local("curl-agent").join("a.log");
    std::fs::write(&f, b"x\n").unwrap();
    let out = curl(&[
        "--user",
        &agent,
        "-T",
        f.to_str().unwrap(),
        &format!("{base}/a.log"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Instant::now();
    let out = curl(&[
        "--user",
        &agent,
        "-T",
        big.to_str().unwrap(),
        &format!("{base}/a.log"),
    ]);
    assert!(!out.status.success(), "an overwrite was allowed");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("550"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "a refused upload took {:?}",
        t.elapsed()
    );
    assert_eq!(
        std::fs::read(w.archive().join("agent01/a.log")).unwrap(),
        b"x\n"
    );
}

#[test]
fn curl_and_lftp_over_ipv6() {
    let w = World::start("[::1]:0");
    let f = w.local("v6").join("v6.log");
    std::fs::write(&f, b"over IPv6\n").unwrap();
    let url = format!("ftp://[::1]:{}/v6/v6.log", w.port());
    let out = curl(&[
        "--user",
        &format!("admin:{ADMIN_PW}"),
        "--ftp-create-dirs",
        "-T",
        f.to_str().unwrap(),
        &url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = curl(&["--user", &format!("admin:{ADMIN_PW}"), &url]);
    assert_eq!(out.stdout, b"over IPv6\n");
    let out = run(
        Command::new("lftp").arg("-c").arg(format!(
            "set cmd:fail-exit yes; set ftp:ssl-allow false; set net:max-retries 1; open -u admin,{ADMIN_PW} -p {} [::1]; cat v6/v6.log",
            w.port()
        )),
        Duration::from_secs(60),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "over IPv6\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rclone(w: &World, tls: bool, args: &[&str]) -> Output {
    let obscured = ok(Command::new("rclone").args(["obscure", ADMIN_PW]));
    let mut c = Command::new("rclone");
    c.env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_ARCH_TYPE", "ftp")
        .env(
            "RCLONE_CONFIG_ARCH_HOST",
            if tls { "localhost" } else { "127.0.0.1" },
        )
        .env("RCLONE_CONFIG_ARCH_PORT", w.port().to_string())
        .env("RCLONE_CONFIG_ARCH_USER", "admin")
        .env("RCLONE_CONFIG_ARCH_PASS", obscured.trim())
        .args([
            "--contimeout",
            "20s",
            "--timeout",
            "60s",
            "--retries",
            "1",
            "--low-level-retries",
            "2",
        ]);
    if tls {
        // rclone's FTPS defaults: explicit TLS 1.3 with its session cache. Its FTP backend takes
        // the trusted CAs from Go's usual place, not from --ca-cert.
        c.env("RCLONE_CONFIG_ARCH_EXPLICIT_TLS", "true")
            .env("SSL_CERT_FILE", &w.ca);
    }
    run(c.args(args), Duration::from_secs(180))
}

#[test]
fn rclone_copies_and_syncs_into_new_folders_plain_and_ftps() {
    let w = World::start("127.0.0.1:0");
    for tls in [false, true] {
        let tag = if tls { "ftps" } else { "plain" };
        let src = w.local(&format!("rclone-src-{tag}"));
        sample(&src);
        for args in [
            vec!["mkdir".to_string(), format!("arch:rclone/{tag}/made")],
            vec![
                "copy".to_string(),
                src.display().to_string(),
                format!("arch:rclone/{tag}/copy"),
            ],
            vec![
                "sync".to_string(),
                src.display().to_string(),
                format!("arch:rclone/{tag}/sync"),
            ],
            vec![
                "check".to_string(),
                src.display().to_string(),
                format!("arch:rclone/{tag}/copy"),
            ],
        ] {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = rclone(&w, tls, &a);
            assert!(
                out.status.success(),
                "rclone {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(w.archive().join(format!("rclone/{tag}/made")).is_dir());
        assert_eq!(
            shas(&w.archive().join(format!("rclone/{tag}/copy"))),
            shas(&src),
            "{tag}"
        );
        assert_eq!(
            shas(&w.archive().join(format!("rclone/{tag}/sync"))),
            shas(&src),
            "{tag}"
        );
        let back = w.local(&format!("rclone-back-{tag}"));
        let out = rclone(
            &w,
            tls,
            &[
                "copy",
                &format!("arch:rclone/{tag}/copy"),
                back.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(shas(&back), shas(&src), "{tag} back");
        // Its modification times are kept (MFMT).
        let m = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let a = m(&src.join("plain.log"));
        let b = m(&w.archive().join(format!("rclone/{tag}/copy/plain.log")));
        let diff = a
            .duration_since(b)
            .or_else(|_| b.duration_since(a))
            .unwrap();
        assert!(
            diff < Duration::from_secs(2),
            "{tag}: mtime off by {diff:?}"
        );
    }
}

#[test]
fn wget_and_ncftp_download_and_upload() {
    let w = World::start("127.0.0.1:0");
    let src = w.local("nc-src");
    sample(&src);
    // ncftpput -m makes the folders, -R recursive.
    ok(Command::new("ncftpput")
        .args([
            "-u",
            "admin",
            "-p",
            ADMIN_PW,
            "-P",
            &w.port().to_string(),
            "-m",
            "-R",
            "-t",
            "30",
            "127.0.0.1",
            "/ncftp",
        ])
        .arg(src.join("deep")));
    assert_eq!(
        sha(&w.archive().join("ncftp/deep/a/b/big.log")),
        sha(&src.join("deep/a/b/big.log"))
    );
    let got = w.local("nc-got");
    ok(Command::new("ncftpget")
        .args([
            "-u",
            "admin",
            "-p",
            ADMIN_PW,
            "-P",
            &w.port().to_string(),
            "-t",
            "30",
            "127.0.0.1",
        ])
        .arg(&got)
        .arg("/ncftp/deep/a/b/big.log"));
    assert_eq!(
        sha(&got.join("big.log")),
        sha(&src.join("deep/a/b/big.log"))
    );
    // wget: a single file and a recursive mirror.
    let wg = w.local("wget");
    ok(Command::new("wget")
        .args(["-q", "-T", "30", "-t", "1", "-P"])
        .arg(&wg)
        .arg(format!(
            "ftp://admin:{ADMIN_PW}@127.0.0.1:{}/ncftp/deep/a/b/big.log",
            w.port()
        )));
    assert_eq!(sha(&wg.join("big.log")), sha(&src.join("deep/a/b/big.log")));
    ok(Command::new("wget")
        .args(["-q", "-T", "30", "-t", "1", "-m", "-nH", "-P"])
        .arg(wg.join("mirror"))
        .arg(format!(
            "ftp://admin:{ADMIN_PW}@127.0.0.1:{}/ncftp/",
            w.port()
        )));
    assert_eq!(
        sha(&wg.join("mirror/ncftp/deep/a/b/big.log")),
        sha(&src.join("deep/a/b/big.log"))
    );
}
