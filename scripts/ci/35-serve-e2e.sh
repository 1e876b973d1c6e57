#!/usr/bin/env bash
# End-to-end: headless Debian Chromium against `myriad serve --config` with
# an http service (a static page that opens a WebSocket on a second path
# of the same port, the chat demo page with names and member counts) and
# the live dashboard on the metrics listener (scripts/ci/serve-e2e.mjs).
# Installs chromium (apt) and playwright-core (npm, under target/e2e) if
# missing, like 30-chromium-e2e.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=target/e2e
mkdir -p "$WORK"
if [ ! -x /usr/bin/chromium ]; then
    echo "serve-e2e: installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d "$WORK/node_modules/playwright-core" ]; then
    echo "serve-e2e: installing playwright-core"
    (cd "$WORK" && { [ -f package.json ] || npm init -y >/dev/null; } \
        && npm install --silent --no-audit --no-fund playwright-core@1)
fi
cp scripts/ci/serve-e2e.mjs "$WORK/serve-e2e.mjs"

PROFILE=${MYRIAD_PROFILE:-release}
case "$PROFILE" in dev) OUTDIR=target/debug ;; *) OUTDIR=target/$PROFILE ;; esac
[ -n "${MYRIAD_PREBUILT:-}" ] || cargo build --profile "$PROFILE" -p myriad-server

RUN=$(mktemp -d)
mkdir -p "$RUN/www"
cat >"$RUN/www/index.html" <<'HTML'
<!doctype html>
<html><head><meta charset="utf-8"><title>static + ws</title></head>
<body><p id="out">waiting</p>
<script>
const ws = new WebSocket("ws://" + location.host + "/echo");
ws.onopen = () => ws.send("hello over /echo");
ws.onmessage = (e) => { document.getElementById("out").textContent = "echo: " + e.data; };
</script></body></html>
HTML
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
MPORT=$(free_port)
cat >"$RUN/myriad.toml" <<TOML
io_threads = 2
[log]
summary_secs = 0
[metrics]
listen = "127.0.0.1:$MPORT"
[[service]]
name = "web"
listen = "127.0.0.1:$PORT"
stack = "http"
[[service.route]]
path = "/static/*"
static = "www"
[[service.route]]
path = "/echo"
ws = "ws-echo"
[[service.route]]
path = "/chat"
ws = "ws-chat"
TOML
"$OUTDIR/myriad" serve --config "$RUN/myriad.toml" >"$RUN/serve.log" 2>&1 &
pid=$!
profile=$(mktemp -d)
cleanup() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$profile" "$RUN"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$MPORT/readyz', timeout=1)" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$RUN/serve.log"; echo "serve-e2e: myriad died"; exit 1; }
    sleep 0.1
done
echo "serve-e2e: myriad serve on 127.0.0.1:$PORT, metrics on 127.0.0.1:$MPORT"
rc=0
timeout 400 node "$WORK/serve-e2e.mjs" "http://127.0.0.1:$PORT" "http://127.0.0.1:$MPORT" "$profile" || rc=$?
[ "$rc" -eq 0 ] || { cat "$RUN/serve.log"; echo "serve-e2e: failed"; exit 1; }
echo "serve-e2e: passed"
