#!/usr/bin/env bash
# Every fuzz target for a bounded time (FUZZ_SECONDS, default 10 s each)
# from the committed seed corpora: the short form of scripts/fuzz, whose
# default (600 s per target) is the long one. Needs cargo-fuzz, which
# .ci/run installs.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec scripts/fuzz "${FUZZ_SECONDS:-10}"
