#!/usr/bin/env bash
# A/B of two builds of Myriad's TLS path, with tokio-rustls alongside: each
# server pinned to CPU 0 in turn (the base `tls_echo` driven by the base
# `tls-load`, the new one and tokio-rustls's `tls-tokio` by the new
# `tls-load`), the load on CPU 1, for ROUNDS interleaved rounds of 3 s.
# Prints ops/s, the server's CPU microseconds per operation (utime+stime
# from /proc/PID/stat over the measured window), and how busy each side was.
# MODE is tls-load's: handshake, resume or bulk (add `--connections 100`).
#
#   cargo build --release -p myriad-bench --bins -p myriad-tls --examples
#   mkdir /tmp/tls-base   # and copy tls_echo + tls-load of the base build there
#   scripts/ab-tls.sh /tmp/tls-base bulk 4 --connections 100
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/window.sh
. scripts/lib/window.sh
BASE=${1:?directory with the base build of tls_echo and tls-load}
MODE=${2:?handshake, resume or bulk}
ROUNDS=${3:-3}
shift 3 || shift $#
EXTRA=("$@")
T=target/release
for b in "$BASE/tls_echo" "$BASE/tls-load" "$T/examples/tls_echo" "$T/tls-load" "$T/tls-tokio"; do
    [ -x "$b" ] || { echo "missing $b (see the usage at the top)" >&2; exit 2; }
done
PKI=$(mktemp -d)
OUT=$(mktemp)
trap 'rm -rf "$PKI" "$OUT"' EXIT
# An ECDSA P-256 CA and a server certificate for localhost, as bench-tls uses.
(
    cd "$PKI"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -subj /CN=ab-tls-ca -days 2 -out ca.pem
    openssl ecparam -name prime256v1 -genkey -noout -out server.key
    openssl req -new -key server.key -subj /CN=localhost -out s.csr
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext
    openssl x509 -req -in s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ext -out server.pem
) >/dev/null 2>&1
PORT=19500
run() { # name load-binary server-command...
    local name=$1 load=$2
    shift 2
    PORT=$((PORT + 1))
    local cmd=("${@//@PORT@/$PORT}")
    taskset -c 0 "${cmd[@]}" >/dev/null 2>&1 &
    local sp=$! ticks
    sleep 0.5
    : > "$OUT"
    taskset -c 1 "$load" --addr "127.0.0.1:$PORT" --ca "$PKI/ca.pem" --mode "$MODE" --no-verify \
        --duration 3 --warmup 1 "${EXTRA[@]}" > "$OUT" 2>&1 &
    local lp=$!
    ticks=$(window_ticks $sp "$OUT" 1500)
    wait $lp || true
    kill $sp; wait $sp 2>/dev/null || true
    local ops ccpu
    ops=$(grep -o "ops_per_sec=[0-9.]*" "$OUT" | sed -n 1p | cut -d= -f2)
    ccpu=$(grep -o "client_cpu=[0-9.]*" "$OUT" | sed -n 1p | cut -d= -f2)
    awk -v n="$name" -v o="${ops:-0}" -v d="$ticks" -v t="$(getconf CLK_TCK)" -v c="${ccpu:-0}" \
        'BEGIN { printf "%-6s %9.0f ops/s  %8s us/op server  server busy %3.0f%%  client busy %3.0f%%\n",
                 n, o, (o > 0 ? sprintf("%.2f", d / t * 1e6 / (o * 3)) : "nan"), d / t / 3 * 100, c * 100 }'
}
for _ in $(seq "$ROUNDS"); do
    run base "$BASE/tls-load" "$BASE/tls_echo" 127.0.0.1:@PORT@ --cert "$PKI/server.pem" --key "$PKI/server.key" --threads 1
    run new "$T/tls-load" "$T/examples/tls_echo" 127.0.0.1:@PORT@ --cert "$PKI/server.pem" --key "$PKI/server.key" --threads 1
    run tokio "$T/tls-load" "$T/tls-tokio" --addr 127.0.0.1:@PORT@ --cert "$PKI/server.pem" --key "$PKI/server.key"
done
