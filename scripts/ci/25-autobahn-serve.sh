#!/usr/bin/env bash
# Autobahn against `myriad serve --config` itself, a ws service and a wss
# service behind a TLS-originating HAProxy: the short form of
# scripts/autobahn-serve (which runs every case by default), on a subset of
# cases that touches each group (framing, pings, fragmentation, UTF-8,
# close, large messages, and permessage-deflate), both services side by
# side. AUTOBAHN_SERVE_CASES overrides the subset.
set -euo pipefail
cd "$(dirname "$0")/../.."
export AUTOBAHN_CASES=${AUTOBAHN_SERVE_CASES:-"1.* 2.* 5.* 6.* 7.* 9.1.* 12.1.* 13.1.*"}
exec scripts/autobahn-serve
