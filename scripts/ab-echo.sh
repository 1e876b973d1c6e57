#!/usr/bin/env bash
# A/B of two builds of Myriad's echo example: each pinned to CPU 0 in turn,
# driven by bench's `loadgen` on CPU 1, over pp64, pipe64 and pp512, for
# ROUNDS interleaved rounds of 3 s. Prints messages/s and the server's CPU
# microseconds per message (utime+stime from /proc/PID/stat over the
# measured window).
#
#   cargo build --release -p myriad --example echo -p myriad-bench
#   cp target/release/examples/echo /tmp/echo-new   # and a build of the base as /tmp/echo-base
#   scripts/ab-echo.sh /tmp/echo-base /tmp/echo-new [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/window.sh
. scripts/lib/window.sh
BASE=${1:?base echo binary}
NEW=${2:?new echo binary}
ROUNDS=${3:-3}
LOADGEN=target/release/loadgen
[ -x "$LOADGEN" ] || { echo "missing $LOADGEN: cargo build --release -p myriad-bench" >&2; exit 2; }
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
run() { # bin conns size window
    taskset -c 0 "$1" 127.0.0.1:19777 --threads 1 >/dev/null 2>&1 &
    local sp=$! ticks msgs
    sleep 0.4
    : > "$OUT"
    "$LOADGEN" --addr 127.0.0.1:19777 --connections "$2" --size "$3" --window "$4" \
        --warmup 1 --duration 3 --cpu 1 > "$OUT" 2>&1 &
    local lp=$!
    ticks=$(window_ticks $sp "$OUT")
    wait $lp || true
    msgs=$(grep -o "msgs_per_sec=[0-9.]*" "$OUT" | head -1 | cut -d= -f2)
    kill $sp; wait $sp 2>/dev/null || true
    awk -v n="$1" -v c="$2" -v s="$3" -v w="$4" -v d="$ticks" -v m="${msgs:-0}" -v t="$(getconf CLK_TCK)" \
        'BEGIN { printf "%-16s c=%-5s s=%-4s w=%-3s msgs/s=%-10.0f us/msg=%s\n", n, c, s, w, m, (m > 0 ? sprintf("%.3f", d / t * 1e6 / (m * 3)) : "nan") }'
}
for _ in $(seq "$ROUNDS"); do
    for sc in "100 64 1" "100 64 16" "1000 512 1"; do
        for b in "$BASE" "$NEW"; do run "$b" $sc; done
    done
done
