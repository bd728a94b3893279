#!/usr/bin/env bash
# Web interface measurements, in one run on generated data (tmpfs, so disk speed is out of it):
#   - content search over 1 GB of logs: the JSON API vs `rg` on the same files
#   - the viewer's response time at the end of a 2 GiB file (JSON page and HTML page)
#   - HTTP download of a 1 GiB file
#   - requests/s of the view page under wrk with 50 connections (session cookie), and of the
#     JSON API with HTTP basic auth
# Needs: a release build (cargo build --release), python3, curl, rg (Debian ripgrep), wrk.
# Usage: bench/web.sh [REPS]   (medians of REPS runs, default 5)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/logarchive
REPS=${1:-5}
W=${BENCH_DIR:-/dev/shm/logarchive-web-bench}
rm -rf "$W"
A=$W/data/archive/agent01
mkdir -p "$A/logs"

echo "== generating data in $W"
python3 - "$A" <<'PY'
import os, random, sys
a = sys.argv[1]
rnd = random.Random(7)
words = "alpha beta gamma delta request response user session cache disk queue worker".split()
levels = ["INFO"] * 8 + ["DEBUG", "WARN", "ERROR"]
def block(n, seed):
    r = random.Random(seed)
    return "".join(
        f"2024-07-23 10:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d} {r.choice(levels)} [{r.choice(words)}] "
        f"id={r.randrange(10**9)} {' '.join(r.choice(words) for _ in range(8))}\n"
        for i in range(n)).encode()
chunk = block(20000, 1)                      # ~2 MB of varied lines
for f in range(100):                         # 100 files x ~10 MB = ~1 GB
    with open(f"{a}/logs/f{f:03d}.log", "wb") as out:
        for k in range(5):
            out.write(chunk)
        if f % 20 == 7:
            out.write(b"2024-07-23 11:00:00.000 ERROR [disk] needle-7f3a found here\n")
with open(f"{a}/big.log", "wb") as out:      # 2 GiB
    target = 2 << 30
    while out.tell() + len(chunk) < target:
        out.write(chunk)
    out.write(b"x" * (target - out.tell() - 1) + b"\n")
with open(f"{a}/dl.bin", "wb") as out:       # 1 GiB
    out.write(os.urandom(1 << 20) * 1024)
PY
du -sh "$A/logs" "$A/big.log" "$A/dl.bin"

echo "== starting the server"
. "$ROOT/bench/start-server.sh"
trap 'kill ${SRV:-} 2>/dev/null || true' EXIT
start_server "$BIN" "$W/data" "$W/server.out"
for _ in $(seq 300); do
  n=$(curl -s -u "admin:$PW" "http://$WEB/metrics" | sed -n 's/^logarchive_catalog_files \(.*\)/\1/p')
  [ "${n:-0}" -ge 102 ] && break; sleep 0.1
done
COOKIE=$(curl -s -D - -o /dev/null -d "username=admin&password=$PW" "http://$WEB/login" | sed -n 's/^set-cookie: \([^;]*\);.*/\1/Ip')

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timeit() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

echo "== content search, 1 GB (the 100 files f*.log), literal any case (5 matches)"
Q="q=f0*.log&limit=1000"
ours=$(for _ in $(seq "$REPS"); do curl -s -o /dev/null -w '%{time_total}\n' -H "Cookie: $COOKIE" "http://$WEB/api/v1/search?$Q&content=needle-7f3a"; done | median)
curl -s -H "Cookie: $COOKIE" "http://$WEB/api/v1/search?$Q&content=needle-7f3a" | python3 -c 'import json,sys; d=json.load(sys.stdin)["content"]; print("  logarchive:", d["stats"])'
rg_t=$(for _ in $(seq "$REPS"); do timeit rg -F -i -c needle-7f3a "$A/logs"; done | median)
echo "  rg -F -i matches: $(rg -F -i -c needle-7f3a "$A/logs" | awk -F: '{s+=$2} END {print s}')"
echo "content search median: logarchive $ours s, rg $rg_t s"

echo "== content search, 1 GB, regex, case-sensitive"
ours_re=$(for _ in $(seq "$REPS"); do curl -s -o /dev/null -w '%{time_total}\n' -H "Cookie: $COOKIE" "http://$WEB/api/v1/search?$Q&content=needle-%5B0-9a-f%5D%7B4%7D&regex=true&case=true"; done | median)
rg_re=$(for _ in $(seq "$REPS"); do timeit rg -c 'needle-[0-9a-f]{4}' "$A/logs"; done | median)
echo "regex search median: logarchive $ours_re s, rg $rg_re s"

echo "== viewer at the end of a 2 GiB file"
v_json=$(for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_total}\n' -H "Cookie: $COOKIE" "http://$WEB/api/v1/view/agent01/big.log"; done | median)
v_html=$(for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_total}\n' -H "Cookie: $COOKIE" "http://$WEB/view/agent01/big.log"; done | median)
v_mid=$(for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_total}\n' -H "Cookie: $COOKIE" "http://$WEB/view/agent01/big.log?offset=1073741824"; done | median)
echo "viewer median: end JSON $v_json s, end page $v_html s, middle page $v_mid s"

echo "== HTTP download of 1 GiB"
dl=$(for _ in $(seq 3); do curl -s -o /dev/null -w '%{speed_download}\n' -H "Cookie: $COOKIE" "http://$WEB/download/agent01/dl.bin"; done | median)
echo "download median: $(echo "$dl / 1000000" | bc) MB/s"

echo "== wrk, 50 connections, the view page of a 10 MB log (last 64 KiB)"
wrk -t2 -c50 -d10s -H "Cookie: $COOKIE" "http://$WEB/view/agent01/logs/f001.log" | tee "$W/wrk.txt"

echo "== wrk, 50 connections, the JSON API with HTTP basic auth (how scripts call it)"
BASIC=$(printf 'admin:%s' "$PW" | base64 -w0)
wrk -t2 -c50 -d10s -H "Authorization: Basic $BASIC" "http://$WEB/api/v1/browse/agent01" | tee "$W/wrk-basic.txt"
echo "server RSS: $(grep -E 'VmHWM' /proc/$SRV/status)"
