#!/usr/bin/env bash
# The quality bar of issue 3: on one core, myriad-load must generate at least
# 1.3x the messages per second that a tokio current_thread echo server can
# serve on the other core.
#
# Starts bench's `echo-tokio --mode current` pinned to CPU 0, runs
# myriad-load pinned to CPU 1 REPEAT times, and prints per run: messages/s,
# the server's CPU use and CPU per message, myriad-load's CPU use and CPU per
# message, and the ratio of the two capacities
#   (1 / load CPU per message) / (1 / server CPU per message).
# Build first: cargo build --release -p myriad-load -p myriad-bench
# (LOAD=path/to/myriad-load compares another build of it.)
#
#   crates/myriad-load/scripts/quality-bar.sh [REPEAT] [myriad-load args...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
LOAD=${LOAD:-target/release/myriad-load}
TOKIO=target/release/echo-tokio
PORT=${PORT:-19500}
REPEAT=${1:-3}
shift || true
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(-c 100 -w 16 -s 64 -d 5s --warmup 1s)
for b in "$LOAD" "$TOKIO"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release -p myriad-load -p myriad-bench" >&2; exit 2; }
done
taskset -c 0 "$TOKIO" --addr 127.0.0.1:$PORT --mode current 2>/dev/null &
SPID=$!
trap 'kill $SPID 2>/dev/null || true' EXIT
sleep 0.5
TCK=$(getconf CLK_TCK)
cpu() { awk -v t="$TCK" '{printf "%.3f", ($14+$15)/t}' /proc/$1/stat; }
# CPU seconds used by everything on the machine (all CPUs).
busy() { awk -v t="$TCK" '/^cpu /{printf "%.3f", ($2+$3+$4+$7+$8+$9)/t}' /proc/stat; }
# Wait (at most QUIET_WAIT seconds) until the machine is idle: under 10% of
# one CPU used over a second.
quiet() {
    local i b0 b1
    for i in $(seq 1 "${QUIET_WAIT:-60}"); do
        b0=$(busy); sleep 1; b1=$(busy)
        python3 -c "import sys; sys.exit(0 if $b1-$b0 < 0.10 else 1)" && return 0
    done
    echo "warning: machine not quiet" >&2
}
OUT=$(mktemp -d)
for i in $(seq 1 "$REPEAT"); do
    quiet
    s0=$(cpu $SPID); b0=$(busy); t0=$(date +%s.%N)
    taskset -c 1 "$LOAD" tcp://127.0.0.1:$PORT "${ARGS[@]}" -t 1 -q --json "$OUT/$i.json" >/dev/null
    s1=$(cpu $SPID); b1=$(busy); t1=$(date +%s.%N)
    python3 - "$OUT/$i.json" "$s0" "$s1" "$t0" "$t1" "$b0" "$b1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
s0, s1, t0, t1, b0, b1 = map(float, sys.argv[2:8])
scpu = s1 - s0
srv_us = scpu * 1e6 / max(j["messages_total"], 1)
load_us = j["cpu_us_per_message"]
load_util = j["cpu_secs"] / max(j["duration_secs"], 1e-9)
print(f"msgs/s {j['messages_per_sec']:>10.0f}  server cpu {scpu/(t1-t0)*100:5.1f}% {srv_us:6.3f} us/msg"
      f"  load cpu {load_util*100:5.1f}% {load_us:6.3f} us/msg  capacity ratio {srv_us/load_us if load_us else 0:5.2f}"
      f"  p99 {j['latency_us']['p99']} us  errors {j['errors_total']}"
      f"  other {max(0.0, (b1-b0) - scpu - j['cpu_secs'] * (t1-t0) / max(j['duration_secs'], 1e-9))/(t1-t0)*100:4.0f}%")
PY
done
rm -rf "$OUT"
