#!/usr/bin/env bash
# Soak: mixed load through Fulcrum for a bounded time while backends die and
# come back, the configuration is reloaded and backends are drained and
# re-enabled through the admin API. Every 10 s it records the proxy's RSS,
# open file descriptors, the client-side error count and the number of
# reloads and admin calls that failed, so leaks show as a slope after
# warm-up. The admin API gets a token made for the run (it is read-only
# without one).
#
#   bench/soak.sh [--duration 600] [--clients 8] [--out soak.csv] [--bin PATH]
#
# Uses target/release/fulcrum (built if missing) unless --bin is given.
# Everything it starts is stopped when it ends, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=600
clients=8
out=soak.csv
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  bin=target/release/fulcrum
  [ -x "$bin" ] || cargo build --release -q -p fulcrum
fi

work=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop_all EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

backend_ports=()
backend_pids=()
start_backend() { # index
  local i=$1
  "$bin" testbed backend --listen "127.0.0.1:${backend_ports[$i]}" --name "b$i" \
    --latency "1ms..5ms" >/dev/null 2>&1 &
  backend_pids[$i]=$!
  pids+=("$!")
}
for i in 0 1 2; do
  backend_ports[$i]=$(free_port)
  start_backend "$i"
done
web_port=$(free_port)
admin_port=$(free_port)

config="$work/fulcrum.toml"
write_config() { # weight of b2 (changes on every reload)
  cat >"$config" <<EOF
[admin]
bind = "127.0.0.1:$admin_port"

[[listener]]
name = "web"
bind = "127.0.0.1:$web_port"
cluster = "app"
header_timeout = "5s"

[cluster.app]
algorithm = "peak-ewma"
backends = [
  { address = "127.0.0.1:${backend_ports[0]}", weight = 1 },
  { address = "127.0.0.1:${backend_ports[1]}", weight = 1 },
  { address = "127.0.0.1:${backend_ports[2]}", weight = $1 },
]
[cluster.app.health]
type = "http"
path = "/"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2
EOF
}
write_config 1
FULCRUM_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export FULCRUM_ADMIN_TOKEN
"$bin" run -c "$config" >"$work/fulcrum.log" 2>&1 &
proxy=$!
pids+=("$proxy")
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$admin_port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done

# Load: keep-alive clients, a mix of GETs, small POSTs and fresh connections.
python3 - "$web_port" "$clients" "$work/counts" <<'EOF' &
import http.client, random, sys, threading, time
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ok = err = 0
lock = threading.Lock()
def worker():
    global ok, err
    conn = None
    while True:
        try:
            if conn is None or random.random() < 0.05:
                if conn: conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            if random.random() < 0.3:
                conn.request("POST", "/upload", body=b"x" * random.randint(1, 8192))
            else:
                conn.request("GET", "/item/%d" % random.randint(1, 1000))
            r = conn.getresponse(); r.read()
            good = r.status < 500
        except Exception:
            good = False; conn = None
        with lock:
            if good: ok += 1
            else: err += 1
for _ in range(n):
    threading.Thread(target=worker, daemon=True).start()
while True:
    time.sleep(1)
    with lock:
        open(path, "w").write("%d %d\n" % (ok, err))
EOF
pids+=("$!")

echo "seconds,rss_kib,open_fds,requests_ok,errors,reloads,reload_failures,admin_calls,admin_failures" >"$out"
start=$(date +%s)
next_sample=$((start + 10))
tick=0
reloads=0 reload_failures=0 admin_calls=0 admin_failures=0
admin_patch() { # state
  admin_calls=$((admin_calls + 1))
  curl -fs -X PATCH -H "Authorization: Bearer $FULCRUM_ADMIN_TOKEN" -d "{\"state\": \"$1\"}" \
    "http://127.0.0.1:$admin_port/api/v1/clusters/app/backends/127.0.0.1:${backend_ports[1]}" >/dev/null ||
    { admin_failures=$((admin_failures + 1)); echo "admin PATCH $1 failed at ${elapsed}s" >&2; }
}
while :; do
  now=$(date +%s)
  elapsed=$((now - start))
  [ "$elapsed" -ge "$duration" ] && break
  tick=$((tick + 1))
  # Chaos, on a fixed rhythm: a backend dies every 15 s and returns 5 s
  # later; a reload every 30 s; a drain and re-enable every 20 s.
  i=$((tick / 15 % 3))
  if [ $((tick % 15)) -eq 0 ]; then
    kill "${backend_pids[$i]}" 2>/dev/null || true
  elif [ $((tick % 15)) -eq 5 ] && [ "$tick" -gt 15 ]; then
    start_backend "$i"
  fi
  if [ $((tick % 30)) -eq 0 ]; then
    write_config $((tick / 30 % 3 + 1))
    reloads=$((reloads + 1))
    "$bin" reload --admin "127.0.0.1:$admin_port" >/dev/null 2>"$work/reload.err" ||
      { reload_failures=$((reload_failures + 1)); echo "reload failed at ${elapsed}s: $(cat "$work/reload.err")" >&2; }
  fi
  if [ $((tick % 20)) -eq 0 ]; then
    admin_patch draining
  elif [ $((tick % 20)) -eq 5 ]; then
    admin_patch enabled
  fi
  if [ "$now" -ge "$next_sample" ]; then
    next_sample=$((next_sample + 10))
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$proxy/status" 2>/dev/null || echo 0)
    fds=$(ls "/proc/$proxy/fd" 2>/dev/null | wc -l)
    read -r ok err <"$work/counts" 2>/dev/null || { ok=0; err=0; }
    echo "$elapsed,$rss,$fds,$ok,$err,$reloads,$reload_failures,$admin_calls,$admin_failures" | tee -a "$out"
  fi
  kill -0 "$proxy" 2>/dev/null || { echo "soak.sh: fulcrum exited" >&2; tail -20 "$work/fulcrum.log" >&2; exit 1; }
  sleep 1
done
echo "soak.sh: done; samples in $out"
