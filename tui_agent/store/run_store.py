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
    ColumnElement,
    Connection,
    and_,
    func,
    insert,
    literal_column,
    or_,
    select,
    table,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from tui_agent.domain.errors import BadInput, InvalidTransition, UnknownRun
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
from tui_agent.store.db import Database, open_database
from tui_agent.store.rows import (
    SUMMARY_COLUMNS,
    approval_from_row,
    approvals_t,
    artifacts_t,
    event_from_row,
    events_t,
    run_from_row,
    runs_t,
    step_from_row,
    steps_t,
)
from tui_agent.store.txn import add_event_txn, decide_approval_txn, load_run_txn

_FINAL = [s.value for s in FINAL_STATUSES]
_HEX = set("0123456789abcdef")


def _live_run_with_key(conn: Connection, key: str | None) -> Run | None:
    """The run holding an idempotency key, while it is not final."""
    if not key:
        return None
    row = (
        conn.execute(select(runs_t).where(runs_t.c.idem_key == key, runs_t.c.status.not_in(_FINAL)))
        .mappings()
        .first()
    )
    return run_from_row(row) if row is not None else None


COMMON_MATCHES = 2000


def _fts_phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _text_match(conn: Connection, text: str) -> ColumnElement[bool]:
    """Goal contains `text` (case-insensitive), or the id starts with it.

    A rare text (three characters or more) is found through the trigram index and sorted;
    a common one is cheaper to find by walking the newest runs until the page is full.
    """
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    goal: ColumnElement[bool] = runs_t.c.goal.like(f"%{escaped}%", escape="\\")
    if len(text) >= 3:
        fts = (
            select(literal_column("rowid"))
            .select_from(table("runs_fts"))
            .where(literal_column("runs_fts").op("MATCH")(_fts_phrase(text)))
        )
        hits = conn.execute(
            select(func.count()).select_from(fts.limit(COMMON_MATCHES + 1).subquery())
        ).scalar_one()
        if hits <= COMMON_MATCHES:
            goal = literal_column("runs.rowid").in_(fts)
    prefix = text.lower()
    if set(prefix) <= _HEX:
        return or_(goal, and_(runs_t.c.id >= prefix, runs_t.c.id < prefix + "g"))
    return goal


def open_store(
    path: Path,
    *,
    synchronous: str = "FULL",
    pool_size: int = 5,
    clock: object = None,
    new_id: Callable[[], str] | None = None,
    busy_timeout_s: float = 15.0,
) -> RunStore:
    db = open_database(
        path,
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
        # Injectable so seeded databases (snapshot tests, benchmarks) are reproducible.
        self.new_id = new_id or (lambda: uuid.uuid4().hex)

    @property
    def path(self) -> Path:
        return self.db.path

    def now(self) -> float:
        return float(self.db.clock())

    def close(self) -> None:
        self.db.dispose()

    # ---- reads -------------------------------------------------------------------------

    def resolve_id(self, prefix: str) -> str:
        """The full id for an id or unique prefix; UnknownRun or BadInput (ambiguous)."""
        prefix = prefix.strip().lower()
        if not prefix or not all(c in "0123456789abcdef" for c in prefix):
            raise UnknownRun(f"no run {prefix!r}")
        with self.db.read() as conn:
            rows = conn.execute(
                select(runs_t.c.id)
                .where(runs_t.c.id >= prefix, runs_t.c.id < prefix + "g")
                .limit(2)
            ).all()
        if not rows:
            raise UnknownRun(f"no run {prefix!r}")
        if len(rows) > 1:
            raise BadInput(f"run prefix {prefix!r} is ambiguous; give more characters")
        return str(rows[0][0])

    def get_run(self, run_id: str) -> Run:
        with self.db.read() as conn:
            return load_run_txn(conn, run_id)

    def list_runs(
        self,
        *,
        statuses: list[str] | None = None,
        text: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        waiting_only: bool = False,
    ) -> list[Run]:
        """A page of runs, newest first; `before` is the (created_at, id) of the last row seen."""
        query = select(*SUMMARY_COLUMNS)
        if statuses:
            query = query.where(runs_t.c.status.in_(statuses))
        if waiting_only:
            query = query.where(runs_t.c.status.in_(["waiting_approval", "needs_attention"]))
        if before is not None:
            query = query.where(tuple_(runs_t.c.created_at, runs_t.c.id) < tuple_(*before))
        query = query.order_by(runs_t.c.created_at.desc(), runs_t.c.id.desc()).limit(limit)
        with self.db.read() as conn:
            if text:
                query = query.where(_text_match(conn, text))
            return [run_from_row(dict(r)) for r in conn.execute(query).mappings()]

    def count_runs(self, *, statuses: list[str] | None = None) -> int:
        query = select(func.count()).select_from(runs_t)
        if statuses:
            query = query.where(runs_t.c.status.in_(statuses))
        with self.db.read() as conn:
            return int(conn.execute(query).scalar_one())

    def count_waiting(self) -> int:
        return self.count_runs(statuses=["waiting_approval", "needs_attention"])

    def steps(self, run_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[Step]:
        query = (
            select(steps_t)
            .where(steps_t.c.run_id == run_id, steps_t.c.seq > after_seq)
            .order_by(steps_t.c.seq)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.db.read() as conn:
            return [step_from_row(r) for r in conn.execute(query).mappings()]

    def step(self, run_id: str, seq: int) -> Step | None:
        with self.db.read() as conn:
            row = (
                conn.execute(
                    select(steps_t).where(steps_t.c.run_id == run_id, steps_t.c.seq == seq)
                )
                .mappings()
                .first()
            )
        return step_from_row(row) if row else None

    def events(self, run_id: str, *, after_id: int = 0) -> list[Event]:
        query = (
            select(events_t)
            .where(events_t.c.run_id == run_id, events_t.c.id > after_id)
            .order_by(events_t.c.id)
        )
        with self.db.read() as conn:
            return [event_from_row(r) for r in conn.execute(query).mappings()]

    def approvals(self, run_id: str, *, status: str | None = None) -> list[Approval]:
        query = select(approvals_t).where(approvals_t.c.run_id == run_id)
        if status:
            query = query.where(approvals_t.c.status == status)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(approvals_t.c.created_at)).mappings()
            return [approval_from_row(r) for r in rows]

    def pending_approval(self, run_id: str) -> Approval | None:
        pending = self.approvals(run_id, status="pending")
        return pending[0] if pending else None

    def in_doubt_step(self, run_id: str) -> Step | None:
        """The tool call journaled as started but never finished, if any."""
        with self.db.read() as conn:
            row = (
                conn.execute(
                    select(steps_t)
                    .where(steps_t.c.run_id == run_id, steps_t.c.status == StepStatus.STARTED.value)
                    .order_by(steps_t.c.seq)
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return step_from_row(row) if row else None

    def artifact(self, artifact_id: str) -> tuple[str, bytes] | None:
        """(run_id, content) of an artifact."""
        with self.db.read() as conn:
            row = conn.execute(
                select(artifacts_t.c.run_id, artifacts_t.c.content).where(
                    artifacts_t.c.id == artifact_id
                )
            ).first()
        return (str(row[0]), bytes(row[1])) if row else None

    # ---- person-driven changes ---------------------------------------------------------

    def create_run(self, spec: RunSpec) -> tuple[Run, bool]:
        """Insert a queued run; with an idempotency key, return the live run holding it."""
        now = self.now()
        run_id = self.new_id()
        try:
            with self.db.write() as conn:
                existing = _live_run_with_key(conn, spec.idem_key)
                if existing is not None:
                    return existing, False
                conn.execute(
                    insert(runs_t).values(
                        id=run_id,
                        idem_key=spec.idem_key,
                        status=RunStatus.QUEUED.value,
                        goal=spec.goal,
                        workspace=spec.workspace,
                        model=spec.model,
                        base_url=spec.base_url,
                        budget_json=json.dumps(spec.budget.to_dict()),
                        policy_json=json.dumps(spec.policy.to_dict()),
                        state_json=json.dumps({}),
                        usage_steps=0,
                        usage_tokens=0,
                        usage_wall_s=0.0,
                        cancel_requested=False,
                        retry_attempt=0,
                        retry_max=0,
                        next_seq=1,
                        revision=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
                add_event_txn(conn, run_id, "created", f"run created with model {spec.model}", now)
                return load_run_txn(conn, run_id), True
        except IntegrityError:
            # A concurrent start with the same key won the race: return its run.
            with self.db.read() as conn:
                existing = _live_run_with_key(conn, spec.idem_key)
            if existing is not None:
                return existing, False
            raise

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
        with self.db.write() as conn:
            run = load_run_txn(conn, run_id)
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
            if approve and always and pending.tool not in policy.always_allow:
                policy = replace(policy, always_allow=(*policy.always_allow, pending.tool))
            decide_approval_txn(
                conn, pending, approve=approve, by=by, reason=reason, now=now, policy=policy
            )
            return approval_from_row(
                conn.execute(select(approvals_t).where(approvals_t.c.id == pending.id))
                .mappings()
                .one()
            )

    def cancel(self, run_id: str, *, by: str = "user") -> Run:
        """Cancel a run; an executor holding it stops after its current step."""
        now = self.now()
        with self.db.write() as conn:
            run = load_run_txn(conn, run_id)
            if run.status.is_final:
                raise InvalidTransition(f"run {run_id[:8]} is already {run.status.value}")
            values: dict[str, object] = {"revision": runs_t.c.revision + 1, "updated_at": now}
            if run.status is RunStatus.RUNNING and run.owner is not None:
                values["cancel_requested"] = True
                add_event_txn(conn, run_id, "cancel", f"cancel requested by {by}", now)
            elif run.status is RunStatus.NEEDS_ATTENTION:
                values.update(
                    status=RunStatus.FAILED.value, error=f"in-doubt call failed by {by}", owner=None
                )
                self._mark_in_doubt_txn(
                    conn,
                    run_id,
                    "error",
                    "failed by the user after an interruption; the outcome is unknown",
                    now,
                )
                add_event_txn(conn, run_id, "status", f"failed by {by} (call in doubt)", now)
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
                add_event_txn(conn, run_id, "status", f"cancelled by {by}", now)
            conn.execute(update(runs_t).where(runs_t.c.id == run_id).values(**values))
            return load_run_txn(conn, run_id)

    def resume(
        self,
        run_id: str,
        *,
        max_steps: int | None = None,
        max_llm_tokens: int | None = None,
        max_wall_time_s: float | None = None,
    ) -> Run:
        """Requeue a paused or failed run, with a larger budget when one is spent."""
        now = self.now()
        with self.db.write() as conn:
            run = load_run_txn(conn, run_id)
            if run.status not in (RunStatus.PAUSED, RunStatus.FAILED):
                hint = {
                    RunStatus.WAITING_APPROVAL: "; approve or deny it instead",
                    RunStatus.NEEDS_ATTENTION: "; use `resolve RUN retry|skip` instead",
                }.get(run.status, "")
                raise InvalidTransition(
                    f"run {run_id[:8]} is {run.status.value}; only paused or failed runs "
                    f"can be resumed{hint}"
                )
            budget = run.budget
            changes: dict[str, float | int] = {}
            if max_steps is not None:
                changes["max_steps"] = max_steps
            if max_llm_tokens is not None:
                changes["max_llm_tokens"] = max_llm_tokens
            if max_wall_time_s is not None:
                changes["max_wall_time_s"] = max_wall_time_s
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
            add_event_txn(conn, run_id, "status", f"resumed{note}", now)
            return load_run_txn(conn, run_id)

    def resolve(self, run_id: str, choice: str, *, by: str = "user") -> Run:
        """Decide an in-doubt call: retry it, skip it (outcome unknown) or fail the run."""
        if choice not in ("retry", "skip", "fail"):
            raise BadInput(f"choice must be retry, skip or fail, not {choice!r}")
        if choice == "fail":
            return self.cancel(run_id, by=by)
        now = self.now()
        with self.db.write() as conn:
            run = load_run_txn(conn, run_id)
            if run.status is not RunStatus.NEEDS_ATTENTION:
                raise InvalidTransition(
                    f"run {run_id[:8]} has no call in doubt (status {run.status.value})"
                )
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
            add_event_txn(conn, run_id, "resolve", f"in-doubt call: {choice} chosen by {by}", now)
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
