#!/usr/bin/env bash
# Fulcrum vs HAProxy vs NGINX on this machine, in one run, on loopback.
#
#   bench/compare.sh [--reps 3] [--duration 5] [--scenarios small,16k,close,h2tls,tlsclose]
#
# Installs what it needs (haproxy, nginx, wrk, h2load) with apt when missing,
# builds Fulcrum in release mode, then runs bench/compare.py. Every process
# it starts is stopped at the end. See docs/benchmarks.md for the method.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in haproxy:haproxy nginx:nginx wrk:wrk h2load:nghttp2-client openssl:openssl taskset:util-linux; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --release -q -p fulcrum
exec python3 bench/compare.py --fulcrum target/release/fulcrum "$@"
