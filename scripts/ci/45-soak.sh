#!/usr/bin/env bash
# Two minutes of scripts/soak: mixed TCP, WebSocket (with and without
# deflate), TLS and WSS load with verified echoes, chaos clients (RST
# mid-message, slow and stopped readers, garbage, handshake stalls,
# SIGKILLed load processes), and the server's RSS, slots, timers and queued
# bytes checked against the script's bounds. About 2m15s; the timeout only
# bounds a hang (the script's trap stops what it started).
set -euo pipefail
cd "$(dirname "$0")/../.."
timeout -k 10 170 scripts/soak --minutes 2
