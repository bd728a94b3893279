#!/usr/bin/env python3
"""A web flood (3,000 silent connections from 60 addresses) against a server limited to 1,024 open
files, then an FTP upload: bench/fd-flood.py BINARY (as crates/cli/tests/flood.rs, for any build)."""
import subprocess, sys, os, re, time, socket, ftplib, tempfile, io
binary = sys.argv[1]
tmp = tempfile.mkdtemp(); data = os.path.join(tmp, "d")
subprocess.run([binary, "user", "--data", data, "add", "agent01", "--password-stdin"], input="pw-pw-pw-pw\n", text=True, check=True, capture_output=True)
log = open(os.path.join(tmp, "out"), "w+")
p = subprocess.Popen(["prlimit", "--nofile=1024:1024", binary, "server", "--data", data, "--ftp-listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0"], stdout=log, stderr=subprocess.DEVNULL)
for _ in range(100):
    log.seek(0); m = re.search(r"web on http://([^/\s]+)/.*FTP on ([\d.]+):(\d+)", log.read())
    if m: break
    time.sleep(0.1)
host, port = m.group(1).rsplit(":", 1)
socks = []
for i in range(3000):
    try:
        s = socket.socket(); s.settimeout(0.5); s.bind((f"127.0.0.{2 + i % 60}", 0)); s.connect((host, int(port))); socks.append(s)
    except OSError: pass
t = time.monotonic()
try:
    f = ftplib.FTP(timeout=10); f.connect(m.group(2), int(m.group(3))); f.login("agent01", "pw-pw-pw-pw"); f.storbinary("STOR x.log", io.BytesIO(b"line\n")); f.quit()
    print(binary, "FTP upload during the flood: ok in %.2f s" % (time.monotonic() - t))
except Exception as e:
    print(binary, "FTP upload during the flood FAILED:", repr(e))
p.kill()
