#!/usr/bin/env bash
# HTTP basic auth on the JSON API under wrk (50 connections, 10 s) against a small archive.
# Usage: bench/api-auth.sh [BIN]   (default: target/release/logarchive). Needs wrk, curl.
set -euo pipefail
BIN=${1:-$(cd "$(dirname "$0")/.." && pwd)/target/release/logarchive}
W=$(mktemp -d /dev/shm/basicbench.XXXX)
mkdir -p $W/data/archive/agent01/logs
for i in $(seq 20); do echo "line $i" > $W/data/archive/agent01/logs/f$i.log; done
. "$(dirname "$0")/start-server.sh"
trap 'kill ${SRV:-} 2>/dev/null || true; rm -rf $W' EXIT
start_server "$BIN" "$W/data" "$W/server.out"
BASIC=$(printf 'admin:%s' "$PW" | base64 -w0)
curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Basic $BASIC" "http://$WEB/api/v1/browse/agent01"
wrk -t2 -c50 -d10s -H "Authorization: Basic $BASIC" "http://$WEB/api/v1/browse/agent01" | grep -E "Requests/sec|Latency|Non-2xx"
curl -s "http://$WEB/metrics" | grep password_checks_total || true
