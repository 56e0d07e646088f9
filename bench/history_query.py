"""The history pane's page query at 100,000 runs: unfiltered, by status, by text; on SQLite
and on PostgreSQL (the same runs copied there with `store copy`'s code)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.common import emit, median, p95, pg_cluster
from bench.generate import cached
from tui_agent.store.run_store import RunStore, open_store

PAGE = 100


def _timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


FLOOR_SQL = (
    "SELECT id, status, goal, created_at FROM runs ORDER BY created_at DESC, id DESC LIMIT ?"
)


def run(quick: bool) -> None:
    db = cached(100_000, 1_000_000)
    n = 60 if quick else 300
    raw = sqlite3.connect(db)
    floor = _timed(lambda: raw.execute(FLOOR_SQL, (PAGE,)).fetchall(), n)
    _measure("history_query", open_store(db), floor, n)
    with pg_cluster("history_query_postgres") as cluster:
        if cluster is not None:
            _measure_postgres(cluster, db, n)


def _measure_postgres(cluster: Any, db: Path, n: int) -> None:
    """The same runs copied into PostgreSQL (store copy's code), the same queries."""
    import psycopg

    from tui_agent.store.copy import copy_store

    url = cluster.new_database()
    source = open_store(db)
    store = open_store(url)
    copy_store(source.db, store.db)
    source.close()
    with store.db.raw_write() as cur:
        cur.execute("ANALYZE")
    pg = psycopg.connect(url, autocommit=True)
    sql = FLOOR_SQL.replace("?", "%s")
    floor = _timed(lambda: pg.execute(sql, (PAGE,)).fetchall(), n)
    _measure("history_query_postgres", store, floor, n)
    pg.close()


def _measure(name: str, store: RunStore, floor: list[float], n: int) -> None:
    newest = store.list_runs(limit=1)[0]
    cursor = (newest.created_at - 150_000.0, "~")  # a page deep in the history
    variants = {
        "unfiltered": lambda: store.list_runs(limit=PAGE),
        "status": lambda: store.list_runs(statuses=["failed"], limit=PAGE),
        "waiting": lambda: store.list_runs(
            statuses=["waiting_approval", "needs_attention"], limit=PAGE
        ),
        "text": lambda: store.list_runs(text="README", limit=PAGE),
        "text_rare": lambda: store.list_runs(text="#4242", limit=PAGE),
        "deep_page": lambda: store.list_runs(limit=PAGE, before=cursor),
    }
    results = {name: _timed(fn, n) for name, fn in variants.items()}
    worst = max(results, key=lambda k: p95(results[k]))
    value = p95(results[worst])
    emit(
        name,
        value,
        "ms",
        p95(floor),
        "p95 <= 20 ms",
        value <= 20.0,
        median=median(results[worst]),
        worst=worst,
        **{f"p95_{k}": p95(v) for k, v in results.items()},
    )
    store.close()


if __name__ == "__main__":
    run(quick=True)
