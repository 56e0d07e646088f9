"""The supervisor's view of ownership: executor registry, lost runs, approval deadlines.

Plain `sqlite3` like the executor's journal: the supervisor never imports SQLAlchemy, so
after a crash it frees lost runs (and leaves both cores to the executor) sooner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tui_agent.domain.models import QUARANTINE_AFTER, Policy, RunStatus, StepStatus
from tui_agent.domain.reason import quarantine_reason
from tui_agent.store.db import Database
from tui_agent.store.rows import approval_from_row
from tui_agent.store.txn import (
    RUNNABLE,
    add_event_txn,
    deaths_in_a_row_txn,
    decide_approval_txn,
    in_queues,
    locking,
    runnable_params,
)

_RUNNABLE = f"SELECT count(*) FROM runs WHERE {RUNNABLE}"
_LOSE = (
    "UPDATE runs SET owner = NULL, owner_pid = NULL, owner_node = NULL, lease_until = NULL, "
    "lost_at = ?, revision = revision + 1, updated_at = ? WHERE id = ?"
)
_QUARANTINE = (
    "UPDATE runs SET status = ?, pause_reason = ?, owner = NULL, owner_pid = NULL, "
    "owner_node = NULL, lease_until = NULL, lost_at = NULL, revision = revision + 1, "
    "updated_at = ? WHERE id = ?"
)
_OPEN_CALL = (
    "SELECT seq, tool, arguments FROM steps WHERE run_id = ? AND status = ? ORDER BY seq LIMIT 1"
)
# The runs held by this machine's executors (runs of other machines are theirs to free, or
# anyone's to take once their lease ran out). Runs held before v5 have no node.
_OURS = "COALESCE(owner_node, '') = ?"
_PENDING_APPROVALS = (
    "SELECT approvals.*, runs.policy_json FROM approvals JOIN runs ON runs.id = approvals.run_id "
    "WHERE approvals.status = 'pending' AND runs.status = ?"
)


class LeaseStore:
    """One machine's supervisor: `node` names the machine (empty on a private store) and
    `queues` the runs it serves (None: every queue)."""

    def __init__(
        self, db: Database, *, node: str = "", queues: tuple[str, ...] | None = None
    ) -> None:
        self.db = db
        self.node = node
        self.queues = queues

    def now(self) -> float:
        return float(self.db.clock())

    def register_executor(self, pid: int, supervisor_pid: int) -> None:
        now = self.now()
        with self.db.raw_write() as cur:
            self._forget_txn(cur, pid)
            cur.execute(
                "INSERT INTO executors (pid, node, supervisor_pid, started_at, heartbeat_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (pid, self.node, supervisor_pid, now, now),
            )

    def unregister_executor(self, pid: int) -> None:
        with self.db.raw_write() as cur:
            self._forget_txn(cur, pid)

    def _forget_txn(self, cur: Any, pid: int) -> None:
        cur.execute("DELETE FROM executors WHERE pid = ? AND node = ?", (pid, self.node))

    def release_runs_of(self, pid: int, why: str, *, counts: bool = True) -> list[str]:
        """An executor died: its runs become claimable at once (reason: executor lost).

        A run whose executor has now died QUARANTINE_AFTER times in a row at the same step
        is quarantined instead (`needs_attention`, with that reason): claimed again, it
        would most likely only kill the next executor. A death the supervisor caused itself
        (a stop) does not count (`counts`), nor does it end the series."""
        now = self.now()
        with self.db.raw_write() as cur:
            sql = f"SELECT id FROM runs WHERE owner_pid = ? AND {_OURS} ORDER BY id"
            rows = cur.execute(sql + locking(cur), (pid, self.node)).fetchall()
            ids = [r[0] for r in rows]
            before = deaths_in_a_row_txn(cur, ids)
            for run_id in ids:
                step, open_call = self._current_step_txn(cur, run_id)
                last_step, deaths = before.get(run_id, (None, 0))
                deaths = (deaths if last_step == step else 0) + (1 if counts else 0)
                data = {"step": step, "deaths": deaths}
                if deaths >= QUARANTINE_AFTER:
                    reason = quarantine_reason(run_id, deaths, step, open_call)
                    status = RunStatus.NEEDS_ATTENTION
                    cur.execute(_QUARANTINE, (status.value, reason, now, run_id))
                    add_event_txn(cur, run_id, "status", reason, now, data, becomes=status)
                    continue
                cur.execute(_LOSE, (now, now, run_id))
                again = f" (death {deaths} in a row at step {step})" if deaths > 1 else ""
                message = f"executor {pid} {why}; recovering{again}"
                add_event_txn(cur, run_id, "lost", message, now, data)
            self._forget_txn(cur, pid)
        return ids

    def _current_step_txn(
        self, cur: Any, run_id: str
    ) -> tuple[int, tuple[str | None, str | None] | None]:
        """The step a run was at: a tool call still open (with its tool and arguments),
        else the next one (the model being asked)."""
        row = cur.execute(_OPEN_CALL, (run_id, StepStatus.STARTED.value)).fetchone()
        if row is not None:
            return int(row[0]), (row[1], row[2])
        next_seq = cur.execute("SELECT next_seq FROM runs WHERE id = ?", (run_id,)).fetchone()
        return int(next_seq[0]), None

    def lost_executors(self, is_alive: Callable[[int], bool]) -> list[int]:
        """On supervisor start: pids of owners and executors that are gone or whose lease ran
        out (their runs are freed with `release_runs_of`, after their processes end)."""
        now = self.now()
        with self.db.raw_read() as cur:
            owners = cur.execute(
                f"SELECT owner_pid, lease_until FROM runs WHERE owner IS NOT NULL AND {_OURS}",
                (self.node,),
            ).fetchall()
            registered = [
                r[0]
                for r in cur.execute(
                    "SELECT pid FROM executors WHERE node = ?", (self.node,)
                ).fetchall()
            ]
        dead = {
            int(pid)
            for pid, lease in owners
            if pid is not None and (not is_alive(int(pid)) or (lease is not None and lease < now))
        }
        dead |= {pid for pid in registered if not is_alive(pid)}
        return sorted(dead)

    def heartbeat_at(self, pid: int) -> float | None:
        """When this executor last beat (None: not registered yet, e.g. still importing)."""
        with self.db.raw_read() as cur:
            row = cur.execute(
                "SELECT heartbeat_at FROM executors WHERE pid = ? AND node = ?", (pid, self.node)
            ).fetchone()
        return None if row is None else float(row[0])

    def runnable_count(self) -> int:
        """Runs that want an executor now."""
        queue_sql, queue_params = in_queues(self.queues)
        params = (*runnable_params(self.now()), *queue_params)
        with self.db.raw_read() as cur:
            return int(cur.execute(_RUNNABLE + queue_sql, params).fetchone()[0])

    def active_count(self) -> int:
        """Runs held by an executor of this machine right now."""
        with self.db.raw_read() as cur:
            sql = f"SELECT count(*) FROM runs WHERE owner IS NOT NULL AND {_OURS}"
            return int(cur.execute(sql, (self.node,)).fetchone()[0])

    def expire_approvals(self) -> tuple[list[str], float | None]:
        """Deny approvals left undecided past the run's approval_timeout_s.

        Returns the runs requeued and the next deadline still ahead (to keep the supervisor
        alive until then).
        """
        now = self.now()
        expired: list[str] = []
        next_deadline: float | None = None
        with self.db.raw_write() as cur:
            params = (RunStatus.WAITING_APPROVAL.value,)
            # Several supervisors may look at once: each decides only rows no other holds.
            lock = " FOR UPDATE OF approvals, runs SKIP LOCKED" if locking(cur) else ""
            rows = cur.execute(_PENDING_APPROVALS + lock, params).fetchall()
            for row in rows:
                timeout = Policy.from_json(row["policy_json"]).approval_timeout_s
                if not timeout:
                    continue
                deadline = row["created_at"] + timeout
                if deadline > now:
                    next_deadline = (
                        deadline if next_deadline is None else min(next_deadline, deadline)
                    )
                    continue
                self._expire_one_txn(cur, row, now, timeout)
                expired.append(row["run_id"])
        return expired, next_deadline

    def _expire_one_txn(self, cur: Any, row: Any, now: float, timeout: float) -> None:
        decide_approval_txn(
            cur,
            approval_from_row(row),
            approve=False,
            by="timeout",
            reason=f"no decision within {timeout:g}s",
            now=now,
        )
