"""Build a large, reproducible database fast: N runs and M steps through raw SQL in the
schema the migrations create. `python -m bench.generate --runs 100000 --steps 1000000 DIR`."""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import time
from pathlib import Path

from tui_agent.store.db import open_database

STATUSES = ["completed"] * 14 + [
    "failed",
    "cancelled",
    "paused",
    "waiting_approval",
    "needs_attention",
    "running",
]
GOALS = [
    "Summarise the docs",
    "Fix the failing test",
    "Upgrade the dependencies",
    "Write release notes",
    "Find slow queries",
    "Tidy the README",
    "Add type hints",
]


def generate(path: Path, runs: int, steps: int, seed: int = 7) -> Path:
    rng = random.Random(seed)
    open_database(path).dispose()  # the real schema, via the migrations
    budget = json.dumps({"max_steps": 50, "max_llm_tokens": 200000, "max_wall_time_s": 3600})
    t0 = 1_700_000_000.0
    per_run = max(1, steps // runs) if runs else 0
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        run_rows = []
        step_rows = []
        for i in range(runs):
            run_id = f"{rng.getrandbits(128):032x}"
            status = rng.choice(STATUSES)
            created = t0 + i * 3.0
            n = per_run
            run_rows.append(
                (
                    run_id,
                    status,
                    f"{rng.choice(GOALS)} #{i}",
                    "/work/p",
                    "demo",
                    budget,
                    "{}",
                    "{}",
                    n,
                    n * 150,
                    n * 0.5,
                    0,
                    0,
                    0,
                    n + 1,
                    n,
                    created,
                    created + n,
                )
            )
            for seq in range(1, n + 1):
                kind = "llm" if seq % 2 else "tool"
                step_rows.append(
                    (
                        run_id,
                        seq,
                        kind,
                        "done" if kind == "llm" else "finished",
                        None if kind == "llm" else "read_file",
                        None if kind == "llm" else '{"path": "a.txt"}',
                        None if kind == "llm" else "file contents " * 4,
                        '{"content": "thinking"}' if kind == "llm" else "{}",
                        150 if kind == "llm" else 0,
                        created + seq,
                    )
                )
            if len(step_rows) > 200_000:
                _flush(conn, run_rows, step_rows)
        _flush(conn, run_rows, step_rows)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _flush(conn: sqlite3.Connection, run_rows: list[tuple], step_rows: list[tuple]) -> None:
    conn.executemany(
        "INSERT INTO runs (id, status, goal, workspace, model, budget_json, policy_json, "
        "state_json, usage_steps, usage_tokens, usage_wall_s, cancel_requested, retry_attempt, "
        "retry_max, next_seq, revision, created_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        run_rows,
    )
    conn.executemany(
        "INSERT INTO steps (run_id, seq, kind, status, tool, arguments, result, payload_json, "
        "tokens, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        step_rows,
    )
    conn.commit()
    run_rows.clear()
    step_rows.clear()


def cached(runs: int, steps: int) -> Path:
    """The generated database, built once per size and reused by later benchmark runs."""
    from bench.common import DATA

    DATA.mkdir(parents=True, exist_ok=True)
    from tui_agent.store.migrations import LATEST_VERSION

    path = DATA / f"history-{runs}-{steps}-v{LATEST_VERSION}" / "tui-agent.db"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        start = time.perf_counter()
        tmp = path.with_suffix(".partial")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        generate(tmp, runs, steps)
        tmp.rename(path)
        print(
            f"# generated {runs} runs / {steps} steps in {time.perf_counter() - start:.1f}s",
            flush=True,
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=1_000_000)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    generate(args.dir / "tui-agent.db", args.runs, args.steps)
    print(f"{args.runs} runs, {args.steps} steps in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
