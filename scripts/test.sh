#!/usr/bin/env bash
# The test suite, runnable on a fresh machine: installs the real peers the
# end-to-end tests drive (curl, openssl, promtool, chromium, redis-server,
# testssl.sh) with apt when they are missing, then runs every test of the
# workspace.
#
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(curl openssl prometheus chromium chromium-driver redis-server testssl.sh)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "test: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test: missing ${missing[*]}; tests that need them are skipped or fail (install them, or run as root)" >&2
  fi
fi

exec cargo test --workspace "$@"
