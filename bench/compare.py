#!/usr/bin/env python3
"""Side-by-side HTTP proxy benchmark: Fulcrum, HAProxy, NGINX.

Method (see docs/benchmarks.md):
- one NGINX "origin" process with three server blocks (three upstreams)
  serving a small body and a 16 KiB body, pinned to CPU 1 with wrk;
- each proxy in turn with one worker thread, pinned to CPU 0, round-robin
  over the three upstreams with upstream keep-alive;
- wrk (1 thread, 50 connections) for a fixed time per run; for `h2tls`,
  h2load (HTTP/2 over TLS, 50 connections, 1 stream each) against a TLS
  listener of the same process (self-signed ECDSA P-256 certificate made
  with openssl); for `tlsclose`, wrk over TLS with `Connection: close`, so
  every request pays a full TLS handshake (wrk does not resume sessions).
  Every proxy offers TLS 1.2 and 1.3 (NGINX 1.22 needs `ssl_protocols` for
  1.3), so all three negotiate TLS 1.3 and X25519 with wrk; by default
  Fulcrum picks AES-128-GCM and the anchors AES-256-GCM (their defaults),
  `--anchors-aes128` has them pick AES-128-GCM too;
- CPU time of the proxy process read from /proc/PID/stat (utime + stime)
  before and after each run -> CPU microseconds per request;
- runs interleaved (A B C A B C ...), repeated, medians reported;
- beside each proxy's row: the origin's and the load generator's CPU per
  request, how busy CPU 1 was (near 100 % it bounds requests/s, not the
  proxy) and TCP segments per request on the whole machine (4 when every
  ACK rides on data).

Fulcrum's http listeners defer accepting a connection until its first bytes
arrive (`defer_accept`, on by default); the anchors run as configured by
default. `--anchors-defer` gives them the same option (NGINX `listen ...
deferred`, HAProxy `bind ... defer-accept`). `--anchors-forwarding` has
them send the origin the fields Fulcrum sends by default (X-Forwarded-For,
-Proto, -Host and Via), so the origin does the same work for each proxy.
`--also NAME=BINARY` runs
another Fulcrum build beside the first (A/B of a change, same load).
`--upstream-h2` also runs the first build as `fulcrum-h2`, its cluster
speaking HTTP/2 (`http2 = true`) to h2c servers of the same origin
process: one upstream connection per origin server for all requests.
`--proxies ...,floor` adds bench/floor.c (built with gcc): a relay that
only copies bytes between each client connection and an upstream
connection of its own, the fewest system calls per request a user-space
proxy can make. Its CPU per request is the kernel's share every proxy
pays; it runs the plain kept-alive scenarios (small, 16k) only.
Only 127.0.0.1 is used; every process started is stopped at the end.
"""
import argparse, os, re, resource, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

TICK = os.sysconf("SC_CLK_TCK")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")

def cpu_ticks(pids):
    """(user, kernel) clock ticks of the processes."""
    user = kernel = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11]); kernel += int(fields[12])  # utime, stime
    return user, kernel

def cpu_per_request(before, after, total):
    """Total, user and kernel CPU microseconds per request."""
    user = (after[0] - before[0]) / TICK * 1e6 / max(total, 1)
    kernel = (after[1] - before[1]) / TICK * 1e6 / max(total, 1)
    return dict(cpu_us=user + kernel, user_us=user, sys_us=kernel)

def children(pid):
    """The process and its descendants (nginx/haproxy may fork workers)."""
    out = [pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except FileNotFoundError:
        kids = []
    for k in kids:
        out += children(int(k))
    return out

class Proc:
    def __init__(self, name, argv, port, cpu, tls_port=None):
        self.name, self.port, self.tls_port = name, port, tls_port
        self.p = subprocess.Popen(["taskset", "-c", str(cpu)] + argv, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(port)
        if tls_port:
            wait_port(tls_port)
        time.sleep(0.2)
    def pids(self):
        return children(self.p.pid)
    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL); self.p.wait()

def origin(tmp, ports, h2_ports=()):
    www = os.path.join(tmp, "www"); os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "small"), "w") as f: f.write("hello fulcrum\n")
    with open(os.path.join(www, "16k"), "wb") as f: f.write(b"x" * 16384)
    servers = "\n".join(f"server {{ listen 127.0.0.1:{p}; access_log off; keepalive_requests 100000; location / {{ root {www}; }} }}" for p in ports)
    # h2c with prior knowledge (NGINX 1.22: `listen ... http2` without ssl);
    # keepalive_requests also bounds the requests of one HTTP/2 connection.
    servers += "\n".join(f"server {{ listen 127.0.0.1:{p} http2; access_log off; keepalive_requests 100000000; location / {{ root {www}; }} }}" for p in h2_ports)
    conf = os.path.join(tmp, "origin.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; worker_processes 1; pid {tmp}/origin.pid; error_log {tmp}/origin.err;
events {{ worker_connections 4096; }}
http {{ {servers} }}
""")
    return Proc("origin", ["nginx", "-c", conf, "-p", tmp], ports[0], 1)

def certificate(tmp):
    """A self-signed certificate for 127.0.0.1: (cert, key, combined PEM)."""
    cert, key, pem = (os.path.join(tmp, n) for n in ("cert.pem", "key.pem", "combined.pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    with open(pem, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return cert, key, pem

def fulcrum(binary, tmp, port, tls_port, ups, tls, name="fulcrum", http2=False):
    backends = ", ".join(f'{{ address = "127.0.0.1:{p}" }}' for p in ups)
    conf = os.path.join(tmp, f"{name}.toml")
    with open(conf, "w") as f:
        f.write(f"""[runtime]
worker_threads = 1
[admin]
bind = "127.0.0.1:0"
[[listener]]
name = "web"
bind = "127.0.0.1:{port}"
cluster = "app"
[[listener]]
name = "tls"
bind = "127.0.0.1:{tls_port}"
cluster = "app"
tls = {{ cert = "{tls[0]}", key = "{tls[1]}" }}
[cluster.app]
algorithm = "round-robin"
http2 = {"true" if http2 else "false"}
backends = [{backends}]
""")
    env_argv = [binary, "run", "-c", conf]
    return Proc(name, env_argv, port, 0, tls_port)

AES128_FIRST = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

def haproxy(tmp, port, tls_port, ups, tls, defer=False, forwarding=False, aes128=False):
    opt = " defer-accept" if defer else ""
    suites = f"    ssl-default-bind-ciphersuites {AES128_FIRST}\n" if aes128 else ""
    fields = """    option forwardfor
    http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request add-header Via "%[req.ver] haproxy"
""" if forwarding else ""
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(ups))
    conf = os.path.join(tmp, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
    nbthread 1
    maxconn 4000
{suites}defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend web
    bind 127.0.0.1:{port}{opt}
    bind 127.0.0.1:{tls_port}{opt} ssl crt {tls[2]} alpn h2,http/1.1
    default_backend app
{fields}backend app
    balance roundrobin
{servers}
""")
    return Proc("haproxy", ["haproxy", "-db", "-f", conf], port, 0, tls_port)

def nginx_proxy(tmp, port, tls_port, ups, tls, defer=False, forwarding=False, aes128=False):
    opt = " deferred" if defer else ""
    suites = f"ssl_prefer_server_ciphers on; ssl_conf_command Ciphersuites {AES128_FIRST};" if aes128 else ""
    fields = ("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; "
              "proxy_set_header X-Forwarded-Host $host; proxy_set_header Via \"$server_protocol nginx\"; ") if forwarding else ""
    servers = "\n".join(f"server 127.0.0.1:{p};" for p in ups)
    conf = os.path.join(tmp, "nginx-proxy.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; worker_processes 1; pid {tmp}/proxy.pid; error_log {tmp}/proxy.err;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream app {{ {servers} keepalive 64; }}
  server {{ listen 127.0.0.1:{port}{opt}; listen 127.0.0.1:{tls_port}{opt} ssl http2; keepalive_requests 100000;
    ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}; ssl_protocols TLSv1.2 TLSv1.3; {suites}
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; {fields}}} }}
}}
""")
    return Proc("nginx", ["nginx", "-c", conf, "-p", tmp], port, 0, tls_port)

def floor(tmp, port, ups):
    """bench/floor.c, built here: the system-call floor of a user-space proxy."""
    binary = os.path.join(tmp, "floor")
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")
    subprocess.run(["gcc", "-O2", "-o", binary, source], check=True)
    return Proc("floor", [binary, str(port), *(str(p) for p in ups)], port, 0)

def skipped(name, scenario):
    """The floor speaks no TLS, and with a new connection per request it
    would connect upstream for every request, which a pooling proxy does
    not: it is a floor for the kept-alive scenarios only."""
    return name == "floor" and (SCENARIOS[scenario][2] or scenario == "close")

def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    def lat(q):
        m = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m: errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m: errors += sum(int(x) for x in m.groups())
    return rps, total, lat(50), lat(99), errors

def parse_h2load(out):
    """h2load prints no percentiles: the mean request time stands in for p50
    and the p99 column is left empty (NaN)."""
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    rps = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    total, failed, errored = (int(x) for x in m.groups()) if m else (0, 0, 0)
    m = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    mean = float("nan")
    if m:
        v, unit = float(m.group(1)), m.group(2)
        mean = v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    return rps, total, mean, float("nan"), failed + errored

# name: (path, wrk's extra arguments or None for h2load, sent to the TLS listener)
SCENARIOS = {
    "small": ("/small", [], False),
    "16k": ("/16k", [], False),
    "close": ("/small", ["-H", "Connection: close"], False),
    "h2tls": ("/small", None, True),
    # HTTP/1.1 over TLS, a new connection (full handshake) per request.
    "tlsclose": ("/small", ["-H", "Connection: close"], True),
}

def cpu_busy(cpu):
    """(busy, total) jiffies of one CPU from /proc/stat; idle and iowait are not busy."""
    for line in open("/proc/stat"):
        if line.startswith(f"cpu{cpu} "):
            f = [int(x) for x in line.split()[1:]]
            return sum(f) - f[3] - f[4], sum(f)
    return 0, 0

def tcp_out_segments():
    """Segments sent by every TCP socket of the machine (/proc/net/snmp)."""
    rows = [line.split() for line in open("/proc/net/snmp") if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("OutSegs")])

def run_once(proc, origin_proc, scenario, duration, conns):
    """One load run against `proc`; also charges the origin's CPU (it shares
    CPU 1 with the load generator, so a proxy that makes the origin work
    harder per request gets fewer requests/s at the same cost of its own)."""
    path, extra, tls = SCENARIOS[scenario]
    pids = proc.pids()
    opids = origin_proc.pids()
    obefore = cpu_ticks(opids)
    lbefore = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, segs0 = cpu_busy(1), tcp_out_segments()
    r = run_load(proc, pids, path, extra, duration, conns, tls)
    busy1, segs1 = cpu_busy(1), tcp_out_segments()
    lafter = resource.getrusage(resource.RUSAGE_CHILDREN)
    oafter = cpu_ticks(opids)
    # How busy CPU 1 (origin and load generator) was: near 100 % it, not the
    # proxy, bounds the requests/s, and they then follow what the origin and
    # the load generator spend per request.
    r["cpu1_busy"] = 100 * (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1)
    # TCP segments per request on the whole machine (client, proxy and
    # origin sides together): 4 when every ACK rides on data.
    r["segments"] = (segs1 - segs0) / max(r["total"], 1)
    r["origin_us"] = cpu_per_request(obefore, oafter, r["total"])["cpu_us"]
    # The load generator (wrk or h2load, a waited-for child): its CPU per
    # request shows whether a proxy's answers cost the client side more.
    spent = (lafter.ru_utime - lbefore.ru_utime) + (lafter.ru_stime - lbefore.ru_stime)
    r["load_us"] = spent * 1e6 / max(r["total"], 1)
    return r

def run_load(proc, pids, path, extra, duration, conns, tls=False):
    if extra is None:  # HTTP/2 over TLS with h2load
        before = cpu_ticks(pids)
        out = subprocess.run(["taskset", "-c", "1", "h2load", "-c", str(conns), "-m", "1", "-D", str(duration),
                              f"https://127.0.0.1:{proc.tls_port}{path}"],
                             capture_output=True, text=True, timeout=duration + 30).stdout
        after = cpu_ticks(pids)
        rps, total, p50, p99, errors = parse_h2load(out)
        return dict(rps=rps, p50=p50, p99=p99, errors=errors, total=total, **cpu_per_request(before, after, total))
    before = cpu_ticks(pids)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", *extra,
                          f"https://127.0.0.1:{proc.tls_port}{path}" if tls else f"http://127.0.0.1:{proc.port}{path}"], capture_output=True, text=True, timeout=duration + 30).stdout
    after = cpu_ticks(pids)
    rps, total, p50, p99, errors = parse_wrk(out)
    return dict(rps=rps, p50=p50, p99=p99, errors=errors, total=total, **cpu_per_request(before, after, total))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fulcrum", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--scenarios", default="small,16k,close,h2tls,tlsclose")
    ap.add_argument("--proxies", default="fulcrum,haproxy,nginx")
    ap.add_argument("--anchors-defer", action="store_true",
                    help="HAProxy and NGINX also defer accepting until the client's first bytes, like Fulcrum")
    ap.add_argument("--anchors-forwarding", action="store_true",
                    help="HAProxy and NGINX also send X-Forwarded-For/-Proto/-Host and Via to the origin, like Fulcrum")
    ap.add_argument("--anchors-aes128", action="store_true",
                    help="HAProxy and NGINX also choose TLS_AES_128_GCM_SHA256 first, like Fulcrum's cipher order")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=BINARY",
                    help="another Fulcrum build run beside --fulcrum (interleaved, same load), reported as NAME")
    ap.add_argument("--upstream-h2", action="store_true",
                    help="also run --fulcrum as `fulcrum-h2`: cluster http2 = true, to h2c servers of the same origin")
    args = ap.parse_args()
    scenarios = args.scenarios.split(",")
    names = args.proxies.split(",")
    builds = {"fulcrum": args.fulcrum}
    for a in args.also:
        name, _, binary = a.partition("=")
        if not binary or name in names:
            ap.error(f"--also {a}: expected NAME=BINARY with a new NAME")
        builds[name] = binary
        names.insert(names.index("fulcrum") + 1 if "fulcrum" in names else 0, name)
    if args.upstream_h2:
        builds["fulcrum-h2"] = args.fulcrum
        names.insert(names.index("fulcrum") + 1 if "fulcrum" in names else 0, "fulcrum-h2")
    tmp = tempfile.mkdtemp(prefix="fulcrum-bench-")
    os.chmod(tmp, 0o755)  # nginx workers run as another user
    ups = [free_port() for _ in range(3)]
    h2_ups = [free_port() for _ in range(3)] if args.upstream_h2 else []
    started = []
    results = {(s, n): [] for s in scenarios for n in names}
    try:
        started.append(origin(tmp, ups, h2_ups))
        tls = certificate(tmp)
        procs = {}
        for n in names:
            port, tls_port = free_port(), free_port()
            if n == "fulcrum-h2":
                p = fulcrum(builds[n], tmp, port, tls_port, h2_ups, tls, n, http2=True)
            elif n in builds:
                p = fulcrum(builds[n], tmp, port, tls_port, ups, tls, n)
            else:
                p = {"haproxy": lambda: haproxy(tmp, port, tls_port, ups, tls, args.anchors_defer,
                                                args.anchors_forwarding, args.anchors_aes128),
                     "nginx": lambda: nginx_proxy(tmp, port, tls_port, ups, tls, args.anchors_defer,
                                                  args.anchors_forwarding, args.anchors_aes128),
                     "floor": lambda: floor(tmp, port, ups)}[n]()
            started.append(p); procs[n] = p
        for rep in range(args.reps):
            for s in scenarios:
                for n in (n for n in names if not skipped(n, s)):
                    r = run_once(procs[n], started[0], s, args.duration, args.connections)
                    results[(s, n)].append(r)
                    print(f"rep {rep+1} {s:6} {n:8} {r['rps']:>9.0f} req/s  p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  "
                          f"cpu {r['cpu_us']:.1f} us/req (user {r['user_us']:.1f})  origin {r['origin_us']:.1f}  load {r['load_us']:.1f}  cpu1 {r['cpu1_busy']:.0f}%  segs {r['segments']:.2f}  errors {r['errors']}", file=sys.stderr, flush=True)
    finally:
        for p in reversed(started):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nMedians of {args.reps} interleaved runs of {args.duration} s, wrk -t1 -c{args.connections} "
          f"(h2tls: h2load -c{args.connections} -m1, mean latency in the p50 column; tlsclose: wrk over TLS), "
          f"proxy pinned to CPU 0 with 1 worker, origin and load generator on CPU 1.\n")
    print("| scenario | proxy | req/s | p50 ms | p99 ms | CPU µs/req | of it user | origin µs/req | load gen µs/req | CPU 1 busy | TCP segments/req | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in scenarios:
        for n in (n for n in names if not skipped(n, s)):
            rs = results[(s, n)]
            med = lambda k: statistics.median(r[k] for r in rs)
            p99 = "-" if med('p99') != med('p99') else f"{med('p99'):.2f}"
            print(f"| {s} | {n} | {med('rps'):.0f} | {med('p50'):.2f} | {p99} | {med('cpu_us'):.1f} | {med('user_us'):.1f} | {med('origin_us'):.1f} | {med('load_us'):.1f} | {med('cpu1_busy'):.0f} % | {med('segments'):.2f} | {sum(r['errors'] for r in rs)} |")
    print_ratios(scenarios, names, builds, results)
    print_floor(scenarios, names, results)

def print_floor(scenarios, names, results):
    """What each proxy spends per request above the floor relay's CPU."""
    if "floor" not in names:
        return
    med = lambda s, n, k: statistics.median(r[k] for r in results[(s, n)])
    print("\nAbove the floor (bench/floor.c: copies bytes, one upstream connection per client):\n")
    print("| scenario | proxy | CPU µs/req | above the floor µs | × the floor's CPU |")
    print("|---|---|---|---|---|")
    for s in (s for s in scenarios if not skipped("floor", s)):
        base = med(s, "floor", "cpu_us")
        for n in (n for n in names if n != "floor"):
            cpu = med(s, n, "cpu_us")
            print(f"| {s} | {n} | {cpu:.1f} | {cpu - base:+.1f} | {cpu / max(base, 1e-9):.2f}× |")

def print_ratios(scenarios, names, builds, results):
    """Each Fulcrum build's medians as ratios to the better anchor of the
    same run: what issue #8's goals are stated in."""
    anchors = [n for n in ("haproxy", "nginx") if n in names]
    if not anchors:
        return
    med = lambda s, n, k: statistics.median(r[k] for r in results[(s, n)])
    print("\nRatios to the better anchor (CPU: lower is better; req/s: higher is better):\n")
    print("| scenario | build | CPU µs/req | req/s | p99 ms |")
    print("|---|---|---|---|---|")
    for s in scenarios:
        cpu_best = min(anchors, key=lambda a: med(s, a, "cpu_us"))
        rps_best = max(anchors, key=lambda a: med(s, a, "rps"))
        p99s = [a for a in anchors if med(s, a, "p99") == med(s, a, "p99")]
        for n in (b for b in names if b in builds):
            cpu = med(s, n, "cpu_us") / max(med(s, cpu_best, "cpu_us"), 1e-9)
            rps = med(s, n, "rps") / max(med(s, rps_best, "rps"), 1e-9)
            p99 = "-"
            if p99s and med(s, n, "p99") == med(s, n, "p99"):
                p99_best = min(p99s, key=lambda a: med(s, a, "p99"))
                p99 = f"{med(s, n, 'p99'):.2f} against {med(s, p99_best, 'p99'):.2f} ({p99_best})"
            print(f"| {s} | {n} | {cpu:.2f}× {cpu_best} | {100 * rps:.0f} % of {rps_best} | {p99} |")

if __name__ == "__main__":
    main()
