"""Runs the Autobahn TestSuite fuzzing-client cases (via kosoku) against a
WebSocket server and fails on any FAILED, UNIMPLEMENTED or ERROR verdict.

usage: autobahn.py URL CASES... [--parallelism N] [--json FILE]
"""

import argparse
import asyncio
import collections
import json
import os
import sys

from kosoku import FailureError, run_fuzzingclient

ALLOWED = {"OK", "NON-STRICT", "INFORMATIONAL"}


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--exclude", action="append", default=None)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    failure = None
    try:
        results = await run_fuzzingclient(
            args.url, args.cases, args.exclude, concurrency=args.parallelism
        )
    except FailureError as e:
        # kosoku raises when a case did not pass; it carries those cases
        failure = e
        results = e.results

    counts = collections.Counter()
    close_counts = collections.Counter()
    bad = []
    rows = []
    for r in results:
        b = r.behavior.value
        bc = r.behavior_close.value
        counts[b] += 1
        close_counts[bc] += 1
        rows.append({"case": r.case_id, "behavior": b, "behavior_close": bc,
                     "duration_ms": r.duration})
        if b not in ALLOWED or bc not in ALLOWED:
            bad.append((r.case_id, b, bc, r.description.strip().splitlines()[0:1]))

    print(f"autobahn: {len(results)} cases reported")
    print("  behavior:       " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("  behavior_close: " + ", ".join(f"{k} {v}" for k, v in sorted(close_counts.items())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if bad:
        print("autobahn: cases not OK / NON-STRICT / INFORMATIONAL:")
        for case, b, bc, desc in bad:
            print(f"  {case}: {b} (close: {bc}) {desc[0] if desc else ''}")
        return 1
    if failure is not None:
        print(f"autobahn: kosoku reported a failure without failing cases: {failure}")
        return 1
    if not results:
        print("autobahn: no case ran")
        return 1
    print("autobahn: passed")
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    # kosoku 0.1.0 can abort while the interpreter tears down: skip that
    os._exit(code)
