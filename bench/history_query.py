"""The history pane's page query at 100,000 runs: unfiltered, by status, by text."""

from __future__ import annotations

import sqlite3
import time

from bench.common import emit, median, p95
from bench.generate import cached
from tui_agent.store.run_store import open_store

PAGE = 100


def _timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def run(quick: bool) -> None:
    db = cached(100_000, 1_000_000)
    n = 60 if quick else 300
    raw = sqlite3.connect(db)
    floor = _timed(
        lambda: raw.execute(
            "SELECT id, status, goal, created_at FROM runs ORDER BY created_at DESC, id DESC "
            "LIMIT ?",
            (PAGE,),
        ).fetchall(),
        n,
    )
    store = open_store(db)
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
        "history_query",
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
