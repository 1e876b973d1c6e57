#!/usr/bin/env bash
# Publish/subscribe across three nodes behind HAProxy (send-proxy-v2), then
# a node killed (its clients reconnect through HAProxy to the others), once
# through NATS and once through Redis: scripts/cluster-demo exits non-zero
# unless every subscriber got every message of its topic. It installs the
# broker and haproxy (apt-get) when missing and builds the server.
set -euo pipefail
cd "$(dirname "$0")/../.."
for broker in nats redis; do
    scripts/cluster-demo --broker "$broker" --kill-node
done
