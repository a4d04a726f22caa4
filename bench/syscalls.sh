#!/usr/bin/env bash
# Syscalls, context switches and CPU per request of a running proxy under
# wrk, counted with perf's syscall tracepoints (no ptrace: the proxy runs at
# full speed, unlike under strace).
#
#   bench/syscalls.sh NAME PORT PID [wrk options...]
#   bench/syscalls.sh fulcrum 8080 "$(pgrep -f 'fulcrum run')" -H 'Connection: close'
#
# Runs `wrk -t1 -c50 -d4s` (pinned to CPU 1) against http://127.0.0.1:PORT/small
# while perf counts the events of process PID (all its threads), then prints
# one line: requests, user and kernel CPU µs per request (from /proc/PID/stat)
# and each counted event per request. Start the proxy pinned to CPU 0 and
# its origin on CPU 1, as bench/compare.py does, and interleave runs of the
# proxies being compared.
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,14p "$0"; exit 2; }
NAME=$1 PORT=$2 PID=$3
shift 3
command -v perf >/dev/null && command -v wrk >/dev/null || apt-get install -y linux-perf wrk >/dev/null
OUT=$(mktemp -d /tmp/fulcrum-syscalls.XXXXXX)
events=context-switches
for s in accept4 recvfrom sendto writev epoll_wait epoll_ctl close getsockopt futex; do
    events="$events,syscalls:sys_enter_$s"
done
cpu() { awk '{ print $14, $15 }' "/proc/$PID/stat"; }
before=$(cpu)
perf stat -x, -e "$events" -p "$PID" -o "$OUT/perf.txt" -- \
    taskset -c 1 wrk -t1 -c50 -d4s "$@" "http://127.0.0.1:$PORT/small" >"$OUT/wrk.txt" 2>&1
after=$(cpu)
python3 - "$NAME" "$OUT" "$before" "$after" <<'PY'
import os, re, sys
name, out, before, after = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
wrk = open(os.path.join(out, "wrk.txt")).read()
n = int(re.search(r"(\d+) requests in", wrk).group(1))
tick = os.sysconf("SC_CLK_TCK")
user = (int(after[0]) - int(before[0])) / tick * 1e6 / n
kernel = (int(after[1]) - int(before[1])) / tick * 1e6 / n
line = [f"{name} requests={n} user_us={user:.1f} kernel_us={kernel:.1f}"]
for row in open(os.path.join(out, "perf.txt")):
    fields = row.strip().split(",")
    if len(fields) > 2 and fields[0].replace(".", "").isdigit():
        event = fields[2].replace("syscalls:sys_enter_", "")
        line.append(f"{event}={float(fields[0]) / n:.2f}")
print(" ".join(line))
PY
rm -rf "$OUT"
