//! The server on its local folder SIGKILLed at random moments while an agent synchronises and
//! quiet files are compressed at rest (`compress_after = "1s"`), kills landing in uploads and in
//! compactions alike: afterwards every file is there once with the source's SHA-256 (over FTP),
//! each one of 4 KiB or more as `NAME.zst` alone (no raw twin, no partial output left), which
//! `zstd -dc` turns back into the source, and `archive fsck --full` is clean.

use std::path::Path;
use std::time::{Duration, Instant};

mod support;
use support::{
    add_user, archive_command, assert_archived_over_ftp, bin, server_command, sha_tree,
    spawn_agent, start_server, Rng,
};

const FILES: usize = 200;
const KILLS_IN_SYNC: usize = 4;
const KILLS_IN_COMPACTION: usize = 5;

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_server_killed_while_compressing_its_folder_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("server.toml");
    std::fs::write(&config, "[storage]\ncompress_after = \"1s\"\n").unwrap();
    let server_at = |ftp: &str| {
        let mut c = server_command(&data, ftp);
        c.arg("--config").arg(&config);
        start_server(c)
    };
    add_user(&data, "agent01", "agent-password", &[]);
    add_user(&data, "reader", "reader-password", &["--role", "viewer"]);
    let mut server = server_at("127.0.0.1:0");
    let ftp = server.ftp.to_string();

    // Log-like text (it compresses as logs do): small files, and every tenth of 2-6 MB so that
    // compactions take long enough for kills to land inside them.
    let src = d.path().join("src");
    let mut rng = Rng(21);
    let mut big = 0;
    for i in 0..FILES {
        let size = if i % 10 == 0 {
            2_000_000 + rng.next() as usize % 4_000_000
        } else {
            rng.next() as usize % 40_000
        };
        let mut text = String::with_capacity(size + 100);
        while text.len() < size {
            let n = rng.next();
            text.push_str(&format!(
                "2024-07-23 10:{:02}:{:02}.{:03} INFO [worker-{}] request {n:x} took {} ms\n",
                n % 60,
                (n >> 8) % 60,
                (n >> 16) % 1000,
                (n >> 26) % 8,
                (n >> 32) % 900
            ));
        }
        text.truncate(size);
        if size >= 4096 {
            big += 1;
        }
        let p = src.join(format!("Logs/C{:02}/f{i:04}.log", i % 8));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
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
    // Random moments: the faults being injected, not synchronisation.
    for _ in 0..KILLS_IN_SYNC {
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
    // Everything has arrived; a second later it is quiet and compacted, a pass a second: the
    // kills now land among compactions.
    let home = data.join("archive/agent01");
    let zst = || files(&home).iter().filter(|f| f.ends_with(".zst")).count();
    let mut in_compaction = 0;
    for _ in 0..KILLS_IN_COMPACTION {
        std::thread::sleep(Duration::from_millis(800 + rng.next() % 1200));
        let before = zst();
        server.child.kill_now();
        if before > 0 && before < big {
            in_compaction += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 300));
        server = server_at(&ftp);
    }

    // All compacted in the end, each file once on disk: `NAME.zst` alone.
    let deadline = Instant::now() + Duration::from_secs(120);
    while zst() < big {
        assert!(
            Instant::now() < deadline,
            "{} of {big} files compressed after 120 s",
            zst()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let on_disk = files(&home);
    let data_files: Vec<&String> = on_disk
        .iter()
        .filter(|f| !f.starts_with(".logarchive"))
        .collect();
    assert_eq!(
        data_files.len(),
        FILES,
        "twins, partial outputs or temporary files left: {:?}",
        data_files
            .iter()
            .filter(|f| !f.ends_with(".log") && !f.ends_with(".log.zst"))
            .collect::<Vec<_>>()
    );
    println!(
        "{} server SIGKILLs, {in_compaction} of them while files were being compressed; \
         {big} of {FILES} files compressed",
        KILLS_IN_SYNC + KILLS_IN_COMPACTION
    );

    // The operator's view: `zstd -dc` gives each source back.
    for f in data_files.iter().filter(|f| f.ends_with(".zst")) {
        let out = std::process::Command::new("zstd")
            .arg("-dc")
            .arg(home.join(f))
            .output()
            .expect("zstd (./test.sh installs it)");
        assert!(out.status.success(), "zstd -dc {f}");
        let original = std::fs::read(src.join(f.trim_end_matches(".zst"))).unwrap();
        assert!(
            out.stdout == original,
            "zstd -dc {f} differs from the source"
        );
    }

    // What the server shows: every file, by SHA-256, over FTP.
    let want = sha_tree(&src);
    assert_archived_over_ftp(server.ftp.port(), &want);

    let (ok, out, err) = archive_command(&config, &data, &["fsck", "--full"]);
    assert!(
        ok && out.contains(&format!("{FILES} read back and hashed")),
        "{out}{err}"
    );
}
