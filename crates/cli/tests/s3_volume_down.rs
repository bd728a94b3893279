//! The object store loses its volume server mid-sync: SeaweedFS as separate processes (master,
//! filer and S3 gateway in one; the volume server alone), the volume server SIGKILLed while an
//! agent uploads into the archive server on S3, and started again seconds later. Nothing is
//! lost: afterwards every file is in the archive once with the source's SHA-256, what waited
//! inline meanwhile is packed into objects, and `archive fsck --full` is clean.

use logarchive_store::s3::seaweed::SeaweedFs;
use std::time::{Duration, Instant};

mod support;
use support::{
    add_user, archive_command, assert_archived_over_ftp, base64, bin, http_get, server_command,
    sha_tree, spawn_agent, start_server, Rng,
};

const FILES: usize = 300;

fn metric(web: &str, auth: &str, name: &str) -> f64 {
    http_get(web, "/metrics", auth)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[test]
fn the_store_losing_its_volume_server_mid_sync_loses_nothing() {
    let mut weed = SeaweedFs::start_split().expect("SeaweedFS (split)");
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
            "[storage]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"vol\"\n\
             credentials_file = \"{}\"\ngc_grace = \"1s\"\n",
            weed.endpoint,
            weed.bucket,
            d.path().join("s3.env").display()
        ),
    )
    .unwrap();
    add_user(&data, "agent01", "agent-password", &[]);
    add_user(&data, "reader", "reader-password", &["--role", "viewer"]);
    let mut c = server_command(&data, "127.0.0.1:0");
    c.arg("--config").arg(&config);
    let server = start_server(c);

    // Small files (they wait inline, then are packed into objects) and some of 3 MB (objects
    // of their own), written slowly enough that the outage lands mid-sync.
    let src = d.path().join("src");
    let mut rng = Rng(5);
    for i in 0..FILES {
        let size = if i % 15 == 0 {
            3_000_000
        } else {
            rng.next() as usize % 50_000
        };
        let bytes: Vec<u8> = (0..size).map(|_| (rng.next() % 251) as u8).collect();
        let p = src.join(format!("Logs/B{:02}/f{i:04}.log", i % 6));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    std::fs::write(d.path().join("pw"), "agent-password\n").unwrap();
    let agent_config = d.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "agent_id = \"agent01\"\nserver = \"ftp://{}\"\nuser = \"agent01\"\npassword_file = \"{}\"\n\
             state_db = \"{}\"\nquiet_period = \"0s\"\nscan_interval = \"1s\"\nmax_backoff = \"1s\"\n\
             [[source]]\nroot = \"{}\"\n",
            server.ftp,
            d.path().join("pw").display(),
            d.path().join("agent01.db").display(),
            src.display()
        ),
    )
    .unwrap();
    let mut agent = spawn_agent(&agent_config);
    let auth = base64(b"reader:reader-password");
    let archived = || {
        let body = http_get(
            &server.web,
            "/api/v1/search?agent=agent01&limit=10000",
            &auth,
        );
        serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()["files"]
            .as_array()
            .map_or(0, |a| a.len())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while archived() < 20 {
        assert!(Instant::now() < deadline, "the sync did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The outage: the volume server stays down until uploads fail (the store's client retries
    // for 20 s before it gives up and the FTP reply is a 4xx), and 3 s more.
    weed.kill_volume();
    let during = archived();
    let down = Instant::now();
    let deadline = down + Duration::from_secs(90);
    while metric(&server.web, &auth, "logarchive_store_errors_total") <= 0.0 {
        assert!(
            Instant::now() < deadline,
            "no store error within 90 s of the volume server's death"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let errors = metric(&server.web, &auth, "logarchive_store_errors_total");
    let inline = metric(&server.web, &auth, "logarchive_store_inline_bytes");
    let after = archived();
    weed.start_volume().unwrap();
    weed.ready().unwrap();
    println!(
        "volume server down at {during} of {FILES} files archived for {:.1} s: {after} archived \
         meanwhile, {errors} store errors, {inline} bytes waiting inline",
        down.elapsed().as_secs_f64()
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    while archived() < FILES {
        assert!(
            Instant::now() < deadline,
            "{} of {FILES} archived 120 s after the volume server came back",
            archived()
        );
        std::thread::sleep(Duration::from_millis(200));
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

    // Every file, by SHA-256, read back over FTP.
    let want = sha_tree(&src);
    assert_archived_over_ftp(server.ftp.port(), &want);
    // What waited inline is packed, and the archive checks clean.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&server.web, &auth, "logarchive_store_inline_bytes") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "inline bytes not packed within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, out, err) = archive_command(&config, &data, &["fsck", "--full"]);
    assert!(ok, "{out}{err}");
}
