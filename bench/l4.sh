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
#   L4_IPERF3="-l 1M"       more iperf3 client arguments (default: none,
#                           i.e. 128 KiB writes)
#
# The pump: iperf3 (one stream, sender with -Z sendfile so it costs little
# CPU), bounded by -n bytes and by `timeout`; its server is the sink behind
# every target. Each round runs every target once, interleaved, so drift
# hits all alike. Reports medians of: MB/s (received by the sink) and CPU
# seconds per GB of the proxy (utime+stime from /proc/PID/stat), of the
# sending pump (rusage), of the sink (/proc/PID/stat), of those three
# ("all": what the benchmark itself costs) and of the whole machine (busy
# ticks of all cores from /proc/stat, including anything else running, and
# process start-up around each run). On loopback the kernel's TCP work is
# charged to the processes that send, so "all" shows what an extra hop
# costs; with both cores busy, throughput is about 2 cores / "all". Needs iperf3 and haproxy; installs them
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
SINKPID=$!
OPEN=($SINK)

start_fulcrum() { # $1 target name, $2 binary
  local p; p=$(port)
  cat > "$TMP/$1.toml" <<TOML
[runtime]
worker_threads = $THREADS
[admin]
bind = "127.0.0.1:0"
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
pump() { # $1 port -> "bytes seconds client-cpu-ticks"
  if [ "$PUMP" = iperf3 ]; then
    python3 - "$1" "$BYTES" "$RUN_LIMIT" "$TCK" "${L4_IPERF3:-}" <<'PY'
import json, resource, subprocess, sys
port, nbytes, limit, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = subprocess.run(
    ["iperf3", "-c", "127.0.0.1", "-p", port, "-n", str(nbytes), "-Z", "-J",
     "--connect-timeout", "5000"] + sys.argv[5].split(),
    capture_output=True, timeout=limit, check=True).stdout
r = json.loads(out)["end"]["sum_received"]
# iperf3 stops its receiver's clock when the sender reports the end, so the
# last bytes in flight may go uncounted (up to the socket buffers of both
# connections, tens of MiB); a larger shortfall is an error.
if r["bytes"] < min(0.9 * nbytes, nbytes - (80 << 20)):
    sys.exit(f"sink received {r['bytes']} of {nbytes} bytes")
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r["bytes"], r["seconds"], round((u.ru_utime + u.ru_stime) * tck))
PY
  else
    python3 - "$1" "$BYTES" "$RUN_LIMIT" "$TCK" <<'PY'
import resource, subprocess, sys
port, nbytes, limit, tck = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = subprocess.run(["python3", "bench/l4_pump.py", "send", "127.0.0.1:" + port, nbytes],
                     capture_output=True, text=True, timeout=limit, check=True).stdout
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(out.strip(), round((u.ru_utime + u.ru_stime) * tck))
PY
  fi
}
for r in $(seq "$ROUNDS"); do
  for t in "${ALL[@]}"; do
    c0=$(cpu "${PID[$t]}"); k0=$(cpu "$SINKPID"); m0=$(busy)
    read -r b s p < <(pump "${ADDR[$t]}")
    c1=$(cpu "${PID[$t]}"); k1=$(cpu "$SINKPID"); m1=$(busy)
    awk -v t="$t" -v b="$b" -v s="$s" -v c=$((c1 - c0)) -v p="$p" -v r=$((k1 - k0)) -v m=$((m1 - m0)) -v k="$TCK" \
      'BEGIN { g = b / 1e9; printf "%s %.1f %.3f %.3f %.3f %.3f %.3f\n", t, b / s / 1e6, c / k / g, p / k / g, r / k / g, (c + p + r) / k / g, m / k / g }' >> "$TMP/runs"
  done
done
[ -n "${L4_RUNS:-}" ] && cp "$TMP/runs" "$L4_RUNS"

median() { awk -v t="$1" -v f="$2" '$1==t{print $f}' "$TMP/runs" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo "# L4 throughput, $PUMP pump, $ROUNDS rounds x $MIB MiB, medians ($(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "# CPU seconds per GB: the proxy, the sending pump, the sink, those three, the whole machine"
echo "# x direct: ratio of the medians; per round: median of each round's ratio to that round's direct run"
printf '%-16s %8s %8s %9s %8s %8s %8s %8s %8s\n' target "MB/s" "x direct" "per round" proxy sender sink all machine
DIRECT=$(median direct 2)
for t in "${ALL[@]}"; do
  mbs=$(median "$t" 2); cpg=$(median "$t" 3); snd=$(median "$t" 4); snk=$(median "$t" 5); all=$(median "$t" 6); mach=$(median "$t" 7)
  [ "$t" = direct ] && cpg="-"
  ratio=$([ -n "$DIRECT" ] && awk -v a="$mbs" -v d="$DIRECT" 'BEGIN{printf "%.2f", a/d}' || echo "-")
  per=$(awk -v t="$t" '{ n[$1]++ } $1=="direct" { d[n[$1]] = $2 } $1==t && d[n[$1]] { print $2 / d[n[$1]] }' "$TMP/runs" \
    | sort -n | awk '{a[NR]=$1} END{ if (NR) printf "%.2f", a[int((NR+1)/2)]; else print "-" }')
  printf '%-16s %8s %8s %9s %8s %8s %8s %8s %8s\n' "$t" "$mbs" "$ratio" "$per" "$cpg" "$snd" "$snk" "$all" "$mach"
done
