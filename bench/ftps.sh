#!/usr/bin/env bash
# FTPS (explicit, AUTH TLS, PROT P) upload and download of one big file: `logarchive server`
# beside vsftpd with TLS, the same client (curl, OpenSSL) for both, loopback, tmpfs, in one run.
#   bench/ftps.sh [REPS] [MIB]   (after ../shared/bench/ftp/setup.sh and cargo build --release)
# Prints the medians (MB/s = 10^6 bytes/s) and the servers' CPU seconds per phase; the raw
# numbers go to bench/results/<time>/ftps.tsv.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
reps=${1:-3}
mib=${2:-1024}
out=$here/bench/results/$(date +%Y%m%d-%H%M)
mkdir -p "$out"
w=/dev/shm/ftpsbench
rm -rf "$w"
mkdir -p "$w/la/archive" "$w/vsftpd" "$w/tls"
chown ftpbench "$w/vsftpd"
cd "$w/tls"
# A private CA and a server certificate for 127.0.0.1 (curl checks it against the CA).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out req.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext.cnf
openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem 2>/dev/null
cat cert.pem ca.pem >chain.pem
chmod 644 key.pem
head -c $((mib << 20)) /dev/urandom >"$w/big.bin"

# vsftpd: the harness's config with TLS required on control and data.
sed -e "s|^listen_port=.*|listen_port=2131|" -e "s|^local_root=.*|local_root=$w/vsftpd|" \
  "$here/../shared/bench/ftp/configs/vsftpd.conf" >"$w/vsftpd.conf"
cat >>"$w/vsftpd.conf" <<EOF
ssl_enable=YES
rsa_cert_file=$w/tls/chain.pem
rsa_private_key_file=$w/tls/key.pem
force_local_logins_ssl=YES
force_local_data_ssl=YES
ssl_tlsv1=YES
ssl_sslv2=NO
ssl_sslv3=NO
require_ssl_reuse=YES
EOF
/usr/sbin/vsftpd "$w/vsftpd.conf" &
vs=$!
echo ftpbench | "$here/target/release/logarchive" user --data "$w/la" add ftpbench --role admin --password-stdin >/dev/null
"$here/target/release/logarchive" server --data "$w/la" --ftp-listen 127.0.0.1:2132 --web-listen 127.0.0.1:0 \
  --tls-cert "$w/tls/chain.pem" --tls-key "$w/tls/key.pem" >"$w/la.log" 2>&1 &
la=$!
trap 'kill $vs $la 2>/dev/null || true' EXIT
for port in 2131 2132; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

cpu() { # utime+stime of a process and of its children that have been reaped, in seconds
  local f
  read -r -a f <"/proc/$1/stat"
  echo "scale=3; $((f[13] + f[14] + f[15] + f[16])) / $(getconf CLK_TCK)" | bc
}
curlf=(curl -sS --ssl-reqd --cacert "$w/tls/ca.pem" -u ftpbench:ftpbench)
printf 'server\trep\tphase\tseconds\tMB_s\tserver_cpu_s\n' >"$out/ftps.tsv"
for rep in $(seq "$reps"); do
  for s in vsftpd logarchive; do
    if [ $s = vsftpd ]; then port=2131 pid=$vs; else port=2132 pid=$la; fi
    for phase in up down; do
      before=$(cpu $pid)
      t0=$(date +%s.%N)
      if [ $phase = up ]; then
        "${curlf[@]}" -T "$w/big.bin" "ftp://127.0.0.1:$port/big-$rep.bin" &
      else
        "${curlf[@]}" -o "$w/back.bin" "ftp://127.0.0.1:$port/big-$rep.bin" &
      fi
      c=$!
      wait $c
      t1=$(date +%s.%N)
      # vsftpd runs each session in processes of its own: their CPU reaches the master's
      # counters (cutime, cstime) once they have exited and been reaped.
      for _ in $(seq 100); do [ -z "$(pgrep -P $pid)" ] || [ $s = logarchive ] && break; sleep 0.05; done
      secs=$(echo "$t1 - $t0" | bc)
      used=$(echo "$(cpu $pid) - $before" | bc)
      mbs=$(echo "scale=1; $((mib << 20)) / $secs / 1000000" | bc)
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' $s $rep $phase "$secs" "$mbs" "$used" >>"$out/ftps.tsv"
      if [ $phase = down ]; then
        cmp -s "$w/big.bin" "$w/back.bin" || { echo "$s: downloaded bytes differ" >&2; exit 1; }
      fi
    done
  done
done
python3 - "$out/ftps.tsv" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter='\t'))
print(f"{'server':<11} {'up MB/s':>9} {'down MB/s':>10} {'CPU s up':>9} {'CPU s down':>11}")
for s in ('logarchive', 'vsftpd'):
    m = lambda ph, k: statistics.median(float(r[k]) for r in rows if r['server'] == s and r['phase'] == ph)
    print(f"{s:<11} {m('up','MB_s'):>9.0f} {m('down','MB_s'):>10.0f} {m('up','server_cpu_s'):>9.2f} {m('down','server_cpu_s'):>11.2f}")
EOF
echo "raw: ${out#"$here"/}/ftps.tsv"
