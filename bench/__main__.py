"""`python -m bench [--quick] [NAME ...]`: every benchmark, one JSON object per line."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback

BENCHMARKS = {
    "step_overhead": "bench.step_overhead",
    "history_query": "bench.history_query",
    "tui_cold_start": "bench.cold_start",
    "commit_to_screen": "bench.commit_to_screen",
    "first_token": "bench.first_token",
    "resume": "bench.resume",
    "concurrency": "bench.concurrency",
    "cli_run": "bench.cli_run",
    "http_start": "bench.http_start",
    "sse_fanout": "bench.sse_fanout",
    "prune": "bench.prune",
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller samples (< 2 minutes)")
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    started = time.perf_counter()
    failed = 0
    for name in names:
        try:
            importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed += 1
            traceback.print_exc(file=sys.stderr)
            print(json.dumps({"name": name, "error": str(exc)}), flush=True)
    print(
        f"# {len(names)} benchmark groups in {time.perf_counter() - started:.1f}s", file=sys.stderr
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
