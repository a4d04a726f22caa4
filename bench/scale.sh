#!/usr/bin/env bash
# Scale checks (issue #8): one cluster of 10 000 backends, and many idle
# keep-alive client connections, on loopback.
#
#   bench/scale.sh [--backends 10000] [--connections 50000] [--reps 3]
#                  [--reloads 5] [--criterion] [--bin PATH]
#
# Prints a table: start-up time, RSS per backend, reload time under load
# (with wrk's error count and slowest request), RSS per idle client
# connection and the latency of new requests while they are open. With
# --criterion it first runs the control-path benches (config parse and
# validation, snapshot build, reload apply and diff, selector table builds
# at 10 000 backends). Method and results: docs/benchmarks.md, "Scale".
#
# Needs python3 and wrk. Raises the open-file limit to its hard limit; the
# connection count is capped by it (hard limit minus 1 000). Ports come from
# port 0; clients bind 127.0.0.2.. before connecting so no single source
# address runs out of ephemeral ports. Everything it starts is stopped at
# the end (bench/scale.py stops its own processes, also on errors), and
# every step has a time limit, so a hang ends the run.
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
criterion=0
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --backends|--connections|--reps|--reloads) args+=("$1" "$2"); shift 2 ;;
    --criterion) criterion=1; shift ;;
    --bin) bin="$2"; shift 2 ;;
    *) echo "scale.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

if [ "$criterion" = 1 ]; then
  nice -n 10 cargo bench -q -p fulcrum-proxy --bench scale -- --warm-up-time 1 --measurement-time 3
  nice -n 10 cargo bench -q -p fulcrum-balance --bench selectors -- 'build/.*/10000' --warm-up-time 1 --measurement-time 3
fi
if [ -z "$bin" ]; then
  nice -n 10 cargo build --release -q -p fulcrum
  bin=target/release/fulcrum
fi
exec timeout --signal=TERM 900 python3 bench/scale.py run --fulcrum "$bin" "${args[@]}"
