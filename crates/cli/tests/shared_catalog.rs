//! Two `logarchive server` processes sharing one data folder and one PostgreSQL catalog, used as
//! an operator would: accounts made with `logarchive user --config server.toml`, `--check`, an
//! agent with both servers in its list; the first server SIGKILLed mid-way. Every file arrives
//! once, whichever server took it, and the other server serves it.

mod support;

use logarchive_server::pg_harness::Postgres;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

fn user_add(config: &std::path::Path, name: &str, password: &str, role: &str) -> (bool, String) {
    let mut child = bin()
        .args(["user", "--config"])
        .arg(config)
        .args(["add", name, "--role", role, "--password-stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting user add");
    let mut stdin = child.stdin.take().expect("piped stdin");
    writeln!(stdin, "{password}").expect("writing the password");
    drop(stdin);
    let out = child.wait_with_output().expect("waiting for user add");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_server_processes_share_accounts_and_catalog_through_postgresql() {
    let pg = Postgres::start().unwrap();
    let url = pg.database("logarchive").unwrap();
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "data = \"{}\"\n[catalog]\nurl = \"{url}\"\npassword_file = \"{}\"\n",
            d.path().join("data").display(),
            pg.password_file().display()
        ),
    )
    .unwrap();

    // Accounts straight into PostgreSQL, before any server ran.
    assert_eq!(
        user_add(&config, "agent01", "agent-password", "agent"),
        (true, String::new())
    );
    assert!(user_add(&config, "viewer", "viewer-password", "viewer").0);
    let (ok, err) = user_add(&config, "agent01", "agent-password", "agent");
    assert!(!ok && err.contains("already exists"), "{err}");
    assert_eq!(
        pg.sql_in("logarchive", "SELECT name FROM accounts ORDER BY name")
            .unwrap(),
        "agent01\nviewer"
    );
    let out = bin()
        .args(["server", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let start = || {
        let mut c = bin();
        c.args(["server", "--config"]).arg(&config).args([
            "--ftp-listen",
            "127.0.0.1:0",
            "--web-listen",
            "127.0.0.1:0",
        ]);
        start_server(c)
    };
    let mut first = start();
    let second = start();
    assert!(
        first.admin_password.is_none() && second.admin_password.is_none(),
        "accounts exist: no first admin is made"
    );

    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("Logs")).unwrap();
    std::fs::write(src.join("Logs/before.log"), "taken by the first\n").unwrap();
    std::fs::write(d.path().join("pw"), "agent-password\n").unwrap();
    let agent_config = d.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "agent_id = \"agent01\"\nserver = [\"ftp://{}\", \"ftp://{}\"]\nuser = \"agent01\"\n\
             password_file = \"{}\"\nstate_db = \"{}\"\nquiet_period = \"0s\"\n\
             [[source]]\nroot = \"{}\"\n",
            first.ftp,
            second.ftp,
            d.path().join("pw").display(),
            d.path().join("agent01.db").display(),
            src.display()
        ),
    )
    .unwrap();
    let once = || {
        let out = bin()
            .args(["agent", "--once", "--config"])
            .arg(&agent_config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    once();
    let auth = base64(b"viewer:viewer-password");
    let listed =
        |web: &str, name: &str| http_get(web, "/api/v1/browse/agent01/Logs", &auth).contains(name);
    wait_for(
        "the second server lists what the first took",
        Duration::from_secs(2),
        || listed(&second.web, "before.log"),
    );

    // The first server dies; the agent goes on through the second, which lists it at once.
    first.child.kill_now();
    std::fs::write(src.join("Logs/after.log"), "taken by the second\n").unwrap();
    once();
    wait_for(
        "the second server lists the new file",
        Duration::from_secs(2),
        || listed(&second.web, "after.log"),
    );
    // Once each, with the SHA-256 of the source.
    let rows = pg
        .sql_in(
            "logarchive",
            "SELECT path || ' ' || coalesce(sha256, '-') FROM files ORDER BY path",
        )
        .unwrap();
    let sha = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };
    assert_eq!(
        rows,
        format!(
            "/agent01/Logs/after.log {}\n/agent01/Logs/before.log {}",
            sha(b"taken by the second\n"),
            sha(b"taken by the first\n")
        )
    );
}
