#!/usr/bin/env bash
# A/B of two builds of Myriad's echo example on the benchmark harness
# (bench's `bench-compare`): both pinned to CPU 0, driven by `loadgen` on
# CPU 1, over pp64, pipe64 and pp512, for ROUNDS interleaved rounds of 3 s
# after 1 s of warm-up. Prints every run (messages/s, the server's CPU
# microseconds per message from /proc/PID/stat over the measured window,
# CPU use of server, load generator and anything else), then per scenario
# the median run, the spread over the rounds and the new build's ratios to
# the base (medians of the per-round paired ratios), and RESULT lines.
# Extra arguments go to bench-compare (e.g. --scenarios pipe64 --repeat 5,
# --wait-quiet 0).
#
#   cargo build --release -p myriad --example echo -p myriad-bench
#   cp target/release/examples/echo /tmp/echo-new   # and a build of the base as /tmp/echo-base
#   scripts/ab-echo.sh /tmp/echo-base /tmp/echo-new [ROUNDS] [bench-compare flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?base echo binary}
NEW=${2:?new echo binary}
ROUNDS=${3:-3}
shift 3 || shift $#
COMPARE=${BENCH_COMPARE:-target/release/bench-compare}
[ -x "$COMPARE" ] || { echo "missing $COMPARE: cargo build --release -p myriad-bench" >&2; exit 2; }
# Later flags override earlier ones, except --scenarios (a list): given, it replaces ours.
SCENARIOS=pp64,pipe64,pp512
for a in "$@"; do case $a in --scenarios | --scenarios=*) SCENARIOS= ;; esac; done
exec "$COMPARE" --variant "base=$BASE {addr} --threads 1" --variant "new=$NEW {addr} --threads 1" \
    ${SCENARIOS:+--scenarios "$SCENARIOS"} --repeat "$ROUNDS" --duration 3 --warmup 1 "$@"
