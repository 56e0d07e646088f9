"""Helpers that must run inside the caller's transaction (hence `*_txn`), in plain SQL.

They take a DB-API cursor or a SQLAlchemy connection (whose DB-API connection is in the
same transaction), so the executor and supervisor share them without importing SQLAlchemy.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tui_agent import failpoints
from tui_agent.domain.errors import InvalidTransition, UnknownRun
from tui_agent.domain.models import (
    CALLBACK_STATUSES,
    Approval,
    Policy,
    Run,
    RunStatus,
    StepKind,
    StepStatus,
)
from tui_agent.store.postgres_schema import is_postgres
from tui_agent.store.rows import run_from_row

_ALLOC_SEQ_FREE = (
    "UPDATE runs SET next_seq = next_seq + 1 WHERE id = ? AND owner IS NULL RETURNING next_seq - 1"
)
INSERT_STEP = (
    "INSERT INTO steps (run_id, seq, kind, status, tool, call_id, arguments, result, "
    "artifact_id, llm_seq, payload_json, tokens, created_at, finished_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_note_step_txn(cur: Any, run_id: str, seq: int, kind: str, body: str, now: float) -> None:
    """A step that is done as it is written and calls nothing (a person's message, a
    compaction): only its kind and payload differ."""
    cur.execute(
        INSERT_STEP,
        (run_id, seq, kind, "done", None, None, None, None, None, None, body, 0, now, now),
    )


# Runs that want an executor: queued, or running with no live owner (see runnable_params).
RUNNABLE = "(status = ? OR (status = ? AND (owner IS NULL OR lease_until < ?)))"
# Runs left running by an executor that died or lost its lease (params: 'running', now).
ORPHANED = "status = ? AND (owner IS NULL OR lease_until < ?)"
_INSERT_EVENT = (
    "INSERT INTO events (run_id, kind, message, data_json, created_at) VALUES (?, ?, ?, ?, ?)"
)


# The last event of each run that tells whether its recoveries go on in a row: a recovery
# ('lost'), or what ends a series of them (a status change: a pause, a quarantine, a
# person's resume; a person's decision on a call in doubt).
_LAST_RECOVERY = (
    "SELECT run_id, kind, data_json FROM events WHERE id IN (SELECT max(id) FROM events "
    "WHERE run_id IN ({marks}) AND kind IN ('lost', 'status', 'resolve') GROUP BY run_id)"
)


def deaths_in_a_row_txn(conn: Any, run_ids: list[str]) -> dict[str, tuple[int, int]]:
    """{run: (step, deaths)}: the step at which its executor last died and how many times
    in a row it died there (absent: no death since the run's last status change)."""
    if not run_ids:
        return {}
    sql = _LAST_RECOVERY.format(marks=", ".join("?" * len(run_ids)))
    found: dict[str, tuple[int, int]] = {}
    for run_id, kind, data_json in cursor_of(conn).execute(sql, tuple(run_ids)).fetchall():
        try:
            data = json.loads(data_json or "{}")
        except ValueError:
            continue
        step, deaths = data.get("step"), data.get("deaths")
        if kind == "lost" and isinstance(step, int) and isinstance(deaths, int) and deaths > 0:
            found[run_id] = (step, deaths)
    return found


def runnable_params(now: float) -> tuple[str, str, float]:
    return (RunStatus.QUEUED.value, RunStatus.RUNNING.value, now)


def in_queues(queues: tuple[str, ...] | None) -> tuple[str, tuple[str, ...]]:
    """` AND queue IN (…)` for the queues a supervisor serves (None: every queue)."""
    if queues is None:
        return "", ()
    return f" AND queue IN ({', '.join('?' * len(queues))})", tuple(queues)


def cursor_of(conn: Any) -> Any:
    """A DB-API cursor inside the caller's transaction, from a cursor or a SA connection."""
    if hasattr(conn, "exec_driver_sql"):
        raw = conn.connection.dbapi_connection.cursor()
        if is_postgres(conn):
            from tui_agent.store.postgres import wrap_cursor

            return wrap_cursor(raw)
        return raw
    return conn


def locking(conn: Any) -> str:
    """` FOR UPDATE` where rows need locking (PostgreSQL); SQLite's writer is alone."""
    return " FOR UPDATE" if is_postgres(conn) else ""


def fetch_one(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
    """The first row as a dict, whatever the connection's row factory."""
    cur = cursor_of(conn).execute(sql, params)
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))


def execute(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> None:
    cursor_of(conn).execute(sql, params)


def load_run_txn(conn: Any, run_id: str, *, lock: bool = False) -> Run:
    """The run; with `lock`, no other transaction changes it before ours ends."""
    sql = "SELECT * FROM runs WHERE id = ?" + (locking(conn) if lock else "")
    row = fetch_one(conn, sql, (run_id,))
    if row is None:
        raise UnknownRun(f"no run {run_id}")
    return run_from_row(row)


def add_event_txn(
    conn: Any,
    run_id: str,
    kind: str,
    message: str,
    now: float,
    data: dict[str, Any] | None = None,
    *,
    becomes: RunStatus | None = None,
) -> int:
    """Record what happened to a run; `becomes` is the status the transaction leaves it in
    (kept in the event's data; a callback is due when the run ended or needs a person).
    Returns the event's id.

    The caller's transaction has written (so, on PostgreSQL, locked) the run's row first:
    a run's events then commit in the order of their ids (identities are drawn before
    commit), and an event stream that resumes after an id never skips one committed late."""
    payload = dict(data or {})
    if becomes is not None:
        payload["status"] = becomes.value
    row = fetch_one(
        conn, _INSERT_EVENT + " RETURNING id", (run_id, kind, message, json.dumps(payload), now)
    )
    assert row is not None
    if becomes in CALLBACK_STATUSES:
        _enqueue_callback_txn(conn, run_id, becomes, message, now)
    return int(row["id"])


def _enqueue_callback_txn(
    conn: Any, run_id: str, status: RunStatus, message: str, now: float
) -> None:
    """The outbox row of a callback, in the transaction that changed the run: the change
    and its delivery stand or fall together, whoever delivers it and whenever."""
    row = fetch_one(
        conn, "SELECT callback_url, pause_reason, result, error FROM runs WHERE id = ?", (run_id,)
    )
    if row is None or not row["callback_url"]:
        return
    body = {
        "id": run_id,
        "status": status.value,
        "reason": row["pause_reason"] or row["error"] or message,
        "result": row["result"],
        "error": row["error"],
    }
    execute(
        conn,
        "INSERT INTO deliveries (id, run_id, url, body, status, attempts, next_at, created_at) "
        "VALUES (?, ?, ?, ?, 'pending', 0, ?, ?)",
        (uuid.uuid4().hex, run_id, row["callback_url"], json.dumps(body), now, now),
    )


def alloc_seq_txn(conn: Any, run_id: str) -> int | None:
    """The next step number of a run no executor holds (None: one holds it)."""
    row = cursor_of(conn).execute(_ALLOC_SEQ_FREE, (run_id,)).fetchone()
    return None if row is None else int(row[0])


def decide_approval_txn(
    conn: Any,
    approval: Approval,
    *,
    approve: bool,
    by: str,
    reason: str | None,
    now: float,
    policy: Policy | None = None,
) -> None:
    """One decision, whoever makes it (a person or a deadline): the approval row, an audit
    step in the run's timeline, and the run back in the queue (with a new policy if given)."""
    decision = "approved" if approve else "denied"
    always = bool(policy and approval.tool in policy.always_allow and approve)
    execute(
        conn,
        "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, "
        "decision_reason = ?, always = ? WHERE id = ?",
        (decision, now, by, reason, always, approval.id),
    )
    failpoints.hit("txn.decide_approval", approval.run_id)  # crash tests: mid-transaction
    seq = alloc_seq_txn(conn, approval.run_id)
    if seq is None:
        raise InvalidTransition(f"run {approval.run_id[:8]} is held by an executor")
    payload = {
        "approval_id": approval.id,
        "decision": decision,
        "by": by,
        "reason": reason,
        "always": always,
    }
    execute(
        conn,
        INSERT_STEP,
        (
            approval.run_id,
            seq,
            StepKind.APPROVAL.value,
            StepStatus.DONE.value,
            approval.tool,
            approval.call_id,
            approval.arguments,
            None,
            None,
            approval.llm_seq,
            json.dumps(payload),
            0,
            now,
            now,
        ),
    )
    policy_sql, params = "", ()
    if policy is not None:
        policy_sql, params = ", policy_json = ?", (json.dumps(policy.to_dict()),)
    execute(
        conn,
        "UPDATE runs SET status = ?, waiting_tool = NULL, pause_reason = NULL, "
        f"revision = revision + 1, updated_at = ?{policy_sql} WHERE id = ?",
        (RunStatus.QUEUED.value, now, *params, approval.run_id),
    )
    text = f"{decision} {approval.tool} by {by}" + (f": {reason}" if reason else "")
    add_event_txn(conn, approval.run_id, "approval", text, now, becomes=RunStatus.QUEUED)
