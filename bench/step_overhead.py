"""One durable step (record + checkpoint in one transaction) against a raw sqlite3
INSERT+COMMIT in WAL mode with synchronous=FULL, in the same process and directory; and on
PostgreSQL against a raw psycopg INSERT+COMMIT on the same server (a throwaway cluster of
the machine's binaries, as the tests start)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from bench.common import emit, median, pg_cluster, scratch, seed_run
from tui_agent.store.journal import StepJournal
from tui_agent.store.run_store import open_store

PAYLOAD = {
    "content": "I will read the file next.",
    "tool_calls": [{"id": "c1", "name": "read_file", "arguments": '{"path": "README.md"}'}],
    "usage": {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940},
}


class Floor:
    """Raw sqlite3: BEGIN IMMEDIATE, one INSERT, COMMIT, in WAL with synchronous=FULL."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(scratch("floor") / "raw.db", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE t (run_id TEXT, seq INTEGER, payload TEXT, PRIMARY KEY (run_id, seq))"
        )
        self.body = str(PAYLOAD)
        self.i = 0

    def commit(self) -> None:
        self.i += 1
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("INSERT INTO t VALUES (?, ?, ?)", ("r", self.i, self.body))
        self.conn.execute("COMMIT")


class PgFloor:
    """Raw psycopg: one INSERT and COMMIT (the server's default durability, fsync on)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url)
        self.conn.execute(
            "CREATE TABLE t (run_id TEXT, seq INTEGER, payload TEXT, PRIMARY KEY (run_id, seq))"
        )
        self.conn.commit()
        self.body = str(PAYLOAD)
        self.i = 0

    def commit(self) -> None:
        self.i += 1
        self.conn.execute("INSERT INTO t VALUES (%s, %s, %s)", ("r", self.i, self.body))
        self.conn.commit()


class Steps:
    """One durable LLM step through the real journal (record + checkpoint)."""

    def __init__(self, where: Path | str | None = None) -> None:
        self.store = open_store(where or scratch("steps") / "tui-agent.db")
        self.run_id = seed_run(self.store, "bench", Path("/tmp"), max_steps=10**9)
        self.journal = StepJournal(self.store.db, "bench", 1)
        self.journal.claim(1, 3600)

    def commit(self) -> None:
        self.journal.record_llm_reply(self.run_id, PAYLOAD, 940, 0.0)


def _block(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def run(quick: bool) -> None:
    _compare("step_overhead", Floor(), Steps(), quick)
    with pg_cluster("step_overhead_postgres") as cluster:
        if cluster is not None:
            steps = Steps(cluster.new_database())
            _compare("step_overhead_postgres", PgFloor(cluster.new_database()), steps, quick)


def _compare(name: str, floor: Floor | PgFloor, steps: Steps, quick: bool) -> None:
    blocks, per_block = (10, 50) if quick else (40, 75)
    for _ in range(20):  # warm both
        floor.commit()
        steps.commit()
    # Short alternating blocks, so both sides share the machine's noise; the median of the
    # per-block ratios is the figure.
    ratios, floors, values = [], [], []
    for _ in range(blocks):
        f = _block(floor.commit, per_block)
        v = _block(steps.commit, per_block)
        floors.append(f)
        values.append(v)
        ratios.append(v / f)
    ratio = median(ratios)
    steps.store.close()
    emit(
        name,
        ratio,
        "x",
        1.0,
        "<= 1.5x floor",
        ratio <= 1.5,
        step_us=median(values) * 1e6,
        floor_us=median(floors) * 1e6,
        n=blocks * per_block,
    )


if __name__ == "__main__":
    run(quick=True)
