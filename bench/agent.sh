#!/usr/bin/env bash
# Agent measurements on tmpfs, one run: cold sync of N small files by `logarchive agent --once`
# beside `lftp mirror -R` against the same `logarchive server`; then, with a large tree tracked,
# the time from closing a new file to its arrival, the agent's RSS, and its CPU while idle.
#   bench/agent.sh [FILES=10000] [BIG_TREE=100000]     (cargo build --release; apt-get install lftp)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/target/release/logarchive
files=${1:-10000}
big=${2:-100000}
w=/dev/shm/la-agent-bench
rm -rf "$w"; mkdir -p "$w"
export LOGARCHIVE_LOG=warn
for a in agent01 agent02 agent03; do
  echo "bench-password" | "$bin" user --data "$w/data" add "$a" --password-stdin >/dev/null
done
echo "bench-password" > "$w/pw"
"$bin" server --data "$w/data" --ftp-listen 127.0.0.1:2160 >/dev/null 2>&1 &
srv=$!
trap 'kill $srv ${agent:-} 2>/dev/null || true' EXIT
sleep 1

python3 - "$w/small" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
data = os.urandom(16384)
for i in range(n):
    d = os.path.join(root, "agent", "Logs", "App%02d" % (i % 16), "2024%04d" % (i % 4))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "file_%06d.log" % i), "wb") as f:
        f.write(data)
PY
conf() { # id root parallel
cat > "$w/$1.toml" <<T
agent_id = "$1"
server = "ftp://127.0.0.1:2160"
user = "$1"
password_file = "$w/pw"
state_db = "$w/$1.db"
quiet_period = "0s"
scan_interval = "30s"
max_parallel_uploads = $3
[[source]]
root = "$2"
T
}
conf agent01 "$w/small/agent" 2
sync
t0=$(date +%s.%N); "$bin" agent --once --config "$w/agent01.toml" >/dev/null; t1=$(date +%s.%N)
python3 -c "print('agent --once (2 parallel): %d files in %.1f s = %.0f files/s (verified)' % ($files, $t1-$t0, $files/($t1-$t0)))"
if command -v lftp >/dev/null; then
  t0=$(date +%s.%N)
  lftp -u agent02,bench-password -e "set cmd:fail-exit yes; mirror -R --no-perms $w/small/agent /; quit" ftp://127.0.0.1:2160 >/dev/null
  t1=$(date +%s.%N)
  python3 -c "print('lftp mirror -R (1 connection): %d files in %.1f s = %.0f files/s' % ($files, $t1-$t0, $files/($t1-$t0)))"
  t0=$(date +%s.%N)
  lftp -u agent03,bench-password -e "set cmd:fail-exit yes; mirror -R --parallel=2 --no-perms $w/small/agent /; quit" ftp://127.0.0.1:2160 >/dev/null
  t1=$(date +%s.%N)
  python3 -c "print('lftp mirror -R --parallel=2: %d files in %.1f s = %.0f files/s' % ($files, $t1-$t0, $files/($t1-$t0)))"
fi

# A big tree, tracked: the agent's index of it, then one new file.
python3 - "$w/big" "$big" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "Logs", "A%03d" % (i % 500))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d.log" % i), "wb") as f:
        f.write(b"x\n")
PY
echo "bench-password" | "$bin" user --data "$w/data" add agent04 --password-stdin >/dev/null
conf agent04 "$w/big" 4
t0=$(date +%s.%N); "$bin" agent --once --config "$w/agent04.toml" >/dev/null; t1=$(date +%s.%N)
python3 -c "print('initial sync of the %d-file tree: %.0f s' % ($big, $t1-$t0))"
sed -i 's/quiet_period = "0s"/quiet_period = "5s"/' "$w/agent04.toml"
"$bin" agent --config "$w/agent04.toml" >/dev/null 2>&1 &
agent=$!
sleep 5
python3 - "$w" <<'PY'
import os, sys, time
w = sys.argv[1]
target = os.path.join(w, "data/archive/agent04/Logs/A007/new-file.log")
t = time.time()
with open(os.path.join(w, "big/Logs/A007/new-file.log"), "wb") as f:
    f.write(b"a new line\n")
t = time.time()
while not (os.path.exists(target) and open(target, "rb").read() == b"a new line\n"):
    if time.time() - t > 120:
        print("new file not archived within 120 s"); sys.exit(1)
    time.sleep(0.005)
print("closed file -> archived in a %d-file tree: %.2f s" % (sum(len(f) for _, _, f in os.walk(os.path.join(w, "big"))), time.time() - t))
PY
sleep 2
read -r _ _ _ _ _ _ _ _ _ _ _ _ _ ut st _ < /proc/$agent/stat
sleep 60
read -r _ _ _ _ _ _ _ _ _ _ _ _ _ ut2 st2 _ < /proc/$agent/stat
hz=$(getconf CLK_TCK)
python3 -c "print('agent CPU while idle for 60 s (2 full rescans of the tree): %.2f s = %.1f%% of a core' % ((($ut2+$st2)-($ut+$st))/$hz, (($ut2+$st2)-($ut+$st))/$hz/60*100))"
grep -E "VmRSS|VmHWM" /proc/$agent/status | tr -s ' ' | sed 's/^/agent with the tree tracked: /'
