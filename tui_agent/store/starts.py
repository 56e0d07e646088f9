"""Creating a run, in plain `sqlite3`: `tui-agent run` from a script costs about what
`tui-agent ls` costs (importing SQLAlchemy and SQLModel for this one insert took 0.3 s)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tui_agent.domain.models import (
    FINAL_STATUSES,
    UNCONFINED_FLAG,
    Event,
    Run,
    RunSpec,
    RunStatus,
)
from tui_agent.store.db import Database
from tui_agent.store.rows import run_from_row
from tui_agent.store.txn import add_event_txn, fetch_one

_FINAL = tuple(s.value for s in FINAL_STATUSES)
_INSERT_RUN = (
    "INSERT INTO runs (id, idem_key, status, goal, workspace, model, base_url, budget_json, "
    "policy_json, state_json, usage_steps, usage_tokens, usage_wall_s, cancel_requested, "
    "retry_attempt, retry_max, next_seq, revision, created_at, updated_at, queue, callback_url) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0.0, FALSE, 0, 0, 1, 1, ?, ?, ?, ?)"
)


# PostgreSQL, a start without a key: the run, its event and the commit in one round trip
# (a new run's row is nobody else's yet, so its events keep their order; see add_event_txn).
_PG_CREATE = (
    f"WITH r AS ({_INSERT_RUN} RETURNING *), "
    "e AS (INSERT INTO events (run_id, kind, message, data_json, created_at) "
    "SELECT id, 'created', ?, ?, created_at FROM r RETURNING id) "
    "SELECT r.*, e.id AS event_id FROM r, e"
)


def live_run_with_key_txn(cur: Any, key: str | None) -> Run | None:
    """The run holding an idempotency key, while it is not final."""
    if not key:
        return None
    marks = ", ".join("?" * len(_FINAL))
    row = fetch_one(
        cur, f"SELECT * FROM runs WHERE idem_key = ? AND status NOT IN ({marks})", (key, *_FINAL)
    )
    return run_from_row(row) if row is not None else None


def insert_run_txn(
    cur: Any, spec: RunSpec, run_id: str, now: float, state: dict[str, Any]
) -> dict[str, Any]:
    """The row of a new queued run, as inserted (its event is the caller's: created,
    forked …)."""
    row = fetch_one(cur, _INSERT_RUN + " RETURNING *", _run_values(spec, run_id, now, state))
    assert row is not None
    return row


def _run_values(spec: RunSpec, run_id: str, now: float, state: dict[str, Any]) -> tuple[Any, ...]:
    return (
        run_id,
        spec.idem_key,
        RunStatus.QUEUED.value,
        spec.goal,
        spec.workspace,
        spec.model,
        spec.base_url,
        json.dumps(spec.budget.to_dict()),
        json.dumps(spec.policy.to_dict()),
        json.dumps(state),
        now,
        now,
        spec.queue,
        spec.callback_url,
    )


def create_run(db: Database, spec: RunSpec, run_id: str) -> tuple[Run, bool]:
    """Insert a queued run; with an idempotency key, return the live run holding it."""
    run, event = create_run_and_event(db, spec, run_id)
    return run, event is not None


def create_run_and_event(db: Database, spec: RunSpec, run_id: str) -> tuple[Run, Event | None]:
    """`create_run`, with the new run's only event (None: the key's live run came back), so
    that a new run is shown as committed without reading it back."""
    now = float(db.clock())
    state = {"risk_flags": [UNCONFINED_FLAG]} if spec.policy.sandbox == "none" else {}
    created = f"run created with model {spec.model}"
    data = {"status": RunStatus.QUEUED.value}

    def started(row: Any, event_id: int) -> tuple[Run, Event]:
        return run_from_row(row), Event(event_id, run_id, "created", created, now, data)

    if db.dialect == "postgresql" and not spec.idem_key:
        with db.raw_statement() as cur:
            row = cur.execute(
                _PG_CREATE, (*_run_values(spec, run_id, now, state), created, json.dumps(data))
            ).fetchone()
        return started(row, row["event_id"])
    try:
        with db.raw_write() as cur:
            existing = live_run_with_key_txn(cur, spec.idem_key)
            if existing is not None:
                return existing, None
            row = insert_run_txn(cur, spec, run_id, now, state)
            return started(
                row, add_event_txn(cur, run_id, "created", created, now, becomes=RunStatus.QUEUED)
            )
    except Exception as exc:
        if not _duplicate_key(exc):
            raise
        # The unique index is the last line: a start that raced another with the same key
        # gets that run back.
        with db.raw_read() as cur:
            existing = live_run_with_key_txn(cur, spec.idem_key)
        if existing is not None:
            return existing, None
        raise


def _duplicate_key(exc: Exception) -> bool:
    """A unique index refused the row (either engine's error)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    return type(exc).__name__ == "UniqueViolation"
