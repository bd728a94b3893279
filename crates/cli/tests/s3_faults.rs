//! The server SIGKILLed at random moments while an agent synchronises into S3 (a real
//! SeaweedFS, `weed mini`) and quiet files are compressed (`compress_after = "1s"`): afterwards every file is in the bucket once with the source's
//! SHA-256, no temporary name is left, and the objects the kills orphaned are collected;
//! `archive fsck --full` and `du` agree, and fsck names an object lost or stray behind the
//! server's back.

use logarchive_ftp::client::{Client, ClientConfig, EntryKind};
use logarchive_store::s3::seaweed::SeaweedFs;
use std::time::{Duration, Instant};

mod support;
use support::{add_user, bin, server_command, sha_tree, spawn_agent, start_server, Rng};

const FILES: usize = 400;
const SERVER_KILLS: usize = 6;

#[test]
fn the_server_killed_mid_upload_to_s3_loses_nothing() {
    let weed = SeaweedFs::start().expect("SeaweedFS");
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let creds = weed.credentials();
    std::fs::write(
        d.path().join("s3.env"),
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            creds.access_key_id,
            creds.secret()
        ),
    )
    .unwrap();
    let config = data.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"faults\"\n\
             credentials_file = \"{}\"\ngc_grace = \"1s\"\ncompress_after = \"1s\"\n",
            weed.endpoint,
            weed.bucket,
            d.path().join("s3.env").display()
        ),
    )
    .unwrap();
    let server_at = |ftp: &str| {
        let mut c = server_command(&data, ftp);
        c.arg("--config").arg(&config);
        start_server(c)
    };
    add_user(&data, "agent01", "agent-password", &[]);
    add_user(&data, "reader", "reader-password", &["--role", "viewer"]);
    let mut server = server_at("127.0.0.1:0");
    let ftp = server.ftp.to_string();

    // Small files, and some of 12 MB (two segments) so that kills land mid-upload.
    let src = d.path().join("src");
    let mut rng = Rng(7);
    let mut want_sizes = Vec::new();
    for i in 0..FILES {
        let size = if i % 40 == 0 {
            12_000_000
        } else {
            rng.next() as usize % 100_000
        };
        let bytes: Vec<u8> = (0..size).map(|_| (rng.next() % 251) as u8).collect();
        want_sizes.push(size);
        let p = src.join(format!("Logs/A{:02}/f{i:04}.log", i % 10));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    std::fs::write(d.path().join("pw"), "agent-password\n").unwrap();
    let agent_config = d.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "agent_id = \"agent01\"\nserver = \"ftp://{ftp}\"\nuser = \"agent01\"\npassword_file = \"{}\"\n\
             state_db = \"{}\"\nquiet_period = \"0s\"\nscan_interval = \"1s\"\nmax_backoff = \"1s\"\nmax_parallel_uploads = 2\n\
             [[source]]\nroot = \"{}\"\n",
            d.path().join("pw").display(),
            d.path().join("agent01.db").display(),
            src.display()
        ),
    )
    .unwrap();
    let mut agent = spawn_agent(&agent_config);
    for _ in 0..SERVER_KILLS {
        // Random moments: the faults being injected, not synchronisation.
        std::thread::sleep(Duration::from_millis(200 + rng.next() % 700));
        server.child.kill_now();
        std::thread::sleep(Duration::from_millis(rng.next() % 300));
        server = server_at(&ftp);
    }
    agent.kill_now();
    let once = bin()
        .args(["agent", "--once", "--config"])
        .arg(&agent_config)
        .output()
        .unwrap();
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );

    // Checked over FTP as a viewer: what the store holds, not what a local folder does.
    let want = sha_tree(&src);
    let port = server.ftp.port();
    tokio::runtime::Runtime::new().unwrap().block_on(async move {
        let mut cfg = ClientConfig::new("127.0.0.1", port, "reader", "reader-password");
        cfg.reconnect_attempts = 2;
        let mut c = Client::connect(cfg).await.expect("reader logs in");
        let mut lost = Vec::new();
        for (p, h) in &want {
            match c.remote_sha256(&format!("/agent01/{p}")).await {
                Ok(got) if &got == h => {}
                other => lost.push(format!("{p}: {other:?}")),
            }
        }
        assert!(lost.is_empty(), "{} lost or different: {lost:?}", lost.len());
        // Every name in the store: the source's files (and the agent's status), nothing else.
        let mut names = Vec::new();
        let mut dirs = vec!["/agent01".to_string()];
        while let Some(dir) = dirs.pop() {
            for e in c.list(&dir).await.expect("listing") {
                let path = format!("{dir}/{}", e.name);
                match e.kind {
                    EntryKind::Dir if e.name != ".logarchive" => dirs.push(path),
                    EntryKind::Dir => {}
                    _ => names.push(path),
                }
            }
        }
        let temps = names.iter().filter(|n| n.contains("logarchive-tmp")).count();
        let versions = names.iter().filter(|n| n.contains(".~")).count();
        println!(
            "{SERVER_KILLS} server SIGKILLs; files: {}; in the store: {}; temporary: {temps}; versions: {versions}",
            want.len(),
            names.len()
        );
        assert_eq!((temps, versions, names.len()), (0, 0, want.len()));
    });

    // What the kills orphaned (segments PUT but never recorded) is collected: the metadata
    // database ends with no garbage waiting, once the grace period has passed (rows of
    // deleted objects stay a minute more, for a second delete).
    let db = data.join("store.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from garbage where deleted_ms is null').fetchone()[0])")
            .arg(&db)
            .output()
            .expect("python3");
        let waiting: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(u64::MAX);
        if waiting == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} objects still waiting for collection after 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // `archive fsck --full` agrees, beside the running server; `du` counts the agent's files.
    let archive = |args: &[&str]| {
        let out = bin()
            .arg("archive")
            .arg("--config")
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // Kills also landed among compactions: files were rewritten as compressed objects.
    let compressed = || {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from segment where zsize is not null').fetchone()[0])")
            .arg(data.join("store.db"))
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<usize>()
            .unwrap_or(0)
    };
    // (Files under 4 KiB stay as they are.) Waited for before fsck reads everything back.
    let big = want_sizes.iter().filter(|s| **s >= 4096).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while compressed() < big {
        assert!(
            Instant::now() < deadline,
            "{} of {big} files compressed after 60 s",
            compressed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let (ok, out, err) = archive(&["fsck", "--full"]);
    assert!(ok, "fsck --full failed:\n{out}{err}");
    assert!(
        out.contains(&format!("fsck: {FILES} files"))
            && out.contains(&format!("{FILES} read back and hashed")),
        "{out}"
    );
    let (ok, out, _) = archive(&["du"]);
    assert!(ok);
    let line = out
        .lines()
        .find(|l| l.starts_with("agent01"))
        .expect("agent01 in du");
    assert!(
        line.split_whitespace().nth(1) == Some(&FILES.to_string()),
        "{out}"
    );

    // A lost object and a stray one, made behind the server's back with curl (SigV4): fsck
    // names both and fails.
    let key: String = {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select key from segment where length(key) > 0 order by key limit 1').fetchone()[0])")
            .arg(data.join("store.db"))
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let curl = |method: &str, path: &str| {
        let mut c = std::process::Command::new("curl");
        c.args(["-sf", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{}:{}", creds.access_key_id, creds.secret()))
            .args(if method == "PUT" {
                &[][..]
            } else {
                &["-X", "DELETE"][..]
            });
        if method == "PUT" {
            // An upload of a file (curl signs its body; `--data-binary` it does not).
            let stray = d.path().join("stray");
            std::fs::write(&stray, "stray bytes").unwrap();
            c.arg("-T").arg(stray);
        }
        let status = c
            .arg(format!("{}/{}/faults/{path}", weed.endpoint, weed.bucket))
            .status()
            .expect("curl");
        assert!(status.success(), "curl {method} {path}: {status}");
    };
    curl("DELETE", &key);
    curl("PUT", "objects/stray0000");
    let (ok, out, _) = archive(&["fsck"]);
    assert!(!ok, "fsck passed a damaged archive:\n{out}");
    assert!(
        out.contains(&format!("object {key} is missing")),
        "the lost object is not named:\n{out}"
    );
    assert!(
        out.contains("object objects/stray0000: no file names it"),
        "the stray object is not named:\n{out}"
    );
    drop(server);
}
