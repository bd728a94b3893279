#!/usr/bin/env bash
# Writes bench/RESULTS.md from one run of the shared FTP harness (a results folder of *.jsonl):
# the table, the date of the run and the machine it ran on.
#   bench/results-md.sh bench/results/2026-11-25
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=$(cd "$1" && pwd)
harness=$here/../shared/bench/ftp
table=$(cd "$harness" && ./run.sh table "$dir"/*.jsonl)
{
  echo "# FTP server benchmark results"
  echo
  echo "Written by \`bench/results-md.sh\` from \`${dir#"$here"/}\` (the shared harness in"
  echo "\`../shared/bench/ftp\`, one run of every server with the same client, loopback, tmpfs)."
  echo
  echo "- run: $(stat -c %y "$(ls "$dir"/*.jsonl | head -1)" | cut -d. -f1) UTC"
  echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, Linux $(uname -r)"
  echo "- rerun: \`bench/ftp-server.sh [REPS]\` (after \`../shared/bench/ftp/setup.sh\` and \`cargo build --release\`)"
  echo
  echo '```'
  echo "$table"
  echo '```'
} > "$here/bench/RESULTS.md"
echo "wrote $here/bench/RESULTS.md"
