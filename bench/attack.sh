#!/usr/bin/env bash
# The attacks of bench/attack.py against two builds, one after the other on this machine, and a
# table of both: bench/attack.sh BEFORE_BINARY AFTER_BINARY [OUT_DIR]
# (e.g. a release build of the previous commit, kept aside, and target/release/logarchive).
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2
out=${3:-bench/results/$(date -u +%Y%m%d-%H%M)-attack}
mkdir -p "$out"
python3 bench/attack.py "$before" before "$out/before.json" | tee "$out/before.log"
python3 bench/attack.py "$after" after "$out/after.json" | tee "$out/after.log"
python3 - "$out" <<'PY' | tee "$out/table.md"
import json, sys
out = sys.argv[1]
b = json.load(open(f"{out}/before.json"))["results"]
a = json.load(open(f"{out}/after.json"))["results"]
def lat(s):
    if s["median_ms"] is None:
        return f"all {s['n']} failed"
    f = f", {s['failed']}/{s['n']} failed" if s["failed"] else ""
    return f"{s['median_ms']:.0f} / {s['max_ms']:.0f} ms{f}"
print("| attack | build | agent upload p50 / max | /healthz p50 / max | RSS max | server CPU | seen |")
print("|---|---|---|---|---|---|---|")
for k in a:
    for label, r in (("before", b.get(k)), ("after", a[k])):
        if r is None:
            continue
        alive = "" if r["alive"] else " (server died)"
        print(f"| {r['attack']} | {label} | {lat(r['agent_upload'])} | {lat(r['healthz'])} | "
              f"{r['rss_max_mib']:.0f} MiB{alive} | {r['server_cpu_s']} s | {json.dumps(r['seen'])} |")
PY
