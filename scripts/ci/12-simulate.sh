#!/usr/bin/env bash
# The deterministic simulation of the engine's reactor (issue 17): 5,000
# seeds of a simulated backend with injected faults (split receives,
# short sends, resets, reordered and stale completions, late
# cancellations) against the reactor's invariants; `cargo test` runs 300
# per run. A failing seed is printed with the command that replays it.
# First, 2,000 seeds of the WebSocket layer on the simulation
# (crates/myriad-ws/tests/sim.rs: faulted runs must decode as the unfaulted
# ones), and 1,000 seeds of the TLS layer (crates/myriad-tls/tests/sim.rs:
# seeded rustls clients through the real filter, faulted runs must decrypt
# as the unfaulted ones), and 3,000 of the HTTP layer
# (crates/myriad-http/tests/sim.rs: pipelined requests cut down to 1 byte
# answered as in the unfaulted run). Ends with `RESULT seeds=N failures=F`; exits 1 if
# F > 0. About 20 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
MYRIAD_SIM_SEEDS="${MYRIAD_SIM_WS_CI_SEEDS:-2000}" cargo test -q -p myriad-ws --test sim
MYRIAD_SIM_SEEDS="${MYRIAD_SIM_TLS_CI_SEEDS:-1000}" cargo test -q -p myriad-tls --test sim
MYRIAD_SIM_SEEDS="${MYRIAD_SIM_HTTP_CI_SEEDS:-3000}" cargo test -q -p myriad-http --test sim
cargo run -q -p myriad --features sim --example simulate -- --seeds "${MYRIAD_SIM_CI_SEEDS:-5000}"
