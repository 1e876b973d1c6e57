#!/usr/bin/env python3
"""Idle memory per WebSocket connection with permessage-deflate negotiated,
and the compression ratio of a chat-like workload, against ws_echo.

The client is Python `websockets`, which offers permessage-deflate by
default like browsers do. Per run: start ws_echo, warm it up with one
connection, read its RSS, open CONNECTIONS connections (each sends one
1 KiB text message and waits for the echo), let them sit idle, read the
RSS again: growth / connections is the figure. With `--slope-from M`, the
RSS is also read after the first M connections, and the growth between M
and CONNECTIONS divided by their difference is printed too: the cost of
one more idle connection once the server's per-process and per-loop
pools have warmed up. Then one connection sends CHAT short English
messages and counts the bytes on the wire both ways.

    python3 -m venv /tmp/wsvenv && /tmp/wsvenv/bin/pip install websockets
    cargo build --release -p myriad-ws --example ws_echo
    /tmp/wsvenv/bin/python crates/myriad-ws/scripts/deflate-idle.py --runs 3
    /tmp/wsvenv/bin/python crates/myriad-ws/scripts/deflate-idle.py --runs 3 --connections 19000 --slope-from 9500
    /tmp/wsvenv/bin/python crates/myriad-ws/scripts/deflate-idle.py -- --deflate-context-takeover
    /tmp/wsvenv/bin/python crates/myriad-ws/scripts/deflate-idle.py -- --no-deflate

Arguments after `--` go to ws_echo. Prints one line per run and exits 0;
exits 1 if a connection fails or an echo differs.
"""

import argparse
import asyncio
import os
import random
import re
import resource
import subprocess
import sys
import threading
import time

from websockets.asyncio.client import connect

WORDS = (
    "the a to and of I you it is in that we for on are this be at have with "
    "not what so can do will just was but all about if like get know think "
    "meeting tomorrow today tonight lunch coffee later soon ok sure thanks "
    "great sounds good see there how are doing busy call me when free where "
    "project deadline review code merge branch deploy server down again fixed "
    "who is coming weekend plans movie dinner at seven o'clock running late "
    "sorry traffic almost here did you see the message from alice bob carol"
).split()
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank"]


def chat_message(rng):
    n = rng.randint(3, 14)
    text = " ".join(rng.choice(WORDS) for _ in range(n))
    return f"{rng.choice(NAMES)}: {text[0].upper()}{text[1:]}{rng.choice('.?!')}"


def one_kib(rng):
    out = []
    while sum(len(m) + 1 for m in out) < 1024:
        out.append(chat_message(rng))
    return "\n".join(out)[:1024]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(binary, extra):
    p = subprocess.Popen(
        [binary, "127.0.0.1:0", "--threads", "1", *extra],
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in p.stderr:
        m = re.search(r"listening on (\S+)", line)
        if m:
            # keep draining its log so that it never blocks on the pipe
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, m.group(1)
    p.kill()
    raise RuntimeError("ws_echo did not start")


class Counting:
    """Counts the bytes a connection's transport writes and receives."""

    def __init__(self, ws):
        self.sent = 0
        self.received = 0
        transport = ws.transport
        write = transport.write

        def counted_write(data):
            self.sent += len(data)
            return write(data)

        transport.write = counted_write
        received = ws.data_received

        def counted_received(data):
            self.received += len(data)
            return received(data)

        ws.data_received = counted_received


async def hold(uri, n, rng, concurrency):
    conns = []
    sem = asyncio.Semaphore(concurrency)
    msgs = [one_kib(rng) for _ in range(16)]

    async def one(i):
        async with sem:
            ws = await connect(uri, max_size=1 << 20, ping_interval=None, open_timeout=30)
            msg = msgs[i % len(msgs)]
            await ws.send(msg)
            got = await ws.recv()
            if got != msg:
                raise RuntimeError("echo differs")
            conns.append(ws)

    await asyncio.gather(*(one(i) for i in range(n)))
    return conns


async def chat(uri, count, rng):
    ws = await connect(uri, max_size=1 << 20, ping_interval=None)
    ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
    c = Counting(ws)
    payload = 0
    for _ in range(count):
        m = chat_message(rng)
        payload += len(m.encode())
        await ws.send(m)
        if await ws.recv() != m:
            raise RuntimeError("echo differs")
    await ws.close()
    return ext, payload, c.sent, c.received


async def run(args, binary, extra, rng):
    server, addr = start_server(binary, extra)
    uri = f"ws://{addr}/"
    try:
        warm = await hold(uri, 1, rng, 1)
        ext = warm[0].response.headers.get("Sec-WebSocket-Extensions", "(none)")
        await asyncio.sleep(0.5)
        before = rss_kib(server.pid)
        t0 = time.monotonic()
        first = min(args.slope_from or 0, args.connections)
        mid = None
        conns = []
        if first > 0:
            conns = await hold(uri, first, rng, args.concurrency)
            await asyncio.sleep(args.settle)
            mid = rss_kib(server.pid)
        conns += await hold(uri, args.connections - first, rng, args.concurrency)
        await asyncio.sleep(args.settle)
        after = rss_kib(server.pid)
        per_conn = (after - before) * 1024 / args.connections
        slope = None
        if mid is not None and args.connections > first:
            slope = (after - mid) * 1024 / (args.connections - first)
        ext_chat, payload, sent, received = await chat(uri, args.chat, rng)
        for ws in conns + warm:
            await ws.close()
        return {
            "extension": ext,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_conn": per_conn,
            "slope": slope,
            "rss_mid_kib": mid,
            "open_s": time.monotonic() - t0,
            "chat_extension": ext_chat,
            "chat_payload": payload,
            "chat_up": sent,
            "chat_down": received,
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="target/release/examples/ws_echo")
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--chat", type=int, default=1000, help="chat messages for the ratio")
    ap.add_argument("--settle", type=float, default=2.0, help="idle seconds before reading RSS")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--slope-from",
        type=int,
        default=0,
        help="also read RSS after this many connections and print the slope up to --connections",
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        default=20,
        help="connections opening at once (transient buffers of many at once raise the high-water RSS)",
    )
    ap.add_argument("extra", nargs="*", help="ws_echo arguments (after --)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    if not os.path.exists(args.server):
        sys.exit(f"deflate-idle: no {args.server} (cargo build --release -p myriad-ws --example ws_echo)")
    for i in range(args.runs):
        rng = random.Random(args.seed + i)
        r = asyncio.run(run(args, args.server, args.extra, rng))
        print(
            f"run {i + 1}: {args.connections} connections, extension [{r['extension']}]: "
            f"RSS {r['rss_before_kib']} -> {r['rss_after_kib']} KiB, "
            f"{r['bytes_per_conn']:.0f} B per idle connection; "
            + (
                f"from {args.slope_from} to {args.connections}: RSS {r['rss_mid_kib']} -> "
                f"{r['rss_after_kib']} KiB, slope {r['slope']:.0f} B per connection; "
                if r["slope"] is not None
                else ""
            )
            + f"chat {args.chat} messages, {r['chat_payload']} payload bytes each way: "
            f"server->client {r['chat_down']} wire bytes "
            f"(ratio {r['chat_payload'] / r['chat_down']:.2f}), "
            f"client->server {r['chat_up']} (ratio {r['chat_payload'] / r['chat_up']:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
