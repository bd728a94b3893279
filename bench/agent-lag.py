#!/usr/bin/env python3
"""How far behind busy logs the archive is, and what an append costs (release builds, tmpfs).

For N in (1, 20, 200): a fresh `logarchive server` and agent (its defaults: max_lag 2s,
2 parallel uploads); N files held open and each written every 100 ms with lines that carry their
time; the archive files are read as they grow. After a 5 s warm-up, for DURATION seconds:
  - lag of every line, written -> on the server (p50, p99, max)
  - appends and bytes appended (the server's /metrics)
  - agent and server CPU (/proc/PID/stat), per append and per appended MB
  - control commands per append: the agent talks to the server through a counting proxy on the
    control connection (data connections go straight to the server)

  bench/agent-lag.py [target/release/logarchive] [DURATION=20] [N,N,...=1,20,200]
"""
import os, re, shutil, socket, subprocess, sys, threading, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/logarchive"
DURATION = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
SIZES = [int(n) for n in sys.argv[3].split(",")] if len(sys.argv) > 3 else [1, 20, 200]
HZ = os.sysconf("SC_CLK_TCK")
W = "/dev/shm/la-lag-bench"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / HZ


def metric(web, name):
    s = socket.create_connection(("127.0.0.1", web))
    s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
    m = re.search(rb"^" + name.encode() + rb" (\d+)", out, re.M)
    return int(m.group(1)) if m else 0


class CountingProxy(threading.Thread):
    """Forwards control connections to the server and counts the command lines clients send."""

    def __init__(self, port, target):
        super().__init__(daemon=True)
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(64)
        self.target = target
        self.commands = 0
        self.lock = threading.Lock()

    def run(self):
        while True:
            c, _ = self.ls.accept()
            s = socket.create_connection(("127.0.0.1", self.target))
            for sock in (c, s):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.pipe, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self.pipe, args=(s, c, False), daemon=True).start()

    def pipe(self, a, b, count):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                if count:
                    with self.lock:
                        self.commands += d.count(b"\r\n")
                b.sendall(d)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def run(n):
    shutil.rmtree(W, ignore_errors=True)
    os.makedirs(f"{W}/src/busy")
    env = dict(os.environ, LOGARCHIVE_LOG="warn")
    subprocess.run([BIN, "user", "--data", f"{W}/data", "add", "agent01", "--password-stdin"],
                   input=b"bench-password\n", env=env, check=True, stdout=subprocess.DEVNULL)
    open(f"{W}/pw", "w").write("bench-password\n")
    ftp, web, proxy_port = free_port(), free_port(), free_port()
    srv = subprocess.Popen([BIN, "server", "--data", f"{W}/data", "--ftp-listen", f"127.0.0.1:{ftp}",
                            "--web-listen", f"127.0.0.1:{web}"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", ftp)).close()
            break
        except OSError:
            time.sleep(0.05)
    proxy = CountingProxy(proxy_port, ftp)
    proxy.start()
    open(f"{W}/agent.toml", "w").write(
        f'agent_id = "agent01"\nserver = "ftp://127.0.0.1:{proxy_port}"\nuser = "agent01"\n'
        f'password_file = "{W}/pw"\nstate_db = "{W}/state/agent.db"\n'
        f'[[source]]\nroot = "{W}/src"\n')
    agent = subprocess.Popen([BIN, "agent", "--config", f"{W}/agent.toml"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    files = [open(f"{W}/src/busy/f{i:03}.log", "a", buffering=1) for i in range(n)]
    stop = threading.Event()

    def writer():
        t0, k, seq = time.monotonic(), 0, 0
        while not stop.is_set():
            # Each file every 100 ms, spread over 20 slots of 5 ms.
            for i in range(k % 20, n, 20):
                files[i].write(f"f{i:03} {seq:08} {int(time.time() * 1000)} some request handled in 12 ms\n")
                seq += 1
            k += 1
            nxt = t0 + k * 0.005
            time.sleep(max(0, nxt - time.monotonic()))

    wt = threading.Thread(target=writer, daemon=True)
    wt.start()
    offsets, lags = {}, []
    archive = f"{W}/data/archive/agent01/busy"

    def poll(record):
        now = int(time.time() * 1000)
        try:
            names = os.listdir(archive)
        except FileNotFoundError:
            return
        for name in names:
            with open(os.path.join(archive, name), "rb") as f:
                f.seek(offsets.get(name, 0))
                data = f.read()
            whole = data.rfind(b"\n") + 1
            offsets[name] = offsets.get(name, 0) + whole
            if record:
                for line in data[:whole].split(b"\n")[:-1]:
                    lags.append(now - int(line.split(b" ")[2]))

    t_end_warm = time.monotonic() + 5
    while time.monotonic() < t_end_warm:
        poll(False)
        time.sleep(0.05)
    c0 = (cpu(agent.pid), cpu(srv.pid), metric(web, "logarchive_appends_total"),
          metric(web, "logarchive_bytes_appended_total"), proxy.commands)
    t_end = time.monotonic() + DURATION
    while time.monotonic() < t_end:
        poll(True)
        time.sleep(0.05)
    c1 = (cpu(agent.pid), cpu(srv.pid), metric(web, "logarchive_appends_total"),
          metric(web, "logarchive_bytes_appended_total"), proxy.commands)
    stop.set()
    wt.join()
    agent.terminate()
    srv.terminate()
    agent.wait()
    srv.wait()
    lags.sort()
    appends = max(1, c1[2] - c0[2])
    mb = max(1, c1[3] - c0[3]) / 1e6
    pct = lambda p: lags[int((len(lags) - 1) * p)] if lags else -1
    print(f"{n:>3} busy files | lines {len(lags):>6} | lag p50 {pct(0.5):>5} ms  p99 {pct(0.99):>5} ms  max {lags[-1] if lags else -1:>5} ms"
          f" | appends/s {appends / DURATION:6.1f} | MB/s {mb / DURATION:5.2f}"
          f" | agent CPU {1e6 * (c1[0] - c0[0]) / appends:6.0f} us/append {(c1[0] - c0[0]) / mb:5.2f} s/MB"
          f" | server CPU {1e6 * (c1[1] - c0[1]) / appends:6.0f} us/append {(c1[1] - c0[1]) / mb:5.2f} s/MB"
          f" | commands/append {(c1[4] - c0[4]) / appends:4.2f}", flush=True)


if __name__ == "__main__":
    print(f"{time.strftime('%Y-%m-%d %H:%M')} {os.uname().nodename} {os.cpu_count()} CPUs, {BIN}, {DURATION:.0f} s after a 5 s warm-up")
    for n in SIZES:
        run(n)
    shutil.rmtree(W, ignore_errors=True)
