#!/usr/bin/env bash
# `logarchive ftp put/get` of one 1 GiB file against `logarchive server` and against pure-ftpd,
# interleaved, N reps, on tmpfs. Prints MB/s and the client's peak RSS (GNU time) per run, then
# medians. Needs ../shared/bench/ftp/setup.sh to have run (pure-ftpd, GNU time).
#   bench/ftp-client.sh [REPS]          (build first: cargo build --release)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/target/release/logarchive
reps=${1:-3}
scratch=${SCRATCH:-/tmp/ftpbench}
work=/dev/shm/la-client-bench
pure=$scratch/pureftpd/usr/sbin/pure-ftpd
[ -x "$pure" ] || { echo "pure-ftpd missing: run ../shared/bench/ftp/setup.sh" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time missing (apt-get install time)" >&2; exit 1; }
rm -rf "$work"; mkdir -p "$work/la" "$work/pure" "$work/dl"
chown ftpbench:ftpbench "$work/pure"
src=$work/src.bin
head -c $((1 << 30)) /dev/urandom > "$src"

# pure-ftpd: the harness's virtual user ftpbench, chrooted to $work/pure.
hash=$(openssl passwd -6 -salt benchsalt ftpbench)
echo "ftpbench:$hash:$(id -u ftpbench):$(id -g ftpbench)::$work/pure/./::::::::::::" > "$work/pure.passwd"
"$scratch/pureftpd/usr/bin/pure-pw" mkdb "$work/pure.pdb" -f "$work/pure.passwd"
"$pure" -S 127.0.0.1,2133 -l "puredb:$work/pure.pdb" -E -A -H -f none -p 22000:22999 -c 200 -C 200 &
pure_pid=$!
echo ftpbench | "$bin" user --data "$work/la" add ftpbench --role admin --password-stdin >/dev/null
"$bin" server --data "$work/la" --ftp-listen 127.0.0.1:2134 >/dev/null 2>&1 &
la_pid=$!
trap 'kill $pure_pid $la_pid 2>/dev/null || true' EXIT
sleep 1
export LOGARCHIVE_PASSWORD=ftpbench LOGARCHIVE_LOG=warn
results=$work/results.txt; : > "$results"
one() { # server port verb
  local server=$1 port=$2 verb=$3 t0 t1 rss
  sync; cat "$src" > /dev/null
  t0=$(date +%s.%N)
  if [ "$verb" = put ]; then
    /usr/bin/time -f %M -o "$work/rss" "$bin" ftp put "ftp://ftpbench@127.0.0.1:$port/big.bin" "$src" 2>/dev/null
  else
    /usr/bin/time -f %M -o "$work/rss" "$bin" ftp get "ftp://ftpbench@127.0.0.1:$port/big.bin" "$work/dl/big.bin" 2>/dev/null
  fi
  t1=$(date +%s.%N)
  rss=$(tail -1 "$work/rss")
  python3 -c "print('$server $verb %.0f MB/s, client peak RSS %.1f MiB' % ((1<<30)/($t1-$t0)/1e6, $rss/1024))" | tee -a "$results"
}
for r in $(seq "$reps"); do
  for s in logarchive:2134 pureftpd:2133; do
    one "${s%%:*}" "${s##*:}" put
    one "${s%%:*}" "${s##*:}" get
    cmp -s "$src" "$work/dl/big.bin" || { echo "download differs" >&2; exit 1; }
    rm -f "$work/dl/big.bin" "$work/la/archive/big.bin" "$work/pure/big.bin"
  done
done
echo "medians over $reps reps:"
python3 - "$results" <<'PY'
import sys, statistics, collections
d = collections.defaultdict(list); m = collections.defaultdict(list)
for line in open(sys.argv[1]):
    s, v, mb, _, _, _, _, rss, _ = line.split()
    d[(s, v)].append(float(mb)); m[(s, v)].append(float(rss))
for k in sorted(d):
    print(f"{k[0]:<11} {k[1]}: {statistics.median(d[k]):.0f} MB/s (min {min(d[k]):.0f}, max {max(d[k]):.0f}), client peak RSS {statistics.median(m[k]):.1f} MiB")
PY
