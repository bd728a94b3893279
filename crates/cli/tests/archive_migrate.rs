//! `logarchive archive migrate --to OTHER.toml`: an archive on a folder (some files compressed
//! at rest) copied into S3 (a real SeaweedFS), SIGKILLed part-way and run again: it goes on
//! where it stopped; the server on S3 then serves every file with the source's SHA-256 to the
//! accounts that came along, `fsck --full` is clean, and the way back (S3 into a new folder)
//! gives the same bytes.

use logarchive_ftp::client::{Client, ClientConfig};
use logarchive_store::s3::seaweed::SeaweedFs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod support;
use support::{add_user, bin, server_command, sha_tree, start_server, Killed, Rng};

const FILES: usize = 300;

fn archive(config: &Path, data: &Path, args: &[&str]) -> (bool, String) {
    let out = bin()
        .arg("archive")
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every file of `want` read back over FTP from the server on `port`, by SHA-256.
fn check_over_ftp(port: u16, want: &std::collections::BTreeMap<String, String>) {
    let want = want.clone();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let cfg = ClientConfig::new("127.0.0.1", port, "reader", "reader-password");
            let mut c = Client::connect(cfg)
                .await
                .expect("the reader's account came along");
            let mut wrong = Vec::new();
            for (p, h) in &want {
                match c.remote_sha256(&format!("/agent01/{p}")).await {
                    Ok(got) if &got == h => {}
                    other => wrong.push(format!("{p}: {other:?}")),
                }
            }
            assert!(
                wrong.is_empty(),
                "{} missing or different: {wrong:?}",
                wrong.len()
            );
        });
}

#[test]
fn a_folder_archive_moves_into_s3_and_back_resuming_after_a_kill() {
    let weed = SeaweedFs::start().expect("SeaweedFS");
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The folder archive compresses what is quiet for a second.
    let local_toml = d.path().join("local.toml");
    std::fs::write(&local_toml, "[storage]\ncompress_after = \"1s\"\n").unwrap();
    add_user(&data, "agent01", "agent-password", &[]);
    add_user(&data, "reader", "reader-password", &["--role", "viewer"]);
    let mut c = server_command(&data, "127.0.0.1:0");
    c.arg("--config").arg(&local_toml);
    let mut server = start_server(c);

    let src = d.path().join("src");
    let mut rng = Rng(11);
    for i in 0..FILES {
        let size = if i % 10 == 0 {
            3_000_000
        } else {
            rng.next() as usize % 60_000
        };
        let line = format!("2026-12-02 10:00:00 INFO file {i} line\n");
        let bytes: Vec<u8> = line.bytes().cycle().take(size).collect();
        let p = src.join(format!("Logs/A{:02}/f{i:04}.log", i % 7));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    std::fs::write(d.path().join("pw"), "agent-password\n").unwrap();
    let agent_config = d.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "agent_id = \"agent01\"\nserver = \"ftp://{}\"\nuser = \"agent01\"\npassword_file = \"{}\"\n\
             state_db = \"{}\"\nquiet_period = \"0s\"\n[[source]]\nroot = \"{}\"\n",
            server.ftp,
            d.path().join("pw").display(),
            d.path().join("agent01.db").display(),
            src.display()
        ),
    )
    .unwrap();
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
    // The catalog has caught up and the big files are compressed at rest.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = archive(&local_toml, &data, &["fsck"]);
        let packed = walkdir_count(&data.join("archive"), ".zst");
        if ok && packed >= FILES / 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled in 60 s ({packed} compressed): {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server.child.kill_now();

    // The target: S3, with a data folder of its own (for its metadata and the accounts).
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
    let s3_data = d.path().join("s3data");
    let s3_toml = d.path().join("s3.toml");
    std::fs::write(
        &s3_toml,
        format!(
            "data = \"{}\"\n[storage]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\n\
             prefix = \"migrated\"\ncredentials_file = \"{}\"\ngc_grace = \"1s\"\n",
            s3_data.display(),
            weed.endpoint,
            weed.bucket,
            d.path().join("s3.env").display()
        ),
    )
    .unwrap();

    // Killed once it is well under way.
    let mut child = Killed::spawn(
        bin()
            .arg("archive")
            .arg("--config")
            .arg(&local_toml)
            .arg("--data")
            .arg(&data)
            .arg("migrate")
            .arg("--to")
            .arg(&s3_toml)
            .stderr(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut killed_at = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if let Some(done) = line
            .strip_prefix("migrate: ")
            .and_then(|l| l.split('/').next())
            .and_then(|n| n.parse::<usize>().ok())
        {
            if (20..FILES).contains(&done) {
                child.kill_now();
                killed_at = Some(done);
                break;
            }
        }
    }
    let n = killed_at.expect("the migration ended before it could be killed: make it bigger");
    let (ok, out) = archive(
        &local_toml,
        &data,
        &["migrate", "--to", s3_toml.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    // The source's files and the agent's status document.
    let all = FILES + 1;
    assert!(out.contains(&format!("migrate: {all} files")), "{out}");
    // What the first run finished is not copied again.
    let already: usize = out
        .split(", ")
        .find_map(|p| p.split_once(" already there").map(|(n, _)| n))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        already >= n - 1,
        "killed after {n}, resumed with {already} there: {out}"
    );
    // Run again: everything is there.
    let (ok, out) = archive(
        &local_toml,
        &data,
        &["migrate", "--to", s3_toml.to_str().unwrap()],
    );
    assert!(
        ok && out.contains(&format!("0 copied and verified, {all} already there")),
        "{out}"
    );

    // The server on S3 serves it all, to the accounts that came along.
    let want = sha_tree(&src);
    let mut s3_server = start_server({
        let mut c = server_command(&s3_data, "127.0.0.1:0");
        c.arg("--config").arg(&s3_toml);
        c
    });
    check_over_ftp(s3_server.ftp.port(), &want);
    s3_server.child.kill_now();
    let (ok, out) = archive(&s3_toml, &s3_data, &["fsck", "--full"]);
    assert!(ok, "{out}");

    // And back into a folder: the same bytes.
    let back_data = d.path().join("back");
    let back_toml = d.path().join("back.toml");
    std::fs::write(&back_toml, format!("data = \"{}\"\n", back_data.display())).unwrap();
    let (ok, out) = archive(
        &s3_toml,
        &s3_data,
        &["migrate", "--to", back_toml.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let back = sha_tree(&back_data.join("archive/agent01"));
    for (p, h) in &want {
        assert_eq!(back.get(p), Some(h), "{p} after the way back");
    }
}

fn walkdir_count(dir: &Path, suffix: &str) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += walkdir_count(&p, suffix);
            } else if p.to_string_lossy().ends_with(suffix) {
                n += 1;
            }
        }
    }
    n
}
