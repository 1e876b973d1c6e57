#!/usr/bin/env bash
# The deterministic simulation of the engine's reactor (issue 17): 5,000
# seeds of a simulated backend with injected faults (split receives,
# short sends, resets, reordered and stale completions, late
# cancellations) against the reactor's invariants; `cargo test` runs 300
# per run. A failing seed is printed with the command that replays it.
# Ends with `RESULT seeds=N failures=F`; exits 1 if F > 0. About 10 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo run -q -p myriad --features sim --example simulate -- --seeds "${MYRIAD_SIM_CI_SEEDS:-5000}"
