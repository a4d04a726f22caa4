#!/usr/bin/env bash
# L4 throughput on loopback: direct, through Fulcrum (tcp listener, splice),
# through HAProxy `mode tcp` (default, and with `option splice-auto`).
#
#   bench/l4.sh [ROUNDS=5] [MIB_PER_RUN=1024]
#
# One sink (bench/l4_pump.py) behind everything; each round runs every
# target once, interleaved, so drift hits all alike. Reports the median
# MB/s and the proxy's CPU seconds per GB (utime+stime from /proc/PID/stat).
# Both proxies run one worker thread. Needs python3 and haproxy
# (apt-get install haproxy); Fulcrum is built in release mode.
set -euo pipefail
ROUNDS=${1:-5}
MIB=${2:-1024}
BYTES=$((MIB * 1024 * 1024))
cd "$(dirname "$0")/.."
command -v haproxy >/dev/null || { echo "haproxy missing: apt-get install haproxy" >&2; exit 1; }
cargo build --release -q -p fulcrum
BIN=target/release/fulcrum
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

SINK=$(port); FUL=$(port); HAP=$(port); HAPS=$(port)
python3 bench/l4_pump.py sink "$SINK" & PIDS+=($!)
cat > "$TMP/fulcrum.toml" <<TOML
[runtime]
worker_threads = 1
[[listener]]
name = "l4"
bind = "127.0.0.1:$FUL"
protocol = "tcp"
cluster = "sink"
[cluster.sink]
backends = [{ address = "127.0.0.1:$SINK" }]
TOML
FULCRUM_LOG=warn "$BIN" run -c "$TMP/fulcrum.toml" 2>"$TMP/fulcrum.log" & FPID=$!; PIDS+=($FPID)
haproxy_cfg() { # $1 port, $2 extra option
cat <<CFG
global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    $2
frontend f
    bind 127.0.0.1:$1
    default_backend b
backend b
    server s 127.0.0.1:$SINK
CFG
}
haproxy_cfg "$HAP" "" > "$TMP/h.cfg"
haproxy_cfg "$HAPS" "option splice-auto" > "$TMP/hs.cfg"
haproxy -f "$TMP/h.cfg" -db >"$TMP/h.log" 2>&1 & HPID=$!; PIDS+=($HPID)
haproxy -f "$TMP/hs.cfg" -db >"$TMP/hs.log" 2>&1 & HSPID=$!; PIDS+=($HSPID)
for p in $SINK $FUL $HAP $HAPS; do wait_port "$p"; done

TCK=$(getconf CLK_TCK)
cpu() { [ "$1" = 0 ] && { echo 0; return; }; awk '{print $14+$15}' "/proc/$1/stat"; }
declare -A ADDR=([direct]=$SINK [fulcrum]=$FUL [haproxy]=$HAP [haproxy-splice]=$HAPS)
declare -A PID=([direct]=0 [fulcrum]=$FPID [haproxy]=$HPID [haproxy-splice]=$HSPID)
TARGETS=(direct fulcrum haproxy haproxy-splice)
for r in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    c0=$(cpu "${PID[$t]}")
    read -r b s < <(python3 bench/l4_pump.py send "127.0.0.1:${ADDR[$t]}" "$BYTES")
    c1=$(cpu "${PID[$t]}")
    awk -v t="$t" -v b="$b" -v s="$s" -v c=$((c1 - c0)) -v k="$TCK" \
      'BEGIN { printf "%s %.1f %.3f\n", t, b / s / 1e6, (c / k) / (b / 1e9) }' >> "$TMP/runs"
  done
done

echo "# L4 throughput, $ROUNDS rounds x $MIB MiB, medians ($(nproc) cores, $(uname -r))"
printf '%-16s %10s %14s %10s\n' target "MB/s" "CPU s/GB" "x direct"
DIRECT=$(awk '$1=="direct"{print $2}' "$TMP/runs" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
for t in "${TARGETS[@]}"; do
  mbs=$(awk -v t="$t" '$1==t{print $2}' "$TMP/runs" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  cpg=$(awk -v t="$t" '$1==t{print $3}' "$TMP/runs" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  [ "$t" = direct ] && cpg="-"
  printf '%-16s %10s %14s %10.2f\n' "$t" "$mbs" "$cpg" "$(awk -v a="$mbs" -v d="$DIRECT" 'BEGIN{print a/d}')"
done
