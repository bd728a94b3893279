# Sourced by the web benchmarks. `start_server BIN DATA OUT` starts `logarchive server` on
# OS-chosen loopback ports in the background, its output in OUT, and sets SRV (its pid), WEB
# (host:port of the web interface) and PW (the admin password printed at the first start).
start_server() {
  "$1" server --data "$2" --ftp-listen 127.0.0.1:0 --web-listen 127.0.0.1:0 >"$3" 2>/dev/null &
  SRV=$!
  for _ in $(seq 100); do grep -q "web on" "$3" 2>/dev/null && break; sleep 0.1; done
  WEB=$(sed -n 's/.*web on http:\/\/\([^/]*\)\/.*/\1/p' "$3")
  PW=$(sed -n "s/.*password '\([^']*\)'.*/\1/p" "$3")
  [ -n "$WEB" ] || { echo "the server did not start: $(cat "$3")" >&2; return 1; }
}
