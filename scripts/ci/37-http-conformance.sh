#!/usr/bin/env bash
# HTTP/1.1 conformance of the `http_echo` example (myriad-http): builds it,
# starts it on a free loopback port, once per backend (auto, which is
# io_uring where the kernel allows it, and epoll), and runs
# crates/myriad-http/scripts/conformance.py against it: request-line and
# header strictness, framing and smuggling cases, chunked grammar, limits,
# echo semantics, HEAD, HTTP/1.0, pipelining (about 180 raw-TCP cases from
# RFC 9110 / RFC 9112). --strict: the SHOULD cases where the server takes
# the strict choice fail the run too.
#
#   scripts/ci/37-http-conformance.sh
#   MYRIAD_PROFILE=dev MYRIAD_PREBUILT=1 scripts/ci/37-http-conformance.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

PROFILE=${MYRIAD_PROFILE:-release}
case "$PROFILE" in dev) OUTDIR=target/debug ;; *) OUTDIR=target/$PROFILE ;; esac
[ -n "${MYRIAD_PREBUILT:-}" ] || cargo build --profile "$PROFILE" -p myriad-http --example http_echo
ECHO=$OUTDIR/examples/http_echo
[ -x "$ECHO" ] || { echo "http-conformance: $ECHO missing"; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
LOG=$(mktemp)
pid=
stop() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}
cleanup() { stop; rm -f "$LOG"; }
trap cleanup EXIT

for backend in auto epoll; do
    PORT=$(free_port)
    "$ECHO" "127.0.0.1:$PORT" --threads 1 --backend "$backend" >"$LOG" 2>&1 &
    pid=$!
    # Bounded wait for the listener: 100 tries of 0.1 s.
    up=0
    for _ in $(seq 1 100); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), timeout=1).close()" 2>/dev/null; then
            up=1
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$up" -ne 1 ]; then
        cat "$LOG"
        echo "http-conformance: http_echo ($backend) did not start"
        exit 1
    fi
    echo "http-conformance: http_echo on 127.0.0.1:$PORT, backend $backend"
    rc=0
    timeout 600 python3 crates/myriad-http/scripts/conformance.py "127.0.0.1:$PORT" --strict || rc=$?
    stop
    if [ "$rc" -ne 0 ]; then
        cat "$LOG"
        echo "http-conformance: failed ($backend)"
        exit 1
    fi
done
echo "http-conformance: passed"
