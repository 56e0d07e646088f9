"""One durable step (record + checkpoint in one transaction) against a raw sqlite3
INSERT+COMMIT in WAL mode with synchronous=FULL, in the same process and directory."""

from __future__ import annotations

import sqlite3
import time

from bench.common import emit, scratch
from tui_agent.domain.models import Budget, Policy, RunSpec
from tui_agent.store.journal import StepJournal
from tui_agent.store.run_store import open_store

PAYLOAD = {
    "content": "I will read the file next.",
    "tool_calls": [{"id": "c1", "name": "read_file", "arguments": '{"path": "README.md"}'}],
    "usage": {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940},
}


def floor_per_commit(n: int) -> float:
    path = scratch("floor") / "raw.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE t (run_id TEXT, seq INTEGER, payload TEXT, PRIMARY KEY (run_id, seq))"
    )
    body = str(PAYLOAD)
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", ("r", i, body))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed / n


def step_per_commit(n: int) -> float:
    store = open_store(scratch("steps") / "tui-agent.db")
    run, _ = store.create_run(
        RunSpec(
            goal="bench",
            workspace="/tmp",
            model="demo",
            budget=Budget(max_steps=10**9),
            policy=Policy(),
        )
    )
    journal = StepJournal(store.db, "bench", 1)
    journal.claim(1, 3600)
    for _ in range(20):  # warm the statement caches and the pool
        journal.record_llm_reply(run.id, PAYLOAD, 940, 0.0)
    start = time.perf_counter()
    for _ in range(n):
        journal.record_llm_reply(run.id, PAYLOAD, 940, 0.0)
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed / n


def run(quick: bool) -> None:
    n = 500 if quick else 3000
    # Interleave to share the machine's noise fairly; keep the best of three of each.
    floors, steps = [], []
    for _ in range(3):
        floors.append(floor_per_commit(n))
        steps.append(step_per_commit(n))
    floor, value = min(floors), min(steps)
    emit(
        "step_overhead",
        value / floor,
        "x",
        1.0,
        "<= 1.5x floor",
        value / floor <= 1.5,
        step_us=value * 1e6,
        floor_us=floor * 1e6,
        n=n,
    )


if __name__ == "__main__":
    run(quick=True)
