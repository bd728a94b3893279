#!/usr/bin/env bash
# Runs the FTP harness of ../shared/bench/ftp against `logarchive server` beside pure-ftpd,
# vsftpd and pyftpdlib, in one run, on tmpfs, prints the table and writes it to bench/RESULTS.md
# with the date and the machine.
#   bench/ftp-server.sh [REPS]     (after ../shared/bench/ftp/setup.sh and cargo build --release)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
harness=$here/../shared/bench/ftp
reps=${1:-3}
export FTPBENCH_RESULTS=${FTPBENCH_RESULTS:-$here/bench/results/$(date +%Y%m%d-%H%M)}
mkdir -p "$FTPBENCH_RESULTS"
data=/dev/shm/ftpbench/logarchive
cd "$harness"
./run.sh peers --reps "$reps" --data-dir /dev/shm/ftpbench
rm -rf "$data"; mkdir -p "$data/archive"
echo ftpbench | "$here/target/release/logarchive" user --data "$data" add ftpbench --role admin --password-stdin >/dev/null
./run.sh logarchive 127.0.0.1:2150:ftpbench:ftpbench --reps "$reps" \
  --cmd "$here/target/release/logarchive server --data $data --ftp-listen 127.0.0.1:2150 --web-listen 127.0.0.1:0" \
  --root "$data/archive" --clean-root
"$here/bench/results-md.sh" "$FTPBENCH_RESULTS"
