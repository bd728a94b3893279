//! The `logarchive` binary as users run it: `user`, `server`, `ftp`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

mod support;
use support::{bin, server_command, start_server};

fn run_with_stdin(mut c: Command, stdin: &str) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits before reading stdin: a broken pipe here is
    // part of what is tested, not a failure of the test.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
        _ => {}
    }
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ftp(port: u16, user: &str, password: &str, args: &[&str]) -> Output {
    let mut c = bin();
    c.arg("ftp").env("LOGARCHIVE_PASSWORD", password);
    for a in args {
        c.arg(a.replace("URL", &format!("ftp://{user}@127.0.0.1:{port}")));
    }
    c.output().unwrap()
}

#[test]
fn user_commands_edit_the_users_file_without_clear_passwords() {
    let d = tempfile::tempdir().unwrap();
    let mut add = bin();
    add.args(["user", "--data"])
        .arg(d.path())
        .args(["add", "agent01", "--password-stdin"]);
    ok(&run_with_stdin(add, "s3cret-password\n"));
    let users = d.path().join("users.toml");
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.contains("$argon2id$") && !text.contains("s3cret-password"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&users).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut set = bin();
    set.args(["user", "--users"]).arg(&users).args([
        "set",
        "agent01",
        "--upload-limit",
        "2MiB",
        "--enabled",
        "false",
    ]);
    ok(&set.output().unwrap());
    let mut list = bin();
    list.args(["user", "--data"]).arg(d.path()).arg("list");
    let out = ok(&list.output().unwrap());
    assert!(
        out.contains("agent01")
            && out.contains("/agent01")
            && out.contains("2.0 MiB/s")
            && out.contains(" no "),
        "{out}"
    );

    // Duplicates, unknown users, bad rights and short passwords are clear errors.
    let mut dup = bin();
    dup.args(["user", "--data"])
        .arg(d.path())
        .args(["add", "agent01", "--password-stdin"]);
    let o = run_with_stdin(dup, "another-password\n");
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let mut bad = bin();
    bad.args(["user", "--data"]).arg(d.path()).args([
        "add",
        "x",
        "--rights",
        "list,fly",
        "--password-stdin",
    ]);
    let o = run_with_stdin(bad, "long-enough-pw\n");
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("fly"));
    let mut short = bin();
    short
        .args(["user", "--data"])
        .arg(d.path())
        .args(["add", "y", "--password-stdin"]);
    let o = run_with_stdin(short, "short\n");
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("too short"));
    // No password source at all (no terminal here): refused, not a default.
    let mut none = bin();
    none.args(["user", "--data"])
        .arg(d.path())
        .args(["add", "z"])
        .stdin(Stdio::null());
    assert!(!none.output().unwrap().status.success());

    let mut rm = bin();
    rm.args(["user", "--data"])
        .arg(d.path())
        .args(["remove", "agent01"]);
    ok(&rm.output().unwrap());
    assert!(!std::fs::read_to_string(&users).unwrap().contains("agent01"));

    // Every change is in the data folder's audit trail (what a server there shows), with
    // what changed and who ran the command; refusals and listings are not.
    let db = rusqlite::Connection::open(d.path().join("catalog.db")).unwrap();
    let rows: Vec<(String, String, String, String)> = db
        .prepare("SELECT via, action, target, detail FROM audit ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        actions,
        ["account.add", "account.change", "account.remove"],
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r.0 == "cli" && r.2 == "agent01"));
    assert_eq!(
        rows[1].3,
        "upload_limit: unlimited -> 2.0 MiB/s; enabled: true -> false"
    );
}

#[test]
fn server_and_ftp_commands_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let mut server = start_server(server_command(&data, "127.0.0.1:0"));
    let admin = server
        .admin_password
        .clone()
        .expect("first start prints the admin password");
    assert!(!std::fs::read_to_string(data.join("users.toml"))
        .unwrap()
        .contains(&admin));
    let p = server.ftp.port();

    // An agent account through the CLI, picked up by the running server.
    let mut add = bin();
    add.args(["user", "--data"])
        .arg(&data)
        .args(["add", "agent01", "--password-stdin"]);
    ok(&run_with_stdin(add, "agent-password\n"));

    let local = d.path().join("local");
    std::fs::create_dir_all(local.join("Logs/App/20240723")).unwrap();
    std::fs::write(local.join("Logs/App/20240723/a.txt"), b"one\ntwo\r\n").unwrap();
    std::fs::write(local.join("Logs/b.log"), vec![7u8; 300_000]).unwrap();

    let o = ftp(
        p,
        "agent01",
        "agent-password",
        &["put", "-r", "URL/", local.join("Logs").to_str().unwrap()],
    );
    ok(&o);
    assert_eq!(
        std::fs::read(data.join("archive/agent01/Logs/App/20240723/a.txt")).unwrap(),
        b"one\ntwo\r\n"
    );
    let out = ok(&ftp(p, "agent01", "agent-password", &["ls", "URL/Logs"]));
    assert!(
        out.contains("b.log") && out.contains("300000") && out.contains("App"),
        "{out}"
    );

    let back = d.path().join("back");
    ok(&ftp(
        p,
        "agent01",
        "agent-password",
        &["get", "-r", "URL/Logs", back.to_str().unwrap()],
    ));
    assert_eq!(
        std::fs::read(back.join("App/20240723/a.txt")).unwrap(),
        b"one\ntwo\r\n"
    );
    // Resume a partial download.
    std::fs::write(back.join("b.log"), vec![7u8; 1000]).unwrap();
    ok(&ftp(
        p,
        "agent01",
        "agent-password",
        &[
            "get",
            "--resume",
            "URL/Logs/b.log",
            back.join("b.log").to_str().unwrap(),
        ],
    ));
    assert_eq!(
        std::fs::read(back.join("b.log")).unwrap(),
        vec![7u8; 300_000]
    );

    ok(&ftp(
        p,
        "agent01",
        "agent-password",
        &["mkdir", "URL/x/y/z"],
    ));
    assert!(data.join("archive/agent01/x/y/z").is_dir());
    // What the server made is for its own user alone.
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [
        (data.join("archive/agent01/Logs/App/20240723/a.txt"), 0o600),
        (data.join("archive/agent01/Logs/App"), 0o700),
        (data.join("archive/agent01/x/y/z"), 0o700),
        (data.join("catalog.db"), 0o600),
        (data.join("users.toml"), 0o600),
    ] {
        let m = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, mode, "{} is {m:o}", path.display());
    }

    // Exit codes and one-line errors.
    let o = ftp(p, "agent01", "wrong-password", &["ls", "URL/"]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("login refused for agent01 at 127.0.0.1:{p}"))
            && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(
        ftp(
            p,
            "agent01",
            "agent-password",
            &["get", "URL/nope.txt", d.path().join("n").to_str().unwrap()]
        )
        .status
        .code(),
        Some(4)
    );
    assert_eq!(
        ftp(p, "agent01", "agent-password", &["rm", "URL/Logs/b.log"])
            .status
            .code(),
        Some(5),
        "agents cannot delete"
    );
    // The admin can.
    ok(&ftp(
        p,
        "admin",
        &admin,
        &["mv", "URL/agent01/Logs/b.log", "/agent01/Logs/c.log"],
    ));
    ok(&ftp(p, "admin", &admin, &["rm", "URL/agent01/Logs/c.log"]));
    assert!(!data.join("archive/agent01/Logs/c.log").exists());
    let o = ftp(
        p,
        "agent01",
        "agent-password",
        &["ls", "ftp://agent01:pw@127.0.0.1:1/"],
    );
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("no password in the URL")
    );

    assert!(server.child.terminate().success(), "clean exit on SIGTERM");
    // A second start keeps the accounts and prints no new password.
    let mut again = start_server(server_command(&data, "127.0.0.1:0"));
    assert!(again.admin_password.is_none());
    assert!(again.child.terminate().success());
}

#[test]
fn user_commands_run_as_root_keep_the_owner_and_mode_of_the_files() {
    // The server runs as its own user; an operator runs `sudo logarchive user ...`. The users
    // file and its lock must stay the server's, or the server can no longer read them.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test writes as root for another user and needs root (CI runs as root)"
    );
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let (uid, gid) = (65534, 65534);
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    let mut add = bin();
    add.args(["user", "--data"])
        .arg(&data)
        .args(["add", "agent01", "--password-stdin"]);
    ok(&run_with_stdin(add, "agent-password\n"));
    let users = data.join("users.toml");
    for p in [&users, &data.join("users.toml.lock")] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{}", p.display());
    }
    assert_eq!(std::fs::metadata(&users).unwrap().mode() & 0o777, 0o600);
    // A mode the operator chose is kept too.
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut set = bin();
    set.args(["user", "--data"])
        .arg(&data)
        .args(["set", "agent01", "--enabled", "false"]);
    ok(&set.output().unwrap());
    let m = std::fs::metadata(&users).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (uid, gid, 0o640));
    assert!(std::fs::read_to_string(&users)
        .unwrap()
        .contains("enabled = false"));
}

/// For machines: `--log-format json` writes one JSON object per log line, and the start line
/// says when FTPS is required.
#[test]
fn json_logs_and_a_start_line_that_says_ftps_is_required() {
    use std::io::{BufRead, BufReader};
    let d = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (d.path().join("cert.pem"), d.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let config = d.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "tls_cert = {cert:?}\ntls_key = {key:?}\n[ftp]\ntls_required = true\n",
            cert = cert.display().to_string(),
            key = key.display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = server_command(&d.path().join("data"), "127.0.0.1:0");
    cmd.arg("--config")
        .arg(&config)
        .args(["--log-format", "json"])
        .env("LOGARCHIVE_LOG", "info");
    let mut child = support::Killed::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let start = stdout
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("web on"))
        .expect("the start line");
    assert!(start.contains("(FTPS required)"), "{start}");
    assert!(start.contains("web on https://"), "{start}");
    // The first log line (the catalog's reconcile at start, at the latest) is a JSON object.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let line = stderr
        .lines()
        .map_while(Result::ok)
        .next()
        .expect("a log line");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    assert!(
        !line.contains('\u{1b}'),
        "colour codes in a log for machines: {line}"
    );
}

/// `logarchive tls init` gives a CA for the agents and a certificate for the server that FTPS
/// clients trusting that CA accept (a self-signed certificate used as its own CA is not).
#[test]
fn tls_init_makes_a_ca_and_a_server_certificate_that_clients_accept() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let tls = d.path().join("tls");
    let init = |force: bool| {
        let mut c = bin();
        c.args(["tls", "init", "--dir"]).arg(&tls);
        c.args(["--name", "localhost,127.0.0.1"]);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    ok(&init(false));
    for (file, mode) in [
        ("ca.pem", 0o644),
        ("ca-key.pem", 0o600),
        ("cert.pem", 0o644),
        ("key.pem", 0o600),
    ] {
        let m = std::fs::metadata(tls.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, mode, "{file} is {m:o}");
    }
    // Never replaced by accident: the agents trust that CA.
    let again = init(false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let data = d.path().join("data");
    support::add_user(&data, "agent01", "agent-password", &[]);
    let mut cmd = server_command(&data, "127.0.0.1:0");
    cmd.arg("--tls-cert")
        .arg(tls.join("cert.pem"))
        .arg("--tls-key")
        .arg(tls.join("key.pem"));
    let server = start_server(cmd);
    let ls = bin()
        .env("LOGARCHIVE_PASSWORD", "agent-password")
        .args(["ftp", "ls", "--ca-file"])
        .arg(tls.join("ca.pem"))
        .arg(format!("ftps://agent01@127.0.0.1:{}/", server.ftp.port()))
        .output()
        .unwrap();
    ok(&ls);
    // Without the CA the certificate is not trusted.
    let untrusted = bin()
        .env("LOGARCHIVE_PASSWORD", "agent-password")
        .args(["ftp", "ls"])
        .arg(format!("ftps://agent01@127.0.0.1:{}/", server.ftp.port()))
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    // The system's store is the platform's (rustls-native-certs), which honours SSL_CERT_FILE:
    // the CA there is trusted without --ca-file; a store with nothing usable is said so.
    let ls = |store: &std::path::Path| {
        bin()
            .env("LOGARCHIVE_PASSWORD", "agent-password")
            .env("SSL_CERT_FILE", store)
            .env_remove("SSL_CERT_DIR")
            .args(["ftp", "ls"])
            .arg(format!("ftps://agent01@127.0.0.1:{}/", server.ftp.port()))
            .output()
            .unwrap()
    };
    ok(&ls(&tls.join("ca.pem")));
    let empty = d.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let o = ls(&empty);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("no usable CA certificate in the system's store"),
        "{o:?}"
    );
}

/// `--check` finds every problem at once, one line each naming its key or file, and exits
/// non-zero; a good configuration is "ok" (the agent's check logs in to the server).
#[test]
fn check_names_each_configuration_problem_of_server_and_agent() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    support::add_user(&data, "agent01", "agent-password", &[]);
    let server = start_server(server_command(&data, "127.0.0.1:0"));

    // Server: a port in use, a key that is not there, a bad passive range.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bad = d.path().join("bad-server.toml");
    std::fs::write(
        &bad,
        format!(
            "ftp_listen = \"{}\"\nweb_listen = \"127.0.0.1:0\"\ntls_cert = \"/nonexistent/cert.pem\"\n\
             tls_key = \"/nonexistent/key.pem\"\n[ftp]\npassive_ports = \"60000-50000\"\n",
            taken.local_addr().unwrap()
        ),
    )
    .unwrap();
    let o = bin()
        .args(["server", "--check", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for want in ["ftp_listen", "/nonexistent/cert.pem", "passive"] {
        assert!(out.contains(want), "--check did not name {want}:\n{out}");
    }
    assert_eq!(out.lines().count(), 3, "{out}");
    let good = bin()
        .args(["server", "--check", "--data"])
        .arg(&data)
        .args(["--ftp-listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(ok(&good).ends_with(": ok\n"));

    // Agent: a good configuration reaches and logs in to the server.
    std::fs::write(d.path().join("pw"), "agent-password\n").unwrap();
    std::fs::create_dir_all(d.path().join("src")).unwrap();
    let agent = |server_url: &str, root: &str, extra: &str| {
        let p = d.path().join("agent.toml");
        std::fs::write(
            &p,
            format!(
                "agent_id = \"agent01\"\nserver = \"{server_url}\"\nuser = \"agent01\"\n\
                 password_file = \"{pw}\"\nstate_db = \"{db}\"\n{extra}\n[[source]]\nroot = \"{root}\"\n",
                pw = d.path().join("pw").display(),
                db = d.path().join("state.db").display(),
            ),
        )
        .unwrap();
        p
    };
    let check = |p: std::path::PathBuf| {
        bin()
            .args(["agent", "--check", "--config"])
            .arg(&p)
            .output()
            .unwrap()
    };
    let src = d.path().join("src").display().to_string();
    let o = check(agent(
        &format!("ftp://127.0.0.1:{}", server.ftp.port()),
        &src,
        "",
    ));
    assert!(ok(&o).ends_with(": ok\n"));
    // A missing source root and a missing CA file: two lines (connecting would only tell the
    // CA again).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let bad_ca = agent(
        &format!("ftps://{closed}"),
        "/nonexistent/logs",
        "ca_file = \"/nonexistent/ca.pem\"",
    );
    let o = check(bad_ca.clone());
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for want in ["/nonexistent/logs", "ca_file /nonexistent/ca.pem"] {
        assert!(out.contains(want), "--check did not name {want}:\n{out}");
    }
    assert_eq!(out.lines().count(), 2, "{out}");
    // Started with that CA file, the agent refuses at once instead of failing every upload.
    let t = std::time::Instant::now();
    let o = bin()
        .args(["agent", "--config"])
        .arg(&bad_ca)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ca_file /nonexistent/ca.pem"),
        "{o:?}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t.elapsed()
    );
    // A server that does not answer.
    let o = check(agent(&format!("ftp://{closed}"), &src, ""));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("server ftp://"), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
}

/// The password prompt on a real terminal (a pty, driven by Python): typed keys with echo off,
/// and Ctrl-C gives up with the terminal's echo back on (a signal would have left it off).
#[test]
fn the_password_prompt_restores_the_terminal_after_ctrl_c() {
    let d = tempfile::tempdir().unwrap();
    let driver = r#"
import os, pty, subprocess, sys, termios, time
bin, data, keys = sys.argv[1], sys.argv[2], sys.argv[3].encode().decode("unicode_escape").encode("latin-1")
master, slave = pty.openpty()
p = subprocess.Popen([bin, "user", "--data", data, "add", "alice", "--role", "viewer"],
                     stdin=slave, stdout=slave, stderr=slave, close_fds=True)
out = b""
deadline = time.time() + 20
def expect(text):
    global out
    while text not in out:
        if time.time() > deadline:
            sys.exit("never saw %r in %r" % (text, out))
        try:
            out += os.read(master, 1024)
        except OSError:
            sys.exit("the prompt ended early: %r" % out)
for chunk in keys.split(b"|"):
    expect(b"assword: ")
    echo_off = not (termios.tcgetattr(slave)[3] & termios.ECHO)
    if not echo_off:
        sys.exit("echo is on at the prompt")
    out = b""
    os.write(master, chunk)
code = p.wait(timeout=20)
echo_back = bool(termios.tcgetattr(slave)[3] & termios.ECHO)
print("exit", code, "echo", echo_back)
"#;
    let run = |keys: &str| {
        let o = std::process::Command::new("python3")
            .args(["-c", driver, env!("CARGO_BIN_EXE_logarchive")])
            .arg(d.path())
            .arg(keys)
            .output()
            .expect("python3");
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    // Ctrl-C at the prompt: refused, nothing added, echo back on.
    assert_eq!(run("half a pass\\x03"), "exit 1 echo True");
    assert!(
        !d.path().join("users.toml").exists() || {
            let t = std::fs::read_to_string(d.path().join("users.toml")).unwrap();
            !t.contains("alice")
        }
    );
    // Typed twice, with a correction: added.
    assert_eq!(
        run("secret-passX\\x7f\\r|secret-pass\\r"),
        "exit 0 echo True"
    );
    let t = std::fs::read_to_string(d.path().join("users.toml")).unwrap();
    assert!(t.contains("alice"), "{t}");
}
