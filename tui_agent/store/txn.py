"""Helpers that must run inside the caller's transaction (hence `*_txn`)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, insert, select, update

from tui_agent.domain.errors import InvalidTransition, UnknownRun
from tui_agent.domain.models import Approval, Policy, Run, RunStatus, StepKind, StepStatus
from tui_agent.store.rows import run_from_row
from tui_agent.store.tables import approvals_t, events_t, runs_t, steps_t

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


def decide_approval_txn(
    conn: Connection,
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
    conn.execute(
        update(approvals_t)
        .where(approvals_t.c.id == approval.id)
        .values(
            status=decision,
            decided_at=now,
            decided_by=by,
            decision_reason=reason,
            always=bool(policy and approval.tool in policy.always_allow and approve),
        )
    )
    seq = alloc_seq_txn(conn, approval.run_id, None)
    if seq is None:
        raise InvalidTransition(f"run {approval.run_id[:8]} is held by an executor")
    conn.execute(
        insert(steps_t).values(
            run_id=approval.run_id,
            seq=seq,
            kind=StepKind.APPROVAL.value,
            status=StepStatus.DONE.value,
            tool=approval.tool,
            call_id=approval.call_id,
            arguments=approval.arguments,
            llm_seq=approval.llm_seq,
            payload_json=json.dumps(
                {"approval_id": approval.id, "decision": decision, "by": by, "reason": reason}
            ),
            tokens=0,
            created_at=now,
            finished_at=now,
        )
    )
    values: dict[str, Any] = {
        "status": RunStatus.QUEUED.value,
        "waiting_tool": None,
        "pause_reason": None,
        "revision": runs_t.c.revision + 1,
        "updated_at": now,
    }
    if policy is not None:
        values["policy_json"] = json.dumps(policy.to_dict())
    conn.execute(update(runs_t).where(runs_t.c.id == approval.run_id).values(**values))
    text = f"{decision} {approval.tool} by {by}" + (f": {reason}" if reason else "")
    add_event_txn(conn, approval.run_id, "approval", text, now)
