#!/usr/bin/env bash
# Compression at rest on the local back-end, measured through the running server (release
# build, data on tmpfs): realistic logs (bench/gen-logs.py) uploaded over FTP, read and searched
# through the JSON API raw (compress_after = "never"), then the same server restarted with
# compress_after = "1s" compresses them and the same requests run again.
#   - compression ratio and compaction MB/s per kind of log (nginx access, JSON, the demo's);
#   - viewer latency (curl's time_total) at the end and the middle of a 2 GiB log;
#   - content search of 1 GiB (a JSON and a demo log): a request id that occurs once, a common
#     word with a match limit, a regex without a literal; beside `rg` on the raw files;
#   - the same viewer and search requests on S3 (a real SeaweedFS, `weed mini`, on tmpfs), the
#     files uploaded raw and compressed there by the server (compress_after = "1s").
# Medians of REPS. bench/compression.sh [REPS=5]   (needs ripgrep, zstd, python3, curl, weed)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/target/release/logarchive
reps=${1:-5}
out=$here/bench/results/$(date +%Y%m%d-%H%M)-compression
mkdir -p "$out"
w=/dev/shm/la-zbench
rm -rf "$w"; mkdir -p "$w/src/search" "$w/src/view" "$w/src/ratio"
. "$here/bench/start-server.sh"
trap 'kill ${SRV:-} 2>/dev/null || true' EXIT
needle=7d3f9a1c5e2b8046

echo "== generating logs"
gen="python3 $here/bench/gen-logs.py"
$gen json 512 "$w/src/search/json.log" &
$gen demo 512 "$w/src/search/demo.log" $needle &
wait
$gen access 512 "$w/src/ratio/access.log" &
$gen demo 2048 "$w/src/view/big.log" &
wait

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# time of a command, reps times, median in ms
timed() {
  for _ in $(seq "$reps"); do
    s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N)
    echo $(((e - s) / 1000000))
  done | median
}
api() { curl -sf -u "admin:$PW" "http://$WEB$1"; }
view_ms() { # path offset
  for _ in $(seq "$reps"); do
    curl -sf -o /dev/null -w '%{time_total}\n' -u "admin:$PW" "http://$WEB/api/v1/view/$1${2:+?offset=$2}"
  done | median | awk '{printf "%.1f", $1 * 1000}'
}
search_ms() { # query string
  timed curl -sf -u "admin:$PW" "http://$WEB/api/v1/search?q=&agent=search&$1"
}

data=$w/data
mkdir -p "$data"
printf '[storage]\ncompress_after = "never"\n' > "$w/raw.toml"
printf '[storage]\ncompress_after = "1s"\n' > "$w/zst.toml"
start() { # config
  "$bin" server --config "$1" --data "$data" --ftp-listen 127.0.0.1:0 --web-listen 127.0.0.1:0 \
    >"$w/server.out" 2>"$w/server.err" &
  SRV=$!
  for _ in $(seq 100); do grep -q "web on" "$w/server.out" 2>/dev/null && break; sleep 0.1; done
  WEB=$(sed -n 's/.*web on http:\/\/\([^/]*\)\/.*/\1/p' "$w/server.out")
  FTP=$(sed -n 's/.*FTP on \([^ ]*\) .*/\1/p' "$w/server.out")
  [ -n "$WEB" ] || { echo "the server did not start: $(cat "$w/server.out" "$w/server.err")" >&2; exit 1; }
}
LOGARCHIVE_LOG=info start "$w/raw.toml"
PW=$(sed -n "s/.*password '\([^']*\)'.*/\1/p" "$w/server.out")
[ -n "$PW" ] || PW=$(sed -n "s/.*password: \([^ ]*\).*/\1/p" "$w/server.out")
echo "== uploading over FTP ($FTP)"
for f in search/json.log search/demo.log ratio/access.log view/big.log; do
  curl -sf --ftp-create-dirs -T "$w/src/$f" "ftp://admin:$PW@$FTP/$f"
done
for _ in $(seq 600); do
  n=$(api "/api/v1/search?q=.log" | grep -o '"path"' | wc -l || true)
  [ "$n" -ge 4 ] && break; sleep 0.2
done

measure() { # label
  local l=$1
  echo "view end $l: $(view_ms view/big.log) ms" | tee -a "$out/results.txt"
  echo "view middle $l: $(view_ms view/big.log $((1 << 30))) ms" | tee -a "$out/results.txt"
  echo "search id $l: $(search_ms "content=$needle") ms" | tee -a "$out/results.txt"
  echo "search ERROR limit 100 $l: $(search_ms "content=ERROR&max_matches=100") ms" | tee -a "$out/results.txt"
  echo "search regex $l: $(search_ms "content=status%22%3A5%5Cd%5Cd%2C%22duration_ms%22%3A8%5Cd%5Cd&regex=true") ms" | tee -a "$out/results.txt"
  api "/api/v1/search?q=&agent=search&content=$needle" > "$out/search-id-$l.json"
}
cat /dev/null > "$out/results.txt"
echo "== raw (compress_after = never)" | tee -a "$out/results.txt"
measure raw
echo "== rg on the raw files" | tee -a "$out/results.txt"
echo "rg id: $(timed rg -F $needle "$w/src/search") ms" | tee -a "$out/results.txt"
echo "rg ERROR -m 100: $(timed rg -m 100 ERROR "$w/src/search") ms" | tee -a "$out/results.txt"
echo "rg regex: $(timed rg 'status":5\d\d,"duration_ms":8\d\d' "$w/src/search") ms" | tee -a "$out/results.txt"

kill $SRV; wait $SRV 2>/dev/null || true
echo "== compressing (compress_after = 1s)" | tee -a "$out/results.txt"
LOGARCHIVE_LOG=info start "$w/zst.toml"
for _ in $(seq 3000); do
  [ "$(find "$data/archive" -name '*.zst' | wc -l)" -ge 4 ] && break; sleep 0.2
done
for _ in $(seq 100); do grep -q "compressed quiet files" "$w/server.out" "$w/server.err" && break; sleep 0.2; done
grep -h "compressed quiet files" "$w/server.out" "$w/server.err" | tee -a "$out/results.txt" || true
for f in search/json.log search/demo.log ratio/access.log view/big.log; do
  raw=$(stat -c %s "$w/src/$f"); z=$(stat -c %s "$data/archive/$f.zst")
  echo "$f: $raw -> $z bytes, ratio $(awk "BEGIN {printf \"%.1f\", $raw / $z}")x; zstd -3 whole file: $(zstd -3 -T1 -c "$w/src/$f" | wc -c)" | tee -a "$out/results.txt"
done
cmp <(zstd -dc "$data/archive/search/demo.log.zst") "$w/src/search/demo.log" && echo "zstd -dc gives the original" | tee -a "$out/results.txt"
echo "== compressed" | tee -a "$out/results.txt"
measure zst
# The same hits (the stats differ: bytes searched, time).
cmp <(jq -c .content.hits "$out/search-id-raw.json") <(jq -c .content.hits "$out/search-id-zst.json") \
  && echo "the same hit raw and compressed" | tee -a "$out/results.txt"
echo "server RSS: $(ps -o rss= -p $SRV) KiB" | tee -a "$out/results.txt"

echo "== S3 (SeaweedFS), compressed" | tee -a "$out/results.txt"
kill $SRV; wait $SRV 2>/dev/null || true
ports=$(python3 -c 'import socket
ss=[socket.socket() for _ in range(11)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
read -r -a p <<<"$ports"
key=bench$RANDOM$RANDOM; secret=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -p "$w/weed"
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
trap 'kill ${SRV:-} $weed_pid 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:${p[6]}" && break; sleep 0.2; done
data=$w/s3data; mkdir -p "$data"
cp "$w/data/users.toml" "$data/"
rm -rf "$w/data/archive"   # room on /dev/shm for the bucket
cat > "$w/s3.toml" <<T
[storage]
backend = "s3"
endpoint = "http://127.0.0.1:${p[6]}"
bucket = "logarchive"
credentials_file = "$w/s3.env"
compress_after = "1s"
T
LOGARCHIVE_LOG=info start "$w/s3.toml"
for f in search/json.log search/demo.log view/big.log; do
  curl -sf --ftp-create-dirs -T "$w/src/$f" "ftp://admin:$PW@$FTP/$f"
done
for _ in $(seq 3000); do
  n=$(curl -sf -u "admin:$PW" "http://$WEB/metrics" | sed -n 's/^logarchive_store_compacted_files_total //p')
  [ "${n:-0}" -ge 3 ] && break; sleep 0.2
done
grep -h "compressed quiet files" "$w/server.out" "$w/server.err" | tee -a "$out/results.txt" || true
measure s3
echo "server RSS (S3): $(ps -o rss= -p $SRV) KiB" | tee -a "$out/results.txt"
