#!/usr/bin/env bash
# L4 throughput on loopback: direct, through Fulcrum (tcp listener, splice),
# through HAProxy `mode tcp` (default, and with `option splice-auto`), and
# through NGINX `stream` when its module is installed.
#
#   bench/l4.sh [ROUNDS=5] [MIB_PER_RUN=1024] [TARGETS]
#
# TARGETS is a space-separated subset of
# "direct fulcrum haproxy haproxy-splice nginx" (default: all five).
# Environment:
#   L4_PUMP=iperf3|python   byte pump (default iperf3; python = bench/l4_pump.py)
#   L4_EXTRA="name=/path/to/fulcrum ..."  more Fulcrum builds to run as extra
#                           targets in the same interleaved rounds (A/B runs)
#   L4_THREADS=1            worker threads of every proxy
#
# The pump: iperf3 (one stream, sender with -Z sendfile so it costs little
# CPU), bounded by -n bytes and by `timeout`; its server is the sink behind
# every target. Each round runs every target once, interleaved, so drift
# hits all alike. Reports medians of: MB/s (received by the sink), the
# proxy's CPU seconds per GB (utime+stime from /proc/PID/stat) and the whole
# machine's busy CPU seconds per GB (/proc/stat, all cores, including the
# pump and anything else running). Needs iperf3 and haproxy; installs them
# with apt-get when missing (and libnginx-mod-stream for the nginx target).
set -euo pipefail
ROUNDS=${1:-5}
MIB=${2:-1024}
TARGETS=(${3:-direct fulcrum haproxy haproxy-splice nginx})
PUMP=${L4_PUMP:-iperf3}
THREADS=${L4_THREADS:-1}
BYTES=$((MIB * 1024 * 1024))
# Longest a single run may take: 1 GiB at a slow 20 MB/s, plus slack.
RUN_LIMIT=$((MIB / 20 + 30))
cd "$(dirname "$0")/.."

need() { # $1 command, $2 package
  command -v "$1" >/dev/null && return 0
  echo "installing $2" >&2
  apt-get install -y "$2" >/dev/null 2>&1 || { echo "$1 missing: apt-get install $2" >&2; exit 1; }
}
need haproxy haproxy
[ "$PUMP" = iperf3 ] && need iperf3 iperf3
NGINX_MOD=/usr/lib/nginx/modules/ngx_stream_module.so
if [[ " ${TARGETS[*]} " == *" nginx "* ]]; then
  need nginx nginx
  [ -f "$NGINX_MOD" ] || apt-get install -y libnginx-mod-stream >/dev/null 2>&1 || true
  [ -f "$NGINX_MOD" ] || { echo "no nginx stream module; skipping nginx" >&2; TARGETS=(${TARGETS[@]/nginx}); }
fi

nice cargo build --release -q -p fulcrum
BIN=${CARGO_TARGET_DIR:-target}/release/fulcrum
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

declare -A ADDR PID
SINK=$(port)
ADDR[direct]=$SINK; PID[direct]=0
if [ "$PUMP" = iperf3 ]; then
  iperf3 -s -B 127.0.0.1 -p "$SINK" >"$TMP/iperf3.log" 2>&1 & PIDS+=($!)
else
  python3 bench/l4_pump.py sink "$SINK" & PIDS+=($!)
fi
OPEN=($SINK)

start_fulcrum() { # $1 target name, $2 binary
  local p; p=$(port)
  cat > "$TMP/$1.toml" <<TOML
[runtime]
worker_threads = $THREADS
[[listener]]
name = "l4"
bind = "127.0.0.1:$p"
protocol = "tcp"
cluster = "sink"
[cluster.sink]
backends = [{ address = "127.0.0.1:$SINK" }]
TOML
  FULCRUM_LOG=warn "$2" run -c "$TMP/$1.toml" 2>"$TMP/$1.log" & PIDS+=($!)
  ADDR[$1]=$p; PID[$1]=$!; OPEN+=($p)
}
start_haproxy() { # $1 target name, $2 extra option
  local p; p=$(port)
  cat > "$TMP/$1.cfg" <<CFG
global
    nbthread $THREADS
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    $2
frontend f
    bind 127.0.0.1:$p
    default_backend b
backend b
    server s 127.0.0.1:$SINK
CFG
  haproxy -f "$TMP/$1.cfg" -db >"$TMP/$1.log" 2>&1 & PIDS+=($!)
  ADDR[$1]=$p; PID[$1]=$!; OPEN+=($p)
}
start_nginx() {
  local p; p=$(port)
  mkdir -p "$TMP/nginx"
  cat > "$TMP/nginx.conf" <<CFG
load_module $NGINX_MOD;
daemon off;
master_process off;
worker_processes $THREADS;
pid $TMP/nginx/pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 64; }
stream {
    server {
        listen 127.0.0.1:$p;
        proxy_pass 127.0.0.1:$SINK;
    }
}
CFG
  nginx -c "$TMP/nginx.conf" -p "$TMP/nginx" >"$TMP/nginx.log" 2>&1 & PIDS+=($!)
  ADDR[nginx]=$p; PID[nginx]=$!; OPEN+=($p)
}

ALL=()
for t in "${TARGETS[@]}"; do
  case $t in
    direct) ;;
    fulcrum) start_fulcrum fulcrum "$BIN" ;;
    haproxy) start_haproxy haproxy "" ;;
    haproxy-splice) start_haproxy haproxy-splice "option splice-auto" ;;
    nginx) start_nginx ;;
    *) echo "unknown target $t" >&2; exit 1 ;;
  esac
  ALL+=("$t")
done
for e in ${L4_EXTRA:-}; do start_fulcrum "${e%%=*}" "${e#*=}"; ALL+=("${e%%=*}"); done
for p in "${OPEN[@]}"; do wait_port "$p"; done

TCK=$(getconf CLK_TCK)
cpu() { [ "$1" = 0 ] && { echo 0; return; }; awk '{print $14+$15}' "/proc/$1/stat"; }
# Busy ticks of the whole machine: all of /proc/stat's cpu line but idle and iowait.
busy() { awk '$1=="cpu"{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
pump() { # $1 port -> "bytes seconds"
  if [ "$PUMP" = iperf3 ]; then
    timeout "$RUN_LIMIT" iperf3 -c 127.0.0.1 -p "$1" -n "$BYTES" -Z -J --connect-timeout 5000 >"$TMP/run.json"
    python3 - "$TMP/run.json" "$BYTES" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["end"]["sum_received"]
# iperf3 stops its receiver's clock when the sender reports the end, so the
# last bytes in flight may go uncounted; a large shortfall is an error.
if r["bytes"] < 0.9 * int(sys.argv[2]):
    sys.exit(f"sink received {r['bytes']} of {sys.argv[2]} bytes")
print(r["bytes"], r["seconds"])
PY
  else
    timeout "$RUN_LIMIT" python3 bench/l4_pump.py send "127.0.0.1:$1" "$BYTES"
  fi
}
for r in $(seq "$ROUNDS"); do
  for t in "${ALL[@]}"; do
    c0=$(cpu "${PID[$t]}"); m0=$(busy)
    read -r b s < <(pump "${ADDR[$t]}")
    c1=$(cpu "${PID[$t]}"); m1=$(busy)
    awk -v t="$t" -v b="$b" -v s="$s" -v c=$((c1 - c0)) -v m=$((m1 - m0)) -v k="$TCK" \
      'BEGIN { printf "%s %.1f %.3f %.3f\n", t, b / s / 1e6, (c / k) / (b / 1e9), (m / k) / (b / 1e9) }' >> "$TMP/runs"
  done
done
[ -n "${L4_RUNS:-}" ] && cp "$TMP/runs" "$L4_RUNS"

median() { awk -v t="$1" -v f="$2" '$1==t{print $f}' "$TMP/runs" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo "# L4 throughput, $PUMP pump, $ROUNDS rounds x $MIB MiB, medians ($(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-16s %10s %10s %12s %10s\n' target "MB/s" "CPU s/GB" "machine s/GB" "x direct"
DIRECT=$(median direct 2)
for t in "${ALL[@]}"; do
  mbs=$(median "$t" 2); cpg=$(median "$t" 3); mach=$(median "$t" 4)
  [ "$t" = direct ] && cpg="-"
  ratio=$([ -n "$DIRECT" ] && awk -v a="$mbs" -v d="$DIRECT" 'BEGIN{printf "%.2f", a/d}' || echo "-")
  printf '%-16s %10s %10s %12s %10s\n' "$t" "$mbs" "$cpg" "$mach" "$ratio"
done
