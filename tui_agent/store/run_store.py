"""Reads and person-driven changes of runs: start, approve, deny, cancel, resume, resolve.

Every change is one BEGIN IMMEDIATE transaction that also bumps the run's revision, so the
TUI and the executor always see a whole decision or none of it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sqlalchemy import (
    Connection,
    select,
    update,
)

from tui_agent.domain.errors import ApprovalTimedOut, BadInput, InvalidTransition
from tui_agent.domain.models import (
    FINAL_STATUSES,
    Approval,
    Budget,
    Event,
    Policy,
    Run,
    RunSpec,
    RunStatus,
    Step,
    StepStatus,
    spent_budget,
)
from tui_agent.store.db import Database, open_database, prepared
from tui_agent.store.reader import Reader
from tui_agent.store.rows import approval_from_row
from tui_agent.store.starts import create_run
from tui_agent.store.tables import approvals_t, runs_t, steps_t
from tui_agent.store.txn import add_event_txn, decide_approval_txn, load_run_txn

_FINAL = [s.value for s in FINAL_STATUSES]


def _check_budget_above_usage(
    run: Run, max_steps: int | None, max_tokens: int | None, max_wall_s: float | None
) -> None:
    """A new budget below what the run already used is a typo, not a pause: bad input."""
    used = run.usage
    for flag, given, spent, unit in (
        ("--max-steps", max_steps, used.steps, "steps"),
        ("--max-tokens", max_tokens, used.llm_tokens, "tokens"),
        ("--max-wall-time", max_wall_s, used.wall_time_s, "seconds of active time"),
    ):
        if given is not None and given <= spent:
            raise BadInput(
                f"{flag} {given:g} is not above the {spent:g} {unit} run {run.id[:8]} has "
                f"already used; give more than {spent:g}"
            )


def open_store(
    where: Path | str,
    *,
    synchronous: str = "FULL",
    pool_size: int = 5,
    clock: object = None,
    new_id: Callable[[], str] | None = None,
    busy_timeout_s: float = 15.0,
) -> RunStore:
    """A SQLite file (a path) or a PostgreSQL database (a `postgresql://` URL)."""
    if isinstance(where, str) and where.startswith("postgresql://"):
        from tui_agent.store.postgres import PgDatabase

        return RunStore(prepared(PgDatabase(where, clock, pool_size=pool_size)), new_id=new_id)
    db = open_database(
        Path(where),
        synchronous=synchronous,
        pool_size=pool_size,
        clock=clock,
        busy_timeout_s=busy_timeout_s,
    )
    return RunStore(db, new_id=new_id)


class RunStore:
    """The store as the service layer and CLI see it."""

    def __init__(self, db: Database, *, new_id: Callable[[], str] | None = None) -> None:
        self.db = db
        self.reader = Reader.of(db)
        # Injectable so seeded databases (snapshot tests, benchmarks) are reproducible.
        self.new_id = new_id or (lambda: uuid.uuid4().hex)

    @property
    def path(self) -> Path | None:
        return self.db.path

    def now(self) -> float:
        return float(self.db.clock())

    def close(self) -> None:
        self.reader.close()
        self.db.dispose()

    # ---- reads (one copy of each query, in `reader.py`) ---------------------------------

    def resolve_id(self, prefix: str) -> str:
        return self.reader.resolve_id(prefix)

    def get_run(self, run_id: str) -> Run:
        return self.reader.get_run(run_id)

    def list_runs(
        self,
        *,
        statuses: list[str] | None = None,
        text: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        waiting_only: bool = False,
    ) -> list[Run]:
        return self.reader.list_runs(
            statuses=statuses, text=text, limit=limit, before=before, waiting_only=waiting_only
        )

    def count_runs(self, *, statuses: list[str] | None = None) -> int:
        return self.reader.count_runs(statuses=statuses)

    def count_waiting(self) -> int:
        return self.reader.count_waiting()

    def steps(self, run_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[Step]:
        return self.reader.steps(run_id, after_seq=after_seq, limit=limit)

    def step(self, run_id: str, seq: int) -> Step | None:
        return self.reader.step(run_id, seq)

    def events(self, run_id: str, *, after_id: int = 0) -> list[Event]:
        return self.reader.events(run_id, after_id=after_id)

    def approvals(self, run_id: str, *, status: str | None = None) -> list[Approval]:
        return self.reader.approvals(run_id, status=status)

    def pending_approval(self, run_id: str) -> Approval | None:
        return self.reader.pending_approval(run_id)

    def in_doubt_step(self, run_id: str) -> Step | None:
        return self.reader.in_doubt_step(run_id)

    def artifact(self, artifact_id: str) -> tuple[str, bytes] | None:
        return self.reader.artifact(artifact_id)

    # ---- person-driven changes ---------------------------------------------------------

    def create_run(self, spec: RunSpec) -> tuple[Run, bool]:
        """Insert a queued run; with an idempotency key, return the live run holding it."""
        return create_run(self.db, spec, self.new_id())

    def decide_approval(
        self,
        run_id: str,
        *,
        approve: bool,
        by: str,
        reason: str | None = None,
        always: bool = False,
    ) -> Approval:
        """Record a person's decision as an approval row, an audit step and a requeue."""
        now = self.now()
        asked_to_approve = approve
        with self.db.write() as conn:
            run = load_run_txn(conn, run_id, lock=True)
            row = (
                conn.execute(
                    select(approvals_t).where(
                        approvals_t.c.run_id == run_id, approvals_t.c.status == "pending"
                    )
                )
                .mappings()
                .first()
            )
            if row is None or run.status is not RunStatus.WAITING_APPROVAL:
                raise InvalidTransition(
                    f"run {run_id[:8]} has no pending approval (status {run.status.value})"
                )
            pending = approval_from_row(row)
            policy = run.policy
            timeout = policy.approval_timeout_s
            timed_out = bool(timeout) and now >= pending.created_at + (timeout or 0)
            if timed_out:
                # Past its deadline it counts as denied, whether or not a supervisor was
                # alive to say so: recorded as the deadline's decision, not the person's.
                approve, by, reason = False, "timeout", f"no decision within {timeout:g}s"
            elif approve and always and pending.tool not in policy.always_allow:
                policy = replace(policy, always_allow=(*policy.always_allow, pending.tool))
            decide_approval_txn(
                conn,
                pending,
                approve=approve,
                by=by,
                reason=reason,
                now=now,
                policy=None if policy.problem else policy,  # an unreadable one stays as it is
            )
            decided = approval_from_row(
                conn.execute(select(approvals_t).where(approvals_t.c.id == pending.id))
                .mappings()
                .one()
            )
        if timed_out and asked_to_approve:
            raise ApprovalTimedOut(
                f"the approval of {pending.tool} timed out after {timeout:g}s and counts as "
                "denied; the run goes on without it"
            )
        return decided

    def cancel(self, run_id: str, *, by: str = "user") -> Run:
        """Cancel a run; an executor holding it stops after its current step."""
        now = self.now()
        with self.db.write() as conn:
            run = load_run_txn(conn, run_id, lock=True)
            if run.status.is_final:
                raise InvalidTransition(f"run {run_id[:8]} is already {run.status.value}")
            values: dict[str, object] = {"revision": runs_t.c.revision + 1, "updated_at": now}
            event: tuple[str, str, RunStatus | None]
            if run.status is RunStatus.RUNNING and run.owner is not None:
                values["cancel_requested"] = True
                event = ("cancel", f"cancel requested by {by}", None)
            elif run.status is RunStatus.NEEDS_ATTENTION:
                what = "quarantined run" if run.quarantined else "in-doubt call"
                values.update(
                    status=RunStatus.FAILED.value, error=f"{what} failed by {by}", owner=None
                )
                self._mark_in_doubt_txn(
                    conn,
                    run_id,
                    "error",
                    "failed by the user after an interruption; the outcome is unknown",
                    now,
                )
                why = "quarantined" if run.quarantined else "call in doubt"
                event = ("status", f"failed by {by} ({why})", RunStatus.FAILED)
            else:
                values.update(
                    status=RunStatus.CANCELLED.value,
                    error=f"cancelled by {by}",
                    owner=None,
                    owner_pid=None,
                    lease_until=None,
                    waiting_tool=None,
                )
                conn.execute(
                    update(approvals_t)
                    .where(approvals_t.c.run_id == run_id, approvals_t.c.status == "pending")
                    .values(status="cancelled", decided_at=now, decided_by=by)
                )
                event = ("status", f"cancelled by {by}", RunStatus.CANCELLED)
            conn.execute(update(runs_t).where(runs_t.c.id == run_id).values(**values))
            kind, message, becomes = event  # after the update: a callback reads the new row
            add_event_txn(conn, run_id, kind, message, now, becomes=becomes)
            return load_run_txn(conn, run_id)

    def resume(
        self,
        run_id: str,
        *,
        max_steps: int | None = None,
        max_llm_tokens: int | None = None,
        max_wall_time_s: float | None = None,
        max_context_tokens: int | None = None,
    ) -> Run:
        """Requeue a paused, failed or quarantined run, with a larger budget when one is
        spent (a quarantined run's open call, if any, is decided as after any crash)."""
        now = self.now()
        with self.db.write() as conn:
            run = load_run_txn(conn, run_id, lock=True)
            if not run.resumable:
                hint = {
                    RunStatus.WAITING_APPROVAL: "; approve or deny it instead",
                    RunStatus.NEEDS_ATTENTION: "; use `resolve RUN retry|skip` instead",
                }.get(run.status, "")
                raise InvalidTransition(
                    f"run {run_id[:8]} is {run.status.value}; only paused, failed or "
                    f"quarantined runs can be resumed{hint}"
                )
            _check_budget_above_usage(run, max_steps, max_llm_tokens, max_wall_time_s)
            budget = run.budget
            changes: dict[str, float | int] = {}
            if max_steps is not None:
                changes["max_steps"] = max_steps
            if max_llm_tokens is not None:
                changes["max_llm_tokens"] = max_llm_tokens
            if max_wall_time_s is not None:
                changes["max_wall_time_s"] = max_wall_time_s
            if max_context_tokens is not None:
                changes["max_context_tokens"] = max_context_tokens
            budget = replace(budget, **changes)  # type: ignore[arg-type]
            still_spent = spent_budget(budget, run.usage)
            if still_spent:
                raise BadInput(
                    f"{still_spent}; resume with a larger budget (--max-steps, --max-tokens "
                    "or --max-wall-time)"
                )
            conn.execute(
                update(runs_t)
                .where(runs_t.c.id == run_id)
                .values(
                    status=RunStatus.QUEUED.value,
                    budget_json=json.dumps(budget.to_dict()),
                    pause_reason=None,
                    error=None,
                    retry_attempt=0,
                    retry_at=None,
                    retry_error=None,
                    revision=runs_t.c.revision + 1,
                    updated_at=now,
                )
            )
            note = f" with budget {changes}" if changes else ""
            add_event_txn(conn, run_id, "status", f"resumed{note}", now, becomes=RunStatus.QUEUED)
            return load_run_txn(conn, run_id)

    def resolve(self, run_id: str, choice: str, *, by: str = "user") -> Run:
        """Decide an in-doubt call: retry it, skip it (outcome unknown) or fail the run."""
        if choice not in ("retry", "skip", "fail"):
            raise BadInput(f"choice must be retry, skip or fail, not {choice!r}")
        if choice == "fail":
            return self.cancel(run_id, by=by)
        now = self.now()
        with self.db.write() as conn:
            run = load_run_txn(conn, run_id, lock=True)
            if run.status is not RunStatus.NEEDS_ATTENTION:
                raise InvalidTransition(
                    f"run {run_id[:8]} has no call in doubt (status {run.status.value})"
                )
            # (a quarantined run with no call open simply goes on: nothing to retry or skip)
            if choice == "skip":
                self._mark_in_doubt_txn(
                    conn,
                    run_id,
                    StepStatus.SKIPPED.value,
                    "The outcome of this call is unknown: it was interrupted and the user "
                    "chose not to run it again.",
                    now,
                )
            else:
                conn.execute(
                    update(steps_t)
                    .where(steps_t.c.run_id == run_id, steps_t.c.status == StepStatus.STARTED.value)
                    .values(payload_json=json.dumps({"resolution": "retry", "by": by}))
                )
            conn.execute(
                update(runs_t)
                .where(runs_t.c.id == run_id)
                .values(
                    status=RunStatus.QUEUED.value,
                    pause_reason=None,
                    revision=runs_t.c.revision + 1,
                    updated_at=now,
                )
            )
            add_event_txn(
                conn,
                run_id,
                "resolve",
                f"in-doubt call: {choice} chosen by {by}",
                now,
                becomes=RunStatus.QUEUED,
            )
            return load_run_txn(conn, run_id)

    def _mark_in_doubt_txn(
        self, conn: Connection, run_id: str, status: str, result: str, now: float
    ) -> None:
        conn.execute(
            update(steps_t)
            .where(steps_t.c.run_id == run_id, steps_t.c.status == StepStatus.STARTED.value)
            .values(status=status, result=result, finished_at=now)
        )


__all__ = ["Budget", "Policy", "RunStore", "open_store"]
