#!/usr/bin/env bash
# Publish/subscribe across three nodes behind HAProxy (send-proxy-v2), then
# a node killed (its clients reconnect through HAProxy to the others), once
# through NATS and once through Redis: scripts/cluster-demo exits non-zero
# unless every subscriber got every message of its topic. It installs the
# broker and haproxy (apt-get) when missing. With MYRIAD_PREBUILT (as .ci/run
# sets) it runs the server binary already built for MYRIAD_PROFILE: its own
# `cargo build -p myriad-server` would unify features differently from the
# workspace build and rebuild crates (minutes of CI on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${MYRIAD_PROFILE:-release}
case "$PROFILE" in dev) OUTDIR=target/debug ;; *) OUTDIR=target/$PROFILE ;; esac
if [ -n "${MYRIAD_PREBUILT:-}" ]; then
    export MYRIAD_BIN=${MYRIAD_BIN:-$OUTDIR/myriad}
fi
for broker in nats redis; do
    scripts/cluster-demo --broker "$broker" --kill-node
done
