"""Helpers that must run inside the caller's transaction (hence `*_txn`)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, insert, select

from tui_agent.domain.errors import UnknownRun
from tui_agent.domain.models import Run
from tui_agent.store.rows import events_t, run_from_row, runs_t

_ALLOC_SEQ_OWNED = (
    "UPDATE runs SET next_seq = next_seq + 1 WHERE id = ? AND owner IS ? RETURNING next_seq - 1"
)


def load_run_txn(conn: Connection, run_id: str) -> Run:
    row = conn.execute(select(runs_t).where(runs_t.c.id == run_id)).mappings().first()
    if row is None:
        raise UnknownRun(f"no run {run_id}")
    return run_from_row(row)


def add_event_txn(
    conn: Connection,
    run_id: str,
    kind: str,
    message: str,
    now: float,
    data: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        insert(events_t).values(
            run_id=run_id,
            kind=kind,
            message=message,
            data_json=json.dumps(data or {}),
            created_at=now,
        )
    )


def alloc_seq_txn(conn: Connection, run_id: str, owner: str | None) -> int | None:
    """The next step number, or None when `owner` does not hold the run."""
    row = conn.exec_driver_sql(_ALLOC_SEQ_OWNED, (run_id, owner)).first()
    return None if row is None else int(row[0])
