"""The supervisor's view of ownership: executor registry, lost runs, approval deadlines."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from tui_agent.domain.models import Policy, RunStatus
from tui_agent.store.db import Database
from tui_agent.store.rows import approval_from_row
from tui_agent.store.tables import approvals_t, executors_t, runs_t
from tui_agent.store.txn import add_event_txn, decide_approval_txn


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def now(self) -> float:
        return float(self.db.clock())

    def register_executor(self, pid: int, supervisor_pid: int) -> None:
        now = self.now()
        with self.db.write() as conn:
            conn.execute(delete(executors_t).where(executors_t.c.pid == pid))
            conn.execute(
                insert(executors_t).values(
                    pid=pid, supervisor_pid=supervisor_pid, started_at=now, heartbeat_at=now
                )
            )

    def unregister_executor(self, pid: int) -> None:
        with self.db.write() as conn:
            conn.execute(delete(executors_t).where(executors_t.c.pid == pid))

    def release_runs_of(self, pid: int, why: str) -> list[str]:
        """An executor died: its runs become claimable at once (reason: executor lost)."""
        now = self.now()
        with self.db.write() as conn:
            ids = [
                r[0]
                for r in conn.execute(select(runs_t.c.id).where(runs_t.c.owner_pid == pid)).all()
            ]
            for run_id in ids:
                conn.execute(
                    update(runs_t)
                    .where(runs_t.c.id == run_id)
                    .values(
                        owner=None,
                        owner_pid=None,
                        lease_until=None,
                        lost_at=now,
                        revision=runs_t.c.revision + 1,
                        updated_at=now,
                    )
                )
                add_event_txn(conn, run_id, "lost", f"executor {pid} {why}; recovering", now)
            conn.execute(delete(executors_t).where(executors_t.c.pid == pid))
        return ids

    def recover_orphans(self, is_alive: Callable[[int], bool]) -> list[str]:
        """On supervisor start: free runs whose owner process is gone or whose lease ran out."""
        now = self.now()
        with self.db.read() as conn:
            owners = conn.execute(
                select(runs_t.c.owner_pid, runs_t.c.lease_until).where(runs_t.c.owner.is_not(None))
            ).all()
            registered = [r[0] for r in conn.execute(select(executors_t.c.pid)).all()]
        dead = {
            int(pid)
            for pid, lease in owners
            if pid is None or not is_alive(int(pid)) or (lease is not None and lease < now)
        }
        dead |= {pid for pid in registered if not is_alive(pid)}
        recovered: list[str] = []
        for pid in sorted(dead):
            recovered += self.release_runs_of(pid, "is gone")
        return recovered

    def runnable_count(self) -> int:
        """Runs that want an executor now."""
        now = self.now()
        query = (
            select(func.count())
            .select_from(runs_t)
            .where(
                (runs_t.c.status == RunStatus.QUEUED.value)
                | (
                    (runs_t.c.status == RunStatus.RUNNING.value)
                    & (runs_t.c.owner.is_(None) | (runs_t.c.lease_until < now))
                )
            )
        )
        with self.db.read() as conn:
            return int(conn.execute(query).scalar_one())

    def active_count(self) -> int:
        """Runs held by an executor right now."""
        with self.db.read() as conn:
            return len(conn.execute(select(runs_t.c.id).where(runs_t.c.owner.is_not(None))).all())

    def expire_approvals(self) -> tuple[list[str], float | None]:
        """Deny approvals left undecided past the run's approval_timeout_s.

        Returns the runs requeued and the next deadline still ahead (to keep the supervisor
        alive until then).
        """
        now = self.now()
        expired: list[str] = []
        next_deadline: float | None = None
        with self.db.write() as conn:
            rows = (
                conn.execute(
                    select(approvals_t, runs_t.c.policy_json)
                    .join(runs_t, runs_t.c.id == approvals_t.c.run_id)
                    .where(
                        approvals_t.c.status == "pending",
                        runs_t.c.status == RunStatus.WAITING_APPROVAL.value,
                    )
                )
                .mappings()
                .all()
            )
            for row in rows:
                timeout = Policy.from_dict(json.loads(row["policy_json"])).approval_timeout_s
                if not timeout:
                    continue
                deadline = row["created_at"] + timeout
                if deadline > now:
                    next_deadline = (
                        deadline if next_deadline is None else min(next_deadline, deadline)
                    )
                    continue
                self._expire_one_txn(conn, dict(row), now, timeout)
                expired.append(row["run_id"])
        return expired, next_deadline

    def _expire_one_txn(self, conn: Any, row: dict[str, Any], now: float, timeout: float) -> None:
        approval = approval_from_row(row)
        decide_approval_txn(
            conn,
            approval,
            approve=False,
            by="timeout",
            reason=f"no decision within {timeout:g}s",
            now=now,
        )
