"""Copying every run of one store into another, empty one (`tui-agent store copy --to URL`):
how a person moves their history from the home's SQLite file to PostgreSQL (or back).

One read snapshot of the source, one write transaction on the target: the copy is whole or
nothing. Runs keep their ids, steps, approvals, artifacts and events (event ids too); what
describes live processes (owners, leases, executors) is not copied, so a run that was
running is picked up again by the target's supervisors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tui_agent.domain.errors import BadInput

# Parents before children (foreign keys); each with a unique key its rows are read by, a
# page at a time (a key, not an offset: a million steps stay a linear read).
TABLES = (
    ("runs", ("created_at", "id")),
    ("steps", ("run_id", "seq")),
    ("approvals", ("id",)),
    ("artifacts", ("id",)),
    ("events", ("id",)),
    ("deliveries", ("id",)),
)
BOOLEAN_COLUMNS = {"cancel_requested", "always"}  # SQLite stores 0/1
# A copied run belongs to no executor: the target's supervisors take it up afresh.
RELEASED = {"owner": None, "owner_pid": None, "owner_node": None, "lease_until": None}
BATCH = 500


@dataclass(frozen=True)
class CopyReport:
    counts: dict[str, int]
    target: str

    def line(self) -> str:
        c = self.counts
        return (
            f"copied {c['runs']} run(s) ({c['steps']} steps, {c['approvals']} approvals, "
            f"{c['artifacts']} artifacts, {c['events']} events) to {self.target}"
        )


def copy_store(source: Any, target: Any) -> CopyReport:
    """Copy every run of `source` into the empty `target` (both prepared databases)."""
    with target.raw_read() as cur:
        present = int(cur.execute("SELECT count(*) FROM runs").fetchone()[0])
    if present:
        raise BadInput(
            f"{target.label} already holds {present} run(s); copy only into an empty store"
        )
    counts = {name: 0 for name, _ in TABLES}
    with source.raw_snapshot() as src, target.raw_write() as dst:
        for table, key in TABLES:
            for columns, rows in _batches(src, table, key):
                marks = ", ".join("?" * len(columns))
                sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
                dst.executemany(sql, rows)
                counts[table] += len(rows)
        if target.dialect == "postgresql":  # new events continue after the copied ids
            dst.execute(
                "SELECT setval(pg_get_serial_sequence('events', 'id'), "
                "(SELECT coalesce(max(id), 0) + 1 FROM events), false)"
            )
    _verify(target, counts)
    return CopyReport(counts, target.label)


def _batches(
    cur: Any, table: str, key: tuple[str, ...]
) -> Iterator[tuple[list[str], list[tuple[Any, ...]]]]:
    """The table's rows in batches, adapted for any engine (booleans, released owners)."""
    order = ", ".join(key)
    after: tuple[Any, ...] | None = None
    while True:
        where = f" WHERE ({order}) > ({', '.join('?' * len(key))})" if after else ""
        rows = cur.execute(
            f"SELECT * FROM {table}{where} ORDER BY {order} LIMIT ?", (*(after or ()), BATCH)
        ).fetchall()
        if not rows:
            return
        columns = [d[0] for d in cur.description]
        yield columns, [_adapt(table, columns, row) for row in rows]
        after = tuple(rows[-1][columns.index(name)] for name in key)


def _adapt(table: str, columns: list[str], row: Any) -> tuple[Any, ...]:
    values = []
    for name, value in zip(columns, row, strict=True):
        if name in BOOLEAN_COLUMNS and value is not None:
            value = bool(value)
        elif table == "runs" and name in RELEASED:
            value = RELEASED[name]
        elif isinstance(value, memoryview):
            value = bytes(value)
        values.append(value)
    return tuple(values)


def _verify(target: Any, counts: dict[str, int]) -> None:
    """Read back what was committed: every table holds what was copied."""
    with target.raw_read() as cur:
        for table, expected in counts.items():
            found = int(cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            if found != expected:
                raise RuntimeError(f"copy check: {table} has {found} rows, copied {expected}")
