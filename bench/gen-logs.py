#!/usr/bin/env python3
"""Realistic logs for the compression bench: bench/gen-logs.py KIND SIZE_MIB OUT [NEEDLE]

KIND: access (nginx "combined"), json (a service's JSON lines with a trace id each), demo (the
demo's service writer: timestamp, level, worker, request id, message). A 32 MiB block of
random lines is generated and written again with fresh timestamps until SIZE_MIB (zstd's frames
are 1 MiB, so the repetition is invisible to the compression ratio). With NEEDLE, one line in
the middle of the file holds it (a request id that occurs once)."""
import random
import sys

kind, size, out = sys.argv[1], int(sys.argv[2]) << 20, sys.argv[3]
needle = sys.argv[4] if len(sys.argv) > 4 else None
rnd = random.Random(7)
paths = ["/", "/index.html", "/api/v1/items", "/api/v1/items/%d", "/api/v1/users/%d", "/login",
         "/static/app.%x.js", "/static/style.css", "/health", "/api/v1/orders?page=%d"]
agents = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
          "curl/8.11.0", "Prometheus/2.55.1", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"]
levels = ["INFO"] * 20 + ["DEBUG"] * 6 + ["WARN"] * 2 + ["ERROR"]
msgs = ["request done", "cache miss for key %s", "user %d logged in", "retrying upstream call (%d/3)",
        "slow query took %d ms", "connection reset by peer", "queued job %s", "flushed %d rows"]


def path():
    p = rnd.choice(paths)
    return p % rnd.randint(1, 99999) if "%" in p else p


def line(t):
    hh, mm, ss = t // 3600 % 24, t // 60 % 60, t % 60
    if kind == "access":
        return '%d.%d.%d.%d - - [02/Dec/2026:%02d:%02d:%02d +0000] "%s %s HTTP/1.1" %d %d "-" "%s"\n' % (
            rnd.choice([10, 172, 192]), rnd.randint(0, 31), rnd.randint(0, 255), rnd.randint(1, 254),
            hh, mm, ss, rnd.choice(["GET"] * 8 + ["POST", "HEAD"]), path(),
            rnd.choice([200] * 12 + [304, 301, 404, 500]), rnd.randint(0, 80000), rnd.choice(agents))
    msg = rnd.choice(msgs)
    if "%s" in msg:
        msg = msg % ("%08x" % rnd.getrandbits(32))
    elif "%d" in msg:
        msg = msg % rnd.randint(1, 5000)
    if kind == "json":
        return ('{"ts":"2026-12-02T%02d:%02d:%02d.%03dZ","level":"%s","service":"orders","trace_id":"%032x",'
                '"span_id":"%016x","path":"%s","status":%d,"duration_ms":%d,"msg":"%s"}\n') % (
            hh, mm, ss, rnd.randint(0, 999), rnd.choice(levels).lower(), rnd.getrandbits(128),
            rnd.getrandbits(64), path(), rnd.choice([200] * 9 + [404, 500]), rnd.randint(1, 900), msg)
    return "2026-12-02 %02d:%02d:%02d.%03d %-5s [worker-%d] req=%016x %s\n" % (
        hh, mm, ss, rnd.randint(0, 999), rnd.choice(levels), rnd.randint(1, 8), rnd.getrandbits(64), msg)


block, n, t = [], 0, 0
while n < 32 << 20:
    s = line(t)
    block.append(s)
    n += len(s)
    t += rnd.random() < 0.01
block = "".join(block).encode()
with open(out, "wb") as f:
    written, placed = 0, needle is None
    while written < size:
        chunk = block[: size - written]
        if not placed and written + len(chunk) >= size // 2:
            cut = chunk.index(b"\n", max(0, size // 2 - written)) + 1
            f.write(chunk[:cut])
            f.write(("2026-12-02 12:00:00.000 ERROR [worker-3] req=%s payment declined\n" % needle).encode())
            written += cut
            chunk = chunk[cut:]
            placed = True
        f.write(chunk)
        written += len(chunk)
