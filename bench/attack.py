#!/usr/bin/env python3
"""Attacks on `logarchive server`, and what an honest agent and a health check see meanwhile.

    bench/attack.py BINARY LABEL OUT.json

Each attack runs against a fresh server (fresh data folder, OS-chosen loopback ports, the shell's
open-files limit) for ATTACK_SECONDS. Meanwhile, every half second, an honest agent uploads 1 KiB
over FTP from 127.0.0.1 (login, STOR, QUIT) and a monitor asks /healthz from 127.0.0.250. The
result per attack: the medians and worst of both latencies (a failure counts as such), the
server's peak RSS and CPU seconds, and what the attack itself saw. Run it for the binary before
and after a change, on the same machine, one after the other (bench/attack.sh does).
"""

import base64
import ftplib
import http.client
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ATTACK_SECONDS = float(os.environ.get("ATTACK_SECONDS", "10"))
PW = "attack-bench-password"


class Server:
    def __init__(self, binary, tmp, config=""):
        self.data = os.path.join(tmp, "data")
        os.makedirs(os.path.join(self.data, "archive"), exist_ok=True)
        for name, role in [("agent01", "agent"), ("viewer", "viewer")]:
            subprocess.run(
                [binary, "user", "--data", self.data, "add", name, "--password-stdin", "--role", role],
                input=PW + "\n", text=True, check=True, capture_output=True,
            )
        cfg = os.path.join(tmp, "server.toml")
        with open(cfg, "w") as f:
            f.write(config)
        self.log = open(os.path.join(tmp, "server.out"), "w+")
        self.proc = subprocess.Popen(
            [binary, "server", "--config", cfg, "--data", self.data,
             "--ftp-listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0"],
            stdout=self.log, stderr=subprocess.DEVNULL, env={**os.environ, "LOGARCHIVE_LOG": "warn"},
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            self.log.seek(0)
            m = re.search(r"web on http://([^/\s]+)/?.*FTP on ([\d.]+):(\d+)", self.log.read())
            if m:
                self.web = m.group(1)
                self.ftp = (m.group(2), int(m.group(3)))
                return
            time.sleep(0.05)
        raise SystemExit("the server did not start")

    def rss_mib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def cpu_s(self):
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return 0.0

    def stop(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def auth(user, pw=PW):
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def http_get(server, path, source="127.0.0.250", headers=None, timeout=10):
    host, port = server.web.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout, source_address=(source, 0))
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, body
    finally:
        c.close()


def honest_upload(server, i):
    f = ftplib.FTP(timeout=10)
    f.connect(*server.ftp, source_address=("127.0.0.1", 0))
    f.login("agent01", PW)
    f.storbinary(f"STOR honest-{i}.log", io.BytesIO(b"x" * 1023 + b"\n"))
    f.quit()


class Probes:
    """The honest agent and the health monitor, every half second while an attack runs."""

    def __init__(self, server):
        self.server = server
        self.upload, self.health, self.rss = [], [], []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(k,)) for k in ("upload", "health", "rss")]

    def run(self, kind):
        i = 0
        while not self.stop.is_set():
            i += 1
            t = time.monotonic()
            try:
                if kind == "upload":
                    honest_upload(self.server, i)
                    self.upload.append(time.monotonic() - t)
                elif kind == "health":
                    status, _ = http_get(self.server, "/healthz")
                    self.health.append(time.monotonic() - t if status == 200 else None)
                else:
                    self.rss.append(self.server.rss_mib())
            except Exception:
                (self.upload if kind == "upload" else self.health).append(None)
            self.stop.wait(0.5 if kind != "rss" else 0.2)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def summary(samples):
    ok = [s * 1000 for s in samples if s is not None]
    return {
        "n": len(samples),
        "failed": sum(1 for s in samples if s is None),
        "median_ms": round(statistics.median(ok), 1) if ok else None,
        "max_ms": round(max(ok), 1) if ok else None,
    }


# ---- the attacks: each runs ATTACK_SECONDS and returns what it saw ----

def none(server):
    time.sleep(ATTACK_SECONDS)
    return {}


def silent_flood(server, total=19000, sources=100):
    """Connections that say nothing, from `sources` addresses (item 7)."""
    host, port = server.web.rsplit(":", 1)
    held, refused = [], 0
    end = time.time() + ATTACK_SECONDS
    for i in range(total):
        s = None
        try:
            s = socket.socket()
            s.settimeout(0.5)
            s.bind((f"127.0.1.{1 + i % sources}", 0))
            s.connect((host, int(port)))
            held.append(s)
        except OSError:
            refused += 1
            if s is not None:
                s.close()
        if time.time() > end:
            break
    # How many are still open once the server had its say (closed ones read as EOF).
    time.sleep(max(0.0, end - time.time()))
    still = 0
    for s in held:
        s.setblocking(False)
        try:
            still += 1 if s.recv(1) is None else 0
        except BlockingIOError:
            still += 1
        except OSError:
            pass
        s.close()
    return {"opened": len(held), "failed_to_connect": refused, "still_open_at_end": still}


def slowloris(server, conns=2000, sources=50):
    """Connections that send one header byte a second, never finishing (item 7)."""
    host, port = server.web.rsplit(":", 1)
    socks = []
    for i in range(conns):
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.bind((f"127.0.2.{1 + i % sources}", 0))
            s.connect((host, int(port)))
            s.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            s.close()
    end, alive = time.time() + ATTACK_SECONDS, len(socks)
    while time.time() < end:
        alive = 0
        for s in socks:
            try:
                s.send(b"X")
                alive += 1
            except OSError:
                pass
        time.sleep(1)
    for s in socks:
        s.close()
    return {"opened": len(socks), "alive_at_end": alive}


def run_parallel(n, fn):
    out = [None] * n
    ts = [threading.Thread(target=lambda k=k: out.__setitem__(k, fn(k))) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def searches(server, pattern, regex, viewers=4):
    """`viewers` searching `pattern` over and over (items 9 and 10)."""
    q = f"/api/v1/search?content={pattern}&regex={'true' if regex else 'false'}"
    end = time.time() + ATTACK_SECONDS
    took, statuses = [], {}

    def viewer(_):
        while time.time() < end:
            t = time.monotonic()
            try:
                status, _ = http_get(server, q, source="127.0.3.1",
                                     headers={"Authorization": auth("viewer")}, timeout=120)
            except Exception:
                status = "error"
            statuses[status] = statuses.get(status, 0) + 1
            took.append(time.monotonic() - t)

    run_parallel(viewers, viewer)
    return {"searches": statuses, "search_s_median": round(statistics.median(took), 2),
            "search_s_max": round(max(took), 2)}


def closed_tabs(server, pattern, tabs=4):
    """Searches whose page is closed after half a second: the server's CPU seconds in the
    following ATTACK_SECONDS show whether they went on (item 10)."""
    host, port = server.web.rsplit(":", 1)
    socks = []
    for _ in range(tabs):
        s = socket.create_connection((host, int(port)))
        s.send(f"GET /search?content={pattern}&regex=true HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: {auth('viewer')}\r\n\r\n".encode())
        socks.append(s)
    time.sleep(0.5)
    for s in socks:
        s.close()
    cpu = server.cpu_s()
    time.sleep(ATTACK_SECONDS - 0.5)
    return {"cpu_s_after_close": round(server.cpu_s() - cpu, 2)}


def wrong_logins(server, n=200):
    """Parallel wrong passwords for the agent's name from one stranger address (items 1, 5)."""
    def guess(i):
        host, port = server.web.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=30, source_address=("127.0.4.1", 0))
        try:
            body = f"username=agent01&password=guess{i}"
            c.request("POST", "/login", body=body,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
            return c.getresponse().status
        except Exception:
            return "error"
        finally:
            c.close()
    end = time.time() + ATTACK_SECONDS
    statuses = {}
    while time.time() < end:
        for s in run_parallel(n, guess):
            statuses[s] = statuses.get(s, 0) + 1
    _, m = http_get(server, "/metrics")
    checks = re.search(rb"logarchive_web_password_checks_total (\d+)", m)
    return {"answers": statuses, "password_checks": int(checks.group(1)) if checks else None}


def hostile_file(archive):
    d = os.path.join(archive, "agent01")
    os.makedirs(d, exist_ok=True)
    line = b"a" * 4000 + b"\n"
    with open(os.path.join(d, "hostile.log"), "wb") as f:
        block = line * 256
        for _ in range((2 << 30) // len(block)):
            f.write(block)


ATTACKS = [
    ("none", "no attack", none, False),
    ("silent", "19,000 silent web connections from 100 addresses", silent_flood, False),
    ("slowloris", "2,000 web connections sending 1 header byte/s", slowloris, False),
    ("regex", "4 viewers searching \\w{3000} in a loop", lambda s: searches(s, "%5Cw%7B3000%7D", True), False),
    ("hostile", "4 viewers searching [a-z]{100}[0-9] in a 2 GiB file, 5 s limit",
     lambda s: searches(s, "%5Ba-z%5D%7B100%7D%5B0-9%5D", True), True),
    ("closed", "4 such searches whose tab closes after 0.5 s",
     lambda s: closed_tabs(s, "%5Ba-z%5D%7B100%7D%5B0-9%5D"), True),
    ("logins", "200 parallel wrong web logins for the agent's name, in a loop", wrong_logins, False),
]


def main():
    binary, label, out = sys.argv[1], sys.argv[2], sys.argv[3]
    only = set(os.environ.get("ATTACKS", "").split(",")) - {""}
    results = {}
    for key, what, attack, big_file in ATTACKS:
        if only and key not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            if big_file:
                hostile_file(os.path.join(tmp, "data", "archive"))
            server = Server(binary, tmp, '[web]\nsearch_timeout = "5s"\n')
            time.sleep(1)  # the start-up reconcile of the archive, outside the measurement
            cpu0 = server.cpu_s()
            with Probes(server) as p:
                seen = attack(server)
            results[key] = {
                "attack": what,
                "seen": seen,
                "agent_upload": summary(p.upload),
                "healthz": summary(p.health),
                "rss_max_mib": round(max(p.rss or [0]), 1),
                "server_cpu_s": round(server.cpu_s() - cpu0, 2),
                "alive": server.proc.poll() is None,
            }
            server.stop()
        print(label, key, json.dumps(results[key]), flush=True)
    with open(out, "w") as f:
        json.dump({"label": label, "binary": binary, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
