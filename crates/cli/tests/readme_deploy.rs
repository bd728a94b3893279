//! The README's "Deployment in five steps", run as written: its `bash` blocks, in order, as root
//! in mount, network and PID namespaces of their own (a copy of /etc, empty /var/lib, /var/log
//! and /usr/local/bin; `archive.example.org` on the namespace's loopback), so nothing of this
//! machine changes and the fixed ports of the example configuration collide with nothing. Two
//! things differ from a real machine: `cargo build --release` is skipped (the test's binary is
//! put where the build would leave it), and `systemctl enable --now UNIT` starts the unit's
//! `ExecStart` as its `User`/`Group` with its `Environment`, `UMask` and `StateDirectory`, as
//! systemd would (and waits for a server to listen). A service writes its log the whole time;
//! the test passes when that log is in the archive byte for byte, uploaded over FTPS by the
//! agent, and the web interface answers over HTTPS with the new CA.
//!
//! Needs root, `unshare`, `setpriv`, `runuser` (util-linux), `useradd` (passwd), `ip` and `ss`
//! (iproute2), `openssl` and `curl`: `./test.sh` installs them on Debian.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `bash` blocks of the README's deployment section, in order.
fn deployment_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("## Deployment")
        .expect("README has a Deployment section");
    let rest = &readme[start + 3..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in section.lines() {
        let l = line.trim();
        match (&mut current, l) {
            (None, "```bash") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap().join("\n")),
            (Some(b), _) => b.push(l),
            _ => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block in the README");
    blocks
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What runs before the README's blocks: the namespace's file systems, the log writer, and the
/// stand-ins for `cargo` and `systemctl`.
const PRELUDE: &str = r#"
set -euo pipefail
mount --make-rprivate /
ip link set lo up
cp -a /etc "$SCRATCH/etc"
mount --bind "$SCRATCH/etc" /etc
echo "127.0.0.1 archive.example.org web-01" >> /etc/hosts
for d in /var/lib /var/log /usr/local/bin; do mount -t tmpfs tmpfs "$d"; done
mkdir -p "$SCRATCH/units"

# A service writing its log: the file held open, a line every 20 ms for 3 s (the pacing of the
# writer, not a wait for anything).
install -d -m 0750 -g adm /var/log/myapp
install -m 0640 -g adm /dev/null /var/log/myapp/app.log
(
  exec 3>>/var/log/myapp/app.log
  for i in $(seq 1 150); do
    echo "2026-12-01 10:00:00 INFO request $i handled by the service" >&3
    sleep 0.02
  done
) &
WRITER=$!

cargo() { echo "(test) skipped: cargo $*; the test's binary is target/release/logarchive"; }

unit_key() { sed -n "s/^$2=//p" "/etc/systemd/system/$1.service" | tail -n 1; }

systemctl() {
  case "$1" in
    daemon-reload) return 0 ;;
    enable) shift; [ "$1" = "--now" ] || { echo "systemctl enable without --now" >&2; return 1; }; shift ;;
    *) echo "(test) systemctl $* is not emulated" >&2; return 1 ;;
  esac
  local unit user group exec state umask_ env_
  for unit in "$@"; do
    user=$(unit_key "$unit" User); group=$(unit_key "$unit" Group)
    exec=$(unit_key "$unit" ExecStart); state=$(unit_key "$unit" StateDirectory)
    umask_=$(unit_key "$unit" UMask); env_=$(unit_key "$unit" Environment)
    [ -z "$state" ] || install -d -m 0755 -o "$user" -g "$group" "/var/lib/$state"
    (
      umask "${umask_:-0022}"
      exec env $env_ NO_COLOR=1 setpriv --reuid="$user" --regid="$group" --init-groups $exec
    ) >"$SCRATCH/units/$unit.log" 2>&1 &
    echo $! >"$SCRATCH/units/$unit.pid"
    echo "(test) started $unit as $user:$group: $exec (pid $!)"
    # Wait for a server to listen, as Type=notify would (the agent's --check logs in next).
    if [ "$unit" = logarchive-server ]; then
      for _ in $(seq 1 300); do
        ss -Hltn | grep -q ':8443 ' && ss -Hltn | grep -q ':2121 ' && break
        kill -0 "$!" 2>/dev/null || { cat "$SCRATCH/units/$unit.log"; return 1; }
        sleep 0.1
      done
    fi
  done
}
"#;

/// What runs after them: the checks.
const CHECKS: &str = r#"
wait "$WRITER"
echo "(test) the writer is done: $(wc -l < /var/log/myapp/app.log) lines"
arrived=
for _ in $(seq 1 600); do
  if cmp -s /var/log/myapp/app.log /var/lib/logarchive/archive/web-01/app.log; then arrived=1; break; fi
  sleep 0.1
done
if [ -z "$arrived" ]; then
  echo "(test) the log never arrived whole in the archive" >&2
  ls -laR /var/lib/logarchive/archive >&2 || true
  for f in "$SCRATCH"/units/*.log; do echo "== $f" >&2; cat "$f" >&2; done
  exit 1
fi
echo "(test) arrived: /var/lib/logarchive/archive/web-01/app.log"
curl -sS --fail --cacert /etc/logarchive/ca.pem https://archive.example.org:8443/healthz
listing=$(curl -sS --fail --cacert /etc/logarchive/ca.pem -u "admin:$LOGARCHIVE_PASSWORD" \
  https://archive.example.org:8443/api/v1/browse/web-01)
echo "$listing" | grep -q '"/web-01/app.log"' || { echo "not in the catalog: $listing" >&2; exit 1; }
# Plain FTP is refused: the agent's upload went over TLS.
if curl -sS --fail "ftp://web-01:$(cat web-01.pass)@archive.example.org:2121/" >/dev/null 2>&1; then
  echo "a plain-text FTP login was accepted" >&2; exit 1
fi
echo "(test) all good"
"#;

#[test]
fn the_readme_deployment_steps_work_as_written() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test installs users and services in namespaces of its own and needs root \
         (CI runs as root)"
    );
    let blocks = deployment_blocks();
    assert_eq!(blocks.len(), 5, "five steps, one block each");
    let work = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // The checkout as the operator has it: deploy/ and a built binary.
    copy_dir(&repo().join("deploy"), &work.path().join("deploy"));
    let release = work.path().join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_logarchive"), release.join("logarchive")).unwrap();
    let mut script = String::from(PRELUDE);
    for (i, b) in blocks.iter().enumerate() {
        script.push_str(&format!("\necho '(test) step {}'\n{b}\n", i + 1));
    }
    script.push_str(CHECKS);
    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "bash",
            "-c",
            &script,
        ])
        .current_dir(work.path())
        .env("SCRATCH", scratch.path())
        .env("LOGARCHIVE_PASSWORD", "an admin password for the test")
        .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let out = wait_bounded(&mut child, Duration::from_secs(240));
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the README's deployment failed:\n{text}"
    );
    assert!(text.contains("(test) all good"), "{text}");
}

fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    // Read the pipes on threads so a chatty script never blocks on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let a = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let b = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            // --kill-child takes the namespace's first process, and with it every other.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the deployment took longer than {limit:?}:\n{}",
                String::from_utf8_lossy(&a.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::process::Output {
        status,
        stdout: a.join().unwrap(),
        stderr: b.join().unwrap(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
