#!/usr/bin/env bash
# Instructions and syscalls per request on the HTTP keep-alive path.
#
#   bench/callgrind.sh [N] [PATH] [close]   # default: 5000 keep-alive requests of /small
#
# With `close`, every request opens a new client connection and sends
# `Connection: close` (the per-connection cost is then in every request).
# With `h2tls`, h2load sends the requests as HTTP/2 streams over TLS (10
# connections, one stream at a time each, as `bench/compare.sh`'s h2tls
# scenario) to a TLS listener with a self-signed certificate.
# With UPSTREAM=h2 in the environment, the origin's servers speak h2c and
# the cluster has `http2 = true`. With ACCESS_LOG=json (or combined) the
# listener writes an access log in that format to $OUT/access.log.
#
# Starts an nginx origin (3 ports) and Fulcrum (release build, one worker,
# round-robin) under callgrind, sends 500 warm-up requests, zeroes the
# counters, sends exactly N requests over 10 keep-alive connections, dumps
# the counters and prints Ir per request. Then runs Fulcrum natively under
# `strace -f -c` for N more requests and prints syscalls per request.
# Wall-clock time is not measured: instruction counts are stable on a busy
# machine, timings are not.
set -euo pipefail
N=${1:-5000}
URLPATH=${2:-/small}
MODE=${3:-keepalive}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FULCRUM_BIN:-$ROOT/target/release/fulcrum}
OUT=${OUT:-$(mktemp -d /tmp/fulcrum-cg.XXXXXX)}
mkdir -p "$OUT"
chmod 755 "$OUT"
command -v nginx >/dev/null && command -v valgrind >/dev/null && command -v strace >/dev/null || {
    apt-get install -y nginx valgrind strace >/dev/null
}
if [ "$MODE" = h2tls ]; then
    command -v h2load >/dev/null && command -v openssl >/dev/null || apt-get install -y nghttp2-client openssl >/dev/null
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P1=$(free_port); P2=$(free_port); P3=$(free_port); PX=$(free_port); PT=$(free_port)
mkdir -p "$OUT/www"; chmod 755 "$OUT/www"
printf 'hello fulcrum\n' > "$OUT/www/small"
head -c 16384 /dev/zero | tr '\0' x > "$OUT/www/16k"
chmod 644 "$OUT/www/"*
servers=""
LISTEN_OPT=""; HTTP2=false
if [ "${UPSTREAM:-h1}" = h2 ]; then LISTEN_OPT=" http2"; HTTP2=true; fi
for p in $P1 $P2 $P3; do
    servers="$servers server { listen 127.0.0.1:$p$LISTEN_OPT; access_log off; keepalive_requests 100000000; location / { root $OUT/www; } }"
done
cat > "$OUT/origin.conf" <<CONF
daemon off; worker_processes 1; pid $OUT/origin.pid; error_log $OUT/origin.err;
events { worker_connections 4096; }
http { $servers }
CONF
cat > "$OUT/fulcrum.toml" <<CONF
[runtime]
worker_threads = 1
[admin]
bind = "127.0.0.1:0"
[[listener]]
name = "web"
bind = "127.0.0.1:$PX"
cluster = "app"
$( [ -n "${ACCESS_LOG:-}" ] && printf 'access_log = "%s"\naccess_log_format = "%s"\n' "$OUT/access.log" "$ACCESS_LOG" )
[cluster.app]
algorithm = "round-robin"
http2 = $HTTP2
backends = [{ address = "127.0.0.1:$P1" }, { address = "127.0.0.1:$P2" }, { address = "127.0.0.1:$P3" }]
CONF
if [ "$MODE" = h2tls ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null
    cat >> "$OUT/fulcrum.toml" <<CONF
[[listener]]
name = "tls"
bind = "127.0.0.1:$PT"
cluster = "app"
tls = { cert = "$OUT/cert.pem", key = "$OUT/key.pem" }
CONF
fi
# Sends exactly $2 requests of $URLPATH over 10 connections; prints how many were answered.
load() {
    if [ "$MODE" = h2tls ]; then
        h2load -n "$2" -c 10 -m 1 "https://127.0.0.1:$PT$URLPATH" |
            awk '/^requests:/ { print $8; exit }'
    else
        python3 "$ROOT/bench/fixed_load.py" "127.0.0.1:$1" "$URLPATH" "$2" 10 "$MODE"
    fi
}
nginx -c "$OUT/origin.conf" -p "$OUT" & ORIGIN=$!
cleanup() { kill "$ORIGIN" 2>/dev/null || true; [ -n "${FPID:-}" ] && kill "$FPID" 2>/dev/null || true; }
trap cleanup EXIT
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
wait_port "$P1"

# 1. instructions per request
FULCRUM_LOG=warn valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$OUT/cg.out" \
    "$BIN" run -c "$OUT/fulcrum.toml" 2>"$OUT/valgrind.err" & FPID=$!
wait_port "$PX"
load "$PX" 500 >/dev/null
callgrind_control -z "$FPID" >/dev/null
DONE=$(load "$PX" "$N")
callgrind_control -d "$FPID" >/dev/null
kill -INT "$FPID"; wait "$FPID" || true; FPID=
DUMP=$(ls -t "$OUT"/cg.out.* | head -1)
IR=$(callgrind_annotate "$DUMP" | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
echo "requests: $DONE  Ir: $IR  Ir/request: $((IR / DONE))"
# Self cost per function and request. (callgrind_annotate 3.19 charges
# everything to the threads' `clone` frame on these dumps.) A cost line
# right after `calls=` is the callee's inclusive cost and is skipped.
awk -v n="$DONE" '/^fn=/ { fn = substr($0, 4); next }
    /^calls=/ { skip = 1; next }
    /^[0-9+*-]/ { if (skip) { skip = 0; next } k = split($0, a, " "); self[fn] += a[k] }
    END { for (f in self) printf "%10.0f  %s\n", self[f] / n, f }' "$DUMP" |
    sort -rn | head -40 > "$OUT/top.txt"
echo "top functions (self Ir per request): $OUT/top.txt  dump: $DUMP"

# 2. syscalls per request
FULCRUM_LOG=warn "$BIN" run -c "$OUT/fulcrum.toml" 2>"$OUT/fulcrum.err" & FPID=$!
wait_port "$PX"
load "$PX" 500 >/dev/null
strace -f -c -o "$OUT/strace.txt" -p "$FPID" & STRACE=$!
sleep 1
DONE=$(load "$PX" "$N")
kill -INT "$STRACE"; wait "$STRACE" || true
kill -INT "$FPID"; wait "$FPID" || true; FPID=
CALLS=$(awk '/^------/ {n++} n==2 && /total/ {print $4; exit}' "$OUT/strace.txt")
CALLS=${CALLS:-$(awk '/total/ {print $4}' "$OUT/strace.txt")}
echo "syscalls: $CALLS  per request: $(python3 -c "print(round($CALLS/$DONE, 2))")  ($OUT/strace.txt)"
