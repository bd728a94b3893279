#!/usr/bin/env bash
# Catalog reads under concurrency: folder listings (the browse API) under wrk -c50, alone and while
# a client runs slow glob name searches back to back over 200,000 catalogued files.
# Needs: a release build, python3, curl, wrk. Usage: bench/catalog-concurrency.sh [BIN]
set -euo pipefail
BIN=${1:-$(cd "$(dirname "$0")/.." && pwd)/target/release/logarchive}
W=${BENCH_DIR:-/dev/shm/logarchive-catalog-bench}
rm -rf "$W"; mkdir -p "$W/data/archive"
python3 - "$W/data/archive/agent01" <<'PY'
import os, sys
a = sys.argv[1]
for d in range(200):
    p = f"{a}/d{d:03d}"
    os.makedirs(p)
    for f in range(1000):
        open(f"{p}/app-{d:03d}-{f:04d}.log", "w").close()
PY
. "$(dirname "$0")/start-server.sh"
trap 'kill ${SRV:-} ${GLOBS:-} 2>/dev/null || true' EXIT
start_server "$BIN" "$W/data" "$W/server.out"
AUTH="Authorization: Basic $(printf 'admin:%s' "$PW" | base64 -w0)"
for _ in $(seq 600); do
  n=$(curl -s "http://$WEB/metrics" | sed -n 's/^logarchive_catalog_files \(.*\)/\1/p')
  [ "${n:-0}" -ge 200000 ] && break; sleep 0.2
done
echo "catalog files: $n"
t=$(curl -s -o /dev/null -w '%{time_total}' -H "$AUTH" "http://$WEB/api/v1/search?q=*-1?7-*.log&limit=100")
echo "one glob search: $t s"
echo "== listings alone"
wrk -t2 -c50 -d10s --latency -H "$AUTH" "http://$WEB/api/v1/browse/agent01/d007" | grep -E "Requests/sec|99%|50%"
echo "== listings while glob searches run back to back"
( while true; do curl -s -o /dev/null -H "$AUTH" "http://$WEB/api/v1/search?q=*-1?7-*.log&limit=100"; done ) &
GLOBS=$!
wrk -t2 -c50 -d10s --latency -H "$AUTH" "http://$WEB/api/v1/browse/agent01/d007" | grep -E "Requests/sec|99%|50%"
kill $GLOBS
