"""Deleting old final runs with everything that hangs off them (steps, approvals,
artifacts, events, callbacks), a batch per short transaction, so the TUI and running runs
keep writing in between; then the space is given back (SQLite: `incremental_vacuum`;
PostgreSQL: `VACUUM`, which makes it reusable).

A run that is not final is never touched: the delete re-checks the status inside its own
transaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tui_agent.domain.models import FINAL_STATUSES

BATCH = 50
VACUUM_PAGES = 1000
CHILDREN = ("steps", "approvals", "artifacts", "events", "deliveries")
_FINAL = tuple(s.value for s in FINAL_STATUSES)


@dataclass
class PruneReport:
    runs: int = 0
    steps: int = 0
    bytes_freed: int = 0
    hold_s: list[float] = field(default_factory=list)  # each batch's write transaction

    def to_dict(self) -> dict[str, int]:
        return {"runs": self.runs, "steps": self.steps, "bytes_freed": self.bytes_freed}


def prune_runs(
    db: Any,
    *,
    cutoff: float,
    statuses: tuple[str, ...] = _FINAL,
    dry_run: bool = False,
    batch: int = BATCH,
    pause: Callable[[], None] = lambda: time.sleep(0.01),
) -> PruneReport:
    """Runs in `statuses` (final ones only) last changed before `cutoff` (epoch seconds)."""
    statuses = tuple(s for s in statuses if s in _FINAL)
    report = PruneReport()
    if not statuses:
        return report
    marks = ", ".join("?" * len(statuses))
    pick = f"SELECT id FROM runs WHERE status IN ({marks}) AND updated_at < ?"
    params = (*statuses, cutoff)
    if dry_run:
        with db.raw_read() as cur:
            report.runs = int(cur.execute(f"SELECT count(*) FROM ({pick}) p", params).fetchone()[0])
            report.steps = int(
                cur.execute(
                    f"SELECT count(*) FROM steps WHERE run_id IN ({pick})", params
                ).fetchone()[0]
            )
            report.bytes_freed = _bytes_of(cur, db.dialect, pick, params)
        return report
    pg = db.dialect == "postgresql"
    used_before = 0 if pg else _used_bytes(db)
    pg_bytes = 0
    while True:
        began = time.perf_counter()
        with db.raw_write() as cur:
            ids = [r[0] for r in cur.execute(pick + " LIMIT ?", (*params, batch)).fetchall()]
            if not ids:
                break
            id_marks = ", ".join("?" * len(ids))
            if pg:
                picked = f"SELECT id FROM runs WHERE id IN ({id_marks})"
                pg_bytes += _bytes_of(cur, db.dialect, picked, ids)
            report.steps += int(
                cur.execute(
                    f"SELECT count(*) FROM steps WHERE run_id IN ({id_marks})", ids
                ).fetchone()[0]
            )
            for table in CHILDREN:
                cur.execute(f"DELETE FROM {table} WHERE run_id IN ({id_marks})", ids)
            # Still final (nothing resumed it since it was picked: this transaction holds
            # the write lock on SQLite, and PostgreSQL re-checks the row it deletes).
            cur.execute(
                f"DELETE FROM runs WHERE id IN ({id_marks}) AND status IN ({marks})",
                (*ids, *statuses),
            )
            report.runs += cur.rowcount
        report.hold_s.append(time.perf_counter() - began)
        pause()  # let the others' writes in between two batches
    report.bytes_freed = pg_bytes if pg else _reclaim(db, used_before, pause)
    if pg and report.runs:
        with db.raw_statement() as cur:
            for table in ("runs", *CHILDREN):
                cur.execute(f"VACUUM {table}")
    return report


def _bytes_of(cur: Any, dialect: str, pick: str, params: Any) -> int:
    """What the rows of the picked runs take (PostgreSQL's own measure of each row)."""
    if dialect != "postgresql":
        total = 0
        for table, size in (
            (
                "steps",
                "length(coalesce(arguments, '')) + length(coalesce(result, '')) + "
                "length(payload_json) + 64",
            ),
            ("artifacts", "length(content) + length(summary)"),
            ("events", "length(message) + length(data_json) + 32"),
            (
                "runs",
                "length(goal) + length(budget_json) + length(policy_json) + "
                "length(state_json) + 256",
            ),
        ):
            key = "id" if table == "runs" else "run_id"
            row = cur.execute(
                f"SELECT coalesce(sum({size}), 0) FROM {table} WHERE {key} IN ({pick})", params
            ).fetchone()
            total += int(row[0])
        return total
    total = 0
    for table in ("runs", *CHILDREN):
        key = "id" if table == "runs" else "run_id"
        row = cur.execute(
            f"SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM {table} t WHERE {key} IN ({pick})",
            params,
        ).fetchone()
        total += int(row[0])
    return total


def _used_bytes(db: Any) -> int:
    """SQLite: the bytes of the file that hold data (pages not on the free list)."""
    with db.raw_read() as cur:
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        free = cur.execute("PRAGMA freelist_count").fetchone()[0]
        size = cur.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def _reclaim(db: Any, used_before: int, pause: Callable[[], None]) -> int:
    """Give the freed pages back to the file system where the file allows it (databases
    made by this version: `auto_vacuum = INCREMENTAL`); older files keep them for reuse."""
    while True:
        with db.raw_statement() as cur:
            if not cur.execute("PRAGMA freelist_count").fetchone()[0]:
                break
            # A page per step of the statement: sqlite3's execute() steps once, and a
            # script is stepped to its end; a few MB at a time, others write in between.
            cur.connection.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
        pause()
    return max(0, used_before - _used_bytes(db))
