#!/usr/bin/env python3
"""Scale checks for Fulcrum (issue #8), driven by bench/scale.sh.

    scale.py run --fulcrum BIN [--backends 10000] [--connections 50000] [--reps 3]
    scale.py backend --ports N --portfile FILE   (helper: HTTP on N loopback ports)
    scale.py clients --port P --count N --ip-from K --per-ip M   (helper)

`run` measures, on loopback only:

1. a cluster of --backends backends: time from start to the listener
   answering, RSS of the running proxy minus the RSS of the same proxy with 3
   backends, and the wall time of `POST /api/v1/reload` (the admin call
   returns once the new snapshot is published) while wrk keeps sending
   requests; wrk's errors and slowest request show whether traffic kept
   flowing;
2. --connections idle keep-alive client connections, each after one
   completed request: RSS delta per connection, and the latency of new
   requests while they stay open.

Every backend is a real listening socket (one helper process listens on all
ports, each bound to 127.0.0.1 port 0), so every pick reaches a server.
Every process started here is stopped before returning.
"""

import argparse
import asyncio
import http.client
import json
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOKEN = "scale-bench"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
# A backend connection idle this long is closed, so the proxy's upstream pool
# cannot hold one connection to each of 10 000 ports at once (the file
# descriptor limit of this machine is 20 000 per process).
BACKEND_IDLE_S = 2.0


# ---------------------------------------------------------------- helpers


def backend(args):
    """Serves RESPONSE to every request on args.ports loopback ports."""

    async def handle(reader, writer):
        try:
            while True:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BACKEND_IDLE_S)
                writer.write(RESPONSE)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    async def main():
        ports = []
        for _ in range(args.ports):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(128)
            s.setblocking(False)
            await asyncio.start_server(handle, sock=s)
            ports.append(s.getsockname()[1])
        tmp = args.portfile + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(map(str, ports)))
        os.rename(tmp, args.portfile)
        await asyncio.Event().wait()

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(main())


def read_response(sock_buf):
    """True when sock_buf holds one whole response to our GET."""
    end = sock_buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = 0
    for line in sock_buf[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return len(sock_buf) >= end + 4 + length


def clients(args):
    """Opens args.count keep-alive connections to the proxy, one GET each,
    from source addresses 127.0.0.<ip-from>.. (args.per_ip each, bound before
    connect), prints "ready N" and holds them until stdin closes; then checks
    every 100th connection still answers and prints "alive A/B"."""
    request = b"GET /idle HTTP/1.1\r\nhost: scale\r\n\r\n"
    sel = selectors.DefaultSelector()
    socks = []
    failed = 0
    batch = 500
    deadline = time.monotonic() + args.timeout
    for start in range(0, args.count, batch):
        pending = {}
        for i in range(start, min(start + batch, args.count)):
            ip = f"127.0.{(args.ip_from + i // args.per_ip) // 256}.{(args.ip_from + i // args.per_ip) % 256}"
            s = socket.socket()
            s.bind((ip, 0))
            try:
                s.connect(("127.0.0.1", args.port))
                if args.no_request:
                    socks.append(s)
                    continue
                s.sendall(request)
            except OSError:
                failed += 1
                s.close()
                continue
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            pending[s] = b""
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()
                    del pending[s]
                    failed += 1
                    continue
                pending[s] += data
                if read_response(pending[s]):
                    sel.unregister(s)
                    del pending[s]
                    socks.append(s)
        for s in pending:
            sel.unregister(s)
            s.close()
            failed += 1
    print(f"ready {len(socks)} failed {failed}", flush=True)
    sys.stdin.read()
    sample = socks[::100]
    alive = 0
    for s in sample:
        s.setblocking(True)
        s.settimeout(5)
        try:
            s.sendall(request)
            buf = b""
            while not read_response(buf):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            alive += read_response(buf)
        except OSError:
            pass
    print(f"alive {alive}/{len(sample)}", flush=True)


# ---------------------------------------------------------------- driver


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def get(port, path="/", timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def wait_ready(port, proc, limit=60):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"fulcrum exited with {proc.returncode}")
        try:
            if get(port, timeout=1) == 200:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"port {port} never answered")


def config(ports, listen, admin, extra_listener=""):
    backends = ",\n".join(f'  {{ address = "127.0.0.1:{p}" }}' for p in ports)
    return f"""[admin]
bind = "127.0.0.1:{admin}"

[[listener]]
name = "web"
bind = "127.0.0.1:{listen}"
protocol = "http"
cluster = "app"
{extra_listener}
[cluster.app]
backends = [
{backends}
]
"""


class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.procs = []

    def spawn(self, cmd, **kw):
        p = subprocess.Popen(cmd, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)

    def start_backends(self, n):
        portfile = os.path.join(self.tmp, f"ports-{n}")
        p = self.spawn([sys.executable, __file__, "backend", "--ports", str(n), "--portfile", portfile])
        for _ in range(1200):
            if os.path.exists(portfile):
                with open(portfile) as f:
                    return p, [int(x) for x in f.read().split()]
            time.sleep(0.05)
        raise RuntimeError("backend helper did not start")

    def start_fulcrum(self, text, name):
        path = os.path.join(self.tmp, f"{name}.toml")
        with open(path, "w") as f:
            f.write(text)
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        env = dict(os.environ, FULCRUM_LOG="warn", FULCRUM_ADMIN_TOKEN=TOKEN)
        return path, self.spawn([self.args.fulcrum, "run", "-c", path], stderr=log, env=env)

    # -- 1: many backends

    def backends(self, results):
        n = self.args.backends
        helper, ports = self.start_backends(n)
        ready = {3: [], n: []}
        rss = {3: [], n: []}
        reloads = []
        wrk_out = []
        for rep in range(self.args.reps):
            for count in (3, n):
                listen, admin = free_port(), free_port()
                path, proc = self.start_fulcrum(config(ports[:count], listen, admin), f"b{count}")
                ready[count].append(wait_ready(listen, proc))
                for _ in range(200):
                    get(listen)
                time.sleep(0.5)
                rss[count].append(rss_kib(proc.pid))
                if count == n:
                    reloads += self.reload_under_load(listen, admin, wrk_out)
                self.stop(proc)
        self.stop(helper)
        med = statistics.median
        results.append(("start to first answer, 3 backends", f"{med(ready[3]) * 1000:.0f} ms"))
        results.append((f"start to first answer, {n} backends", f"{med(ready[n]) * 1000:.0f} ms"))
        results.append(("RSS, 3 backends", f"{med(rss[3]) / 1024:.1f} MiB"))
        results.append((f"RSS, {n} backends", f"{med(rss[n]) / 1024:.1f} MiB"))
        delta = med(rss[n]) - med(rss[3])
        results.append((f"RSS per backend ({n} minus 3)", f"{delta * 1024 / (n - 3):.0f} B"))
        results.append((f"reload, {n} backends (POST /api/v1/reload, under load)",
                        f"median {med(reloads) * 1000:.0f} ms, max {max(reloads) * 1000:.0f} ms ({len(reloads)} reloads)"))
        for when, line in wrk_out:
            results.append((f"wrk -c8, {n} backends, {when}", line))

    def wrk(self, listen, duration):
        return self.spawn(["wrk", "-t1", "-c8", f"-d{duration}s", "--latency", f"http://127.0.0.1:{listen}/"],
                          stdout=subprocess.PIPE, text=True)

    @staticmethod
    def wrk_summary(out, duration):
        lines = out.splitlines()
        reqs = next((l.split()[0] for l in lines if "requests in" in l), "?")
        errors = next((l.strip() for l in lines if "Socket errors" in l), "socket errors: 0")
        non2xx = next((l.strip() for l in lines if "Non-2xx" in l), "non-2xx: 0")
        p99 = next((l.split()[1] for l in lines if l.strip().startswith("99%")), "?")
        slowest = next((l.split()[3] for l in lines if l.strip().startswith("Latency")), "?")
        return f"{reqs} requests in {duration}s, {errors}, {non2xx}, p99 {p99}, max {slowest}"

    def reload_under_load(self, listen, admin, wrk_out):
        duration = 2 + self.args.reloads
        # The same load without reloads first, to tell the backends' own
        # latency from what reloads add.
        out, _ = self.wrk(listen, duration).communicate(timeout=duration + 30)
        wrk_out.append(("without reloads", self.wrk_summary(out, duration)))
        wrk = self.wrk(listen, duration)
        time.sleep(1)
        times = []
        generation = None
        for _ in range(self.args.reloads):
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=60)
            t0 = time.monotonic()
            c.request("POST", "/api/v1/reload", headers={"authorization": f"Bearer {TOKEN}"})
            r = c.getresponse()
            body = r.read()
            times.append(time.monotonic() - t0)
            c.close()
            if r.status != 200:
                raise RuntimeError(f"reload failed: {r.status} {body[:200]!r}")
            g = json.loads(body)["generation"]
            if generation is not None and g != generation + 1:
                raise RuntimeError(f"generation went {generation} -> {g}")
            generation = g
            time.sleep(0.7)
        out, _ = wrk.communicate(timeout=duration + 30)
        wrk_out.append((f"during {self.args.reloads} reloads", self.wrk_summary(out, duration)))
        return times

    # -- 2: many idle client connections

    def connections(self, results):
        hard = self.args.fd_limit
        n = min(self.args.connections, hard - 1000)
        if n < self.args.connections:
            results.append(("client connections asked / opened",
                            f"{self.args.connections} / {n} (RLIMIT_NOFILE hard limit {hard} per process)"))
        helper, ports = self.start_backends(3)
        listen, admin = free_port(), free_port()
        per_ip = 1000
        # idle_timeout alone bounds how long an idle keep-alive connection
        # stays open (header_timeout runs only while a request head arrives).
        extra = (f'idle_timeout = "10m"\nmax_connections = {n + 1000}\n'
                 f"max_connections_per_ip = {per_ip + 10}\n")
        _, proc = self.start_fulcrum(config(ports, listen, admin, extra), "conns")
        wait_ready(listen, proc)
        for _ in range(500):
            get(listen)
        time.sleep(1)
        before = rss_kib(proc.pid)
        t0 = time.monotonic()
        cl = self.spawn([sys.executable, __file__, "clients", "--port", str(listen), "--count", str(n),
                         "--ip-from", "2", "--per-ip", str(per_ip)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = cl.stdout.readline().split()
        opened, failed = int(line[1]), int(line[3])
        open_s = time.monotonic() - t0
        time.sleep(2)
        samples = []
        for _ in range(3):
            samples.append(rss_kib(proc.pid))
            time.sleep(0.5)
        after = statistics.median(samples)
        lat = []
        for _ in range(200):
            t = time.monotonic()
            if get(listen) != 200:
                raise RuntimeError("probe request failed")
            lat.append(time.monotonic() - t)
        lat.sort()
        cl.stdin.close()
        alive = cl.stdout.readline().strip()
        cl.wait(30)
        self.stop(proc)
        self.stop(helper)
        results.append(("idle client connections open", f"{opened} ({failed} failed, opened in {open_s:.1f} s)"))
        results.append(("RSS before / with them", f"{before / 1024:.1f} MiB / {after / 1024:.1f} MiB"))
        results.append(("RSS per idle client connection", f"{(after - before) * 1024 / max(opened, 1) / 1024:.2f} KiB"))
        results.append(("new requests while they are open (200, new connection each)",
                        f"p50 {lat[100] * 1000:.2f} ms, p99 {lat[197] * 1000:.2f} ms, max {lat[-1] * 1000:.2f} ms"))
        results.append(("idle connections answering afterwards (every 100th)", alive.split()[1]))


def run(args):
    import resource
    args.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # `timeout` (scale.sh) sends SIGTERM: unwind so `finally` stops everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(args, tmp)
        try:
            if "backends" in args.parts:
                bench.backends(results)
            if "connections" in args.parts:
                bench.connections(results)
        finally:
            bench.stop_all()
    print()
    print(f"Medians of {args.reps} runs where repeated; loopback, {os.cpu_count()} cores shared.")
    print()
    print("| check | result |")
    print("|---|---|")
    for k, v in results:
        print(f"| {k} | {v} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--fulcrum", required=True)
    r.add_argument("--backends", type=int, default=10_000)
    r.add_argument("--connections", type=int, default=50_000)
    r.add_argument("--reps", type=int, default=3)
    r.add_argument("--reloads", type=int, default=5)
    r.add_argument("--parts", default="backends,connections")
    b = sub.add_parser("backend")
    b.add_argument("--ports", type=int, required=True)
    b.add_argument("--portfile", required=True)
    c = sub.add_parser("clients")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--ip-from", type=int, default=2)
    c.add_argument("--per-ip", type=int, default=1000)
    c.add_argument("--timeout", type=float, default=120)
    c.add_argument("--no-request", action="store_true", help="connect only (to split task from buffer memory)")
    args = p.parse_args()
    {"run": run, "backend": backend, "clients": clients}[args.cmd](args)


if __name__ == "__main__":
    main()
