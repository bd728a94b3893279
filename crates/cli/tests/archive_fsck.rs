//! `logarchive archive fsck [--full]` and `du` on a folder archive, beside the running server:
//! a whole archive passes; a byte changed behind the server's back fails `--full` with both
//! hashes named; a file removed behind its back is named as missing.

mod support;
use support::{add_user, bin, server_command, start_server};

fn archive(data: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = bin()
        .args(["archive", "--data"])
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

#[test]
fn fsck_and_du_on_a_folder() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    add_user(&data, "agent01", "agent-password", &[]);
    let server = start_server(server_command(&data, "127.0.0.1:0"));
    let src = d.path().join("src");
    for i in 0..20 {
        let p = src.join(format!("Logs/f{i:02}.log"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("line {i}\n").repeat(1000 + i)).unwrap();
    }
    std::fs::write(d.path().join("pw"), "agent-password\n").unwrap();
    let config = d.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "agent_id = \"agent01\"\nserver = \"ftp://{}\"\nuser = \"agent01\"\npassword_file = \"{}\"\n\
             state_db = \"{}\"\nquiet_period = \"0s\"\n[[source]]\nroot = \"{}\"\n",
            server.ftp,
            d.path().join("pw").display(),
            d.path().join("agent.db").display(),
            src.display()
        ),
    )
    .unwrap();
    let once = bin()
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(once.status.success());
    // The catalog writer commits within moments of the uploads: fsck must see all 20.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (ok, out) = archive(&data, &["fsck", "--full"]);
        if ok {
            assert!(
                out.contains("fsck: 20 files") && out.contains("20 read back and hashed"),
                "{out}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fsck never passed:\n{out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ok, out) = archive(&data, &["du"]);
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("agent01"))
        .expect("agent01");
    assert_eq!(line.split_whitespace().nth(1), Some("20"), "{out}");

    // One byte changed behind the server's back: only --full sees it.
    let victim = data.join("archive/agent01/Logs/f03.log");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    assert!(archive(&data, &["fsck"]).0, "a plain fsck reads no content");
    let (ok, out) = archive(&data, &["fsck", "--full"]);
    assert!(!ok);
    assert!(
        out.contains("/agent01/Logs/f03.log: SHA-256")
            && out.contains("differs from the catalog's"),
        "{out}"
    );
    // One file removed behind its back.
    std::fs::remove_file(data.join("archive/agent01/Logs/f07.log")).unwrap();
    let (ok, out) = archive(&data, &["fsck"]);
    assert!(!ok);
    assert!(
        out.contains("/agent01/Logs/f07.log: in the catalog, not in the store"),
        "{out}"
    );
    drop(server);
}
