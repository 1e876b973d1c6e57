#!/usr/bin/env bash
# End-to-end: headless Debian Chromium, driven by playwright-core, opens two
# pages of the ws_chat example and checks that a message typed in one
# arrives in the other (both ways). Run from the repository root:
#
#   scripts/ci/30-chromium-e2e.sh
#
# Installs Debian's chromium (apt-get, needs root) if /usr/bin/chromium is
# missing, and playwright-core from npm under target/e2e.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Port 0: the kernel picks a free one.
PORT=${CHAT_PORT:-0}
WORK=target/e2e
mkdir -p "$WORK"

if [ ! -x /usr/bin/chromium ]; then
    echo "e2e: installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version

if [ ! -d "$WORK/node_modules/playwright-core" ]; then
    echo "e2e: installing playwright-core"
    (cd "$WORK" && { [ -f package.json ] || npm init -y >/dev/null; } \
        && npm install --silent --no-audit --no-fund playwright-core@1)
fi
cp scripts/ci/chat-e2e.mjs "$WORK/chat-e2e.mjs"

echo "e2e: building ws_chat"
PROFILE=${MYRIAD_PROFILE:-release}
case "$PROFILE" in dev) OUTDIR=target/debug ;; *) OUTDIR=target/$PROFILE ;; esac
[ -n "${MYRIAD_PREBUILT:-}" ] || cargo build --profile "$PROFILE" -p myriad-ws --example ws_chat
CHAT=$OUTDIR/examples/ws_chat

"$CHAT" "127.0.0.1:$PORT" --threads 2 >"$WORK/ws_chat.log" 2>&1 &
pid=$!
profile=$(mktemp -d)
cleanup() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$profile"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
    grep -q "listening on" "$WORK/ws_chat.log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/ws_chat.log"; echo "ws_chat died"; exit 1; }
    sleep 0.1
done

grep -q "listening on" "$WORK/ws_chat.log" || { cat "$WORK/ws_chat.log"; echo "ws_chat did not start"; exit 1; }
ADDR=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$WORK/ws_chat.log" | sed -n 1p)
echo "e2e: ws_chat on $ADDR"

rc=0
timeout 400 node "$WORK/chat-e2e.mjs" "http://$ADDR/" "$profile" || rc=$?

trap - EXIT
kill -TERM "$pid"
src=0
wait "$pid" || src=$?
rm -rf "$profile"
tail -n 2 "$WORK/ws_chat.log"
[ "$rc" -eq 0 ] || { cat "$WORK/ws_chat.log"; echo "chromium e2e failed"; exit 1; }
[ "$src" -eq 0 ] || { echo "ws_chat exited $src after SIGTERM"; exit 1; }
echo "e2e: passed"
