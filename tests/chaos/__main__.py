"""`python -m tests.chaos --rounds N [--seed S]`: the long chaos mode; prints the report."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.harness import run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--db-url", help="a PostgreSQL store (an empty database) instead of the SQLite file"
    )
    args = parser.parse_args()
    started = time.monotonic()
    report = run_chaos(
        Path(tempfile.mkdtemp(prefix="tui-agent-chaos-")),
        args.rounds,
        args.seed,
        db_url=args.db_url,
    )
    data = report.as_dict()
    data["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(data, indent=2))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
