"""The executor's writes: claim, heartbeat and the durable step records, in plain `sqlite3`
(the executor never imports SQLAlchemy: a restart after a crash is one Python start-up
plus the model client away from the next step).

Every write names the owner token and changes nothing unless that owner still holds the run
(`LeaseLost` otherwise), so a second executor can never record a step of a run it lost.
Each step is one transaction with the run's checkpoint (usage, next seq, revision).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from typing import Any

from tui_agent import failpoints
from tui_agent.domain.errors import LeaseLost, UnknownRun
from tui_agent.domain.models import (
    QUARANTINE_AFTER,
    AgentState,
    Approval,
    Run,
    RunStatus,
    Step,
    StepKind,
    StepStatus,
)
from tui_agent.store.db import Database
from tui_agent.store.protocols import ArtifactData
from tui_agent.store.reader import Reader
from tui_agent.store.rows import approval_from_row, run_from_row, step_from_row
from tui_agent.store.txn import (
    INSERT_STEP,
    ORPHANED,
    add_event_txn,
    deaths_in_a_row_txn,
    in_queues,
    insert_note_step_txn,
    load_run_txn,
    locking,
)

# The hot path: plain SQL strings, compiled once by SQLite's statement cache (and prepared
# by PostgreSQL after a few uses). Every write that advances a run is fenced by its owner
# and by the epoch of the claim (`_FENCE`): a writer that lost the run commits nothing.
_FENCE = "id = ? AND owner = ? AND epoch = ?"
# ?1 is the number of new steps: it counts into the usage and moves the next seq alike.
_CHECKPOINT = (
    "UPDATE runs SET usage_steps = usage_steps + ?1, usage_tokens = usage_tokens + ?2, "
    "usage_wall_s = usage_wall_s + ?3, revision = revision + 1, updated_at = ?4, "
    "retry_attempt = 0, retry_at = NULL, retry_error = NULL, lost_at = NULL, "
    "next_seq = next_seq + ?1 WHERE id = ?5 AND owner = ?6 AND epoch = ?7 "
    "RETURNING next_seq - 1"
)
_FINISH_STEP = (
    "UPDATE steps SET status = ?, result = ?, finished_at = ?, artifact_id = ? "
    "WHERE run_id = ? AND seq = ? AND status = 'started'"
)
# PostgreSQL's form of a new step: checkpoint and step row in one statement, so in one
# round trip and its own transaction; no row when the fence fails (the lease is lost).
_PG_NEW_STEP = (
    "WITH c AS (UPDATE runs SET usage_steps = usage_steps + 1, usage_tokens = usage_tokens + "
    "?, usage_wall_s = usage_wall_s + ?, revision = revision + 1, updated_at = ?, "
    "retry_attempt = 0, retry_at = NULL, retry_error = NULL, lost_at = NULL, "
    "next_seq = next_seq + 1 WHERE id = ? AND owner = ? AND epoch = ? "
    "RETURNING id, next_seq - 1 AS seq, updated_at) "
    "INSERT INTO steps (run_id, seq, kind, status, tool, call_id, arguments, result, "
    "artifact_id, llm_seq, payload_json, tokens, created_at, finished_at) "
    "SELECT id, seq, ?, ?, ?, ?, ?, ?, NULL, ?::integer, ?, ?::integer, updated_at, "
    "?::double precision FROM c RETURNING seq"
)
_PG_HEARTBEAT = (
    "WITH e AS (UPDATE executors SET heartbeat_at = ? WHERE pid = ? AND node = ?) "
    "UPDATE runs SET lease_until = ?, usage_wall_s = usage_wall_s + w.wall "
    "FROM unnest(?::text[], ?::float8[], ?::bigint[]) AS w (id, wall, epoch) "
    "WHERE runs.id = w.id AND runs.owner = ? AND runs.epoch = w.epoch "
    "RETURNING runs.id, runs.cancel_requested"
)
# A tool's result with its checkpoint: both or neither (the step must still be started).
_PG_FINISH_TOOL = (
    "WITH c AS (UPDATE runs SET usage_wall_s = usage_wall_s + ?, revision = revision + 1, "
    "updated_at = ?, retry_attempt = 0, retry_at = NULL, retry_error = NULL, lost_at = NULL "
    "WHERE id = ? AND owner = ? AND epoch = ? AND EXISTS (SELECT 1 FROM steps WHERE "
    "steps.run_id = runs.id AND steps.seq = ? AND steps.status = 'started') RETURNING id) "
    "UPDATE steps SET status = ?, result = ?, finished_at = ?, artifact_id = NULL FROM c "
    "WHERE steps.run_id = c.id AND steps.seq = ? RETURNING steps.seq"
)
# A run and its steps after a seq in one round trip (the steps as one JSON array).
_PG_LOAD = (
    "SELECT runs.*, (SELECT json_agg(s ORDER BY s.seq) FROM steps s "
    "WHERE s.run_id = runs.id AND s.seq > ?) AS steps_after FROM runs WHERE id = ?"
)
# The newest compaction's step (ix_steps_compactions): what a request starts from.
_NEWEST_COMPACTION = (
    "SELECT payload_json FROM steps WHERE run_id = ? AND kind = 'compaction' "
    "ORDER BY seq DESC LIMIT 1"
)
# A compaction is a step (it takes the next seq) but no budget step.
_COMPACTION_CHECKPOINT = (
    "UPDATE runs SET usage_wall_s = usage_wall_s + ?, revision = revision + 1, "
    "updated_at = ?, next_seq = next_seq + 1 WHERE id = ? AND owner = ? AND epoch = ? "
    "RETURNING next_seq - 1"
)
_TAKE = (
    "UPDATE runs SET status = ?, owner = ?, owner_pid = ?, owner_node = ?, lease_until = ?, "
    "epoch = epoch + 1, revision = revision + 1, updated_at = ? WHERE id = ? RETURNING epoch"
)
_RELEASE = (
    "UPDATE runs SET status = ?, owner = NULL, owner_pid = NULL, owner_node = NULL, "
    f"lease_until = NULL, revision = revision + 1, updated_at = ?{{extra}} WHERE {_FENCE}"
)


class StepJournal:
    """What one executor process writes; `owner` is its token for the runs it holds."""

    def __init__(
        self,
        db: Database,
        owner: str,
        pid: int,
        *,
        node: str = "",
        queues: tuple[str, ...] | None = None,
    ) -> None:
        self.db = db
        self.owner = owner
        self.pid = pid
        self.node = node
        self.queues = queues  # None: runs of every queue
        self.reader = Reader.of(db)
        # The epoch each held run was claimed under (the fence of every write).
        self._epochs: dict[str, int] = {}
        # A held run on its last try before quarantine (its executor died one time fewer
        # than QUARANTINE_AFTER in a row at its step) that has recorded no step since: the
        # executor takes no other such run meanwhile, so that a death is its own doing.
        self._last_try: set[str] = set()

    def holds(self, run_id: str) -> bool:
        """This journal claimed the run and has not let go of it since."""
        return run_id in self._epochs

    def _fence(self, run_id: str) -> tuple[str, str, int]:
        return (run_id, self.owner, self._epochs.get(run_id, -1))

    def now(self) -> float:
        return float(self.db.clock())

    # ---- ownership ---------------------------------------------------------------------

    def claim(
        self,
        limit: int,
        lease_s: float,
        working: Collection[str] = (),
        *,
        orphans: int | None = None,
    ) -> list[str]:
        """Take runnable runs: first up to `orphans` (default `limit`) runs left running by
        an executor that died or lost its lease, then queued runs while fewer than `limit`
        were taken. An executor may let `orphans` exceed its free places: a dead machine's
        runs were already under way and go on at once, ahead of the queue.

        `working` are the runs this executor still advances: their lease may have run out
        (a stalled heartbeat), but taking them again would start a second thread on the
        same run under the same owner, which the lease fence cannot tell apart."""
        orphans = limit if orphans is None else orphans
        if max(limit, orphans) <= 0:
            return []
        now = self.now()
        queue_sql, queue_params = in_queues(self.queues)
        skip = f" AND id NOT IN ({', '.join('?' * len(working))})" if working else ""
        # Several executors (and machines) claim at once: each skips the rows another is
        # taking (PostgreSQL); SQLite's single writer needs no lock.
        lock = " FOR UPDATE SKIP LOCKED" if self._pg else ""
        orphan_sql = (
            f"SELECT id FROM runs WHERE {ORPHANED}{queue_sql}{skip} ORDER BY created_at LIMIT ?"
        )
        queued_sql = f"SELECT id FROM runs WHERE status = ?{queue_sql} ORDER BY created_at LIMIT ?"
        orphan_params = (RunStatus.RUNNING.value, now, *queue_params, *working)
        queued_params = (RunStatus.QUEUED.value, *queue_params)
        with self.db.raw_read() as cur:  # most polls find nothing: no write lock for that
            wanted = cur.execute(orphan_sql, (*orphan_params, 1)).fetchone() is not None
            if limit > 0 and not wanted:
                wanted = cur.execute(queued_sql, (*queued_params, 1)).fetchone() is not None
        if not wanted:
            return []
        taken: dict[str, int] = {}
        with self.db.raw_write() as cur:
            rows = cur.execute(orphan_sql + lock, (*orphan_params, orphans)).fetchall()
            ids = self._admit_orphans_txn(cur, [r[0] for r in rows], working)
            room = limit - len(ids)
            if room > 0:
                rows = cur.execute(queued_sql + lock, (*queued_params, room)).fetchall()
                ids += [r[0] for r in rows]
            for run_id in ids:
                taken[run_id] = self._take_txn(cur, run_id, lease_s, now)
        self._epochs.update(taken)
        return ids

    def _admit_orphans_txn(
        self, cur: Any, orphans: list[str], working: Collection[str]
    ) -> list[str]:
        """The orphans to take: all of them, except that of the runs on their last try
        before quarantine at most one is held here at a time. Deaths in a row at one step
        are counted for every run the dead executor held; this keeps a run that happened to
        share it with the culprit twice from being quarantined with it."""
        self._last_try &= set(working)  # (those whose thread ended are no longer held)
        deaths = deaths_in_a_row_txn(cur, orphans)
        admitted = []
        for run_id in orphans:
            if deaths.get(run_id, (0, 0))[1] >= QUARANTINE_AFTER - 1:
                if self._last_try:
                    continue  # another executor may take it, or this one soon
                self._last_try.add(run_id)
            admitted.append(run_id)
        return admitted

    def _progressed(self, run_id: str) -> None:
        """The run recorded a step: its death count no longer applies."""
        self._last_try.discard(run_id)

    def _let_go(self, run_id: str) -> None:
        """Let go: a new claim brings a new epoch."""
        self._epochs.pop(run_id, None)
        self._last_try.discard(run_id)

    def _take_txn(self, cur: Any, run_id: str, lease_s: float, now: float) -> int:
        """Hold the run under a new epoch; returns that epoch."""
        params = (RunStatus.RUNNING.value, self.owner, self.pid, self.node, now + lease_s, now)
        epoch = int(cur.execute(_TAKE, (*params, run_id)).fetchone()[0])
        where = f" on {self.node}" if self.node else ""
        add_event_txn(
            cur,
            run_id,
            "claimed",
            f"executor {self.pid}{where} took the run",
            now,
            {"epoch": epoch, "node": self.node, "pid": self.pid},
            becomes=RunStatus.RUNNING,
        )
        return epoch

    @property
    def _pg(self) -> bool:
        return self.db.dialect == "postgresql"

    def heartbeat(self, walls: dict[str, float], lease_s: float) -> dict[str, bool]:
        """Extend leases and add active time; returns {run_id: cancel_requested} still held."""
        now = self.now()
        if self._pg:  # every lease in one statement: a hundred runs are one round trip
            ids = sorted(walls)
            params = (
                now,
                self.pid,
                self.node,
                now + lease_s,
                ids,
                [walls[i] for i in ids],
                [self._epochs.get(i, -1) for i in ids],
                self.owner,
            )
            with self.db.raw_statement() as cur:
                rows = cur.execute(_PG_HEARTBEAT, params).fetchall()
            return {r[0]: bool(r[1]) for r in rows}
        held: dict[str, bool] = {}
        with self.db.raw_write() as cur:
            for run_id, wall in sorted(walls.items()):  # one lock order: no deadlock
                row = cur.execute(
                    "UPDATE runs SET lease_until = ?, usage_wall_s = usage_wall_s + ? "
                    f"WHERE {_FENCE} RETURNING cancel_requested",
                    (now + lease_s, wall, *self._fence(run_id)),
                ).fetchone()
                if row is not None:
                    held[run_id] = bool(row[0])
            cur.execute(
                "UPDATE executors SET heartbeat_at = ? WHERE pid = ? AND node = ?",
                (now, self.pid, self.node),
            )
        return held

    def load(self, run_id: str, *, after_seq: int | None = None) -> tuple[Run, list[Step]]:
        """The run and its steps after `after_seq`; on a (re)start (None), those from its
        newest compaction's cut on (all of them if it has none): resume reads a bounded
        window, however many steps the run has done."""
        if after_seq is None:
            after_seq = self.compacted_through(run_id)
        if self._pg:
            with self.db.raw_statement() as cur:
                row = cur.execute(_PG_LOAD, (after_seq, run_id)).fetchone()
            if row is None:
                raise UnknownRun(f"no run {run_id}")
            return run_from_row(row), [step_from_row(s) for s in row["steps_after"] or ()]
        with self.db.raw_read() as cur:
            run = load_run_txn(cur, run_id)
            rows = cur.execute(
                "SELECT * FROM steps WHERE run_id = ? AND seq > ? ORDER BY seq",
                (run_id, after_seq),
            ).fetchall()
            return run, [step_from_row(r) for r in rows]

    def compacted_through(self, run_id: str) -> int:
        """The last seq the run's newest compaction folded in (0: none)."""
        with self.db.raw_read() as cur:
            row = cur.execute(_NEWEST_COMPACTION, (run_id,)).fetchone()
        if row is None:
            return 0
        return int(json.loads(row[0]).get("through_seq", 0))

    def record_compaction(self, run_id: str, payload: dict[str, Any], wall: float) -> int:
        """Older turns folded into a summary. Under the lease like every step: once this
        commits, the same turns are never folded again (the next requests start here)."""
        body = json.dumps(payload)
        now = self.now()
        with self.db.raw_write() as cur:
            row = cur.execute(_COMPACTION_CHECKPOINT, (wall, now, *self._fence(run_id))).fetchone()
            if row is None:
                raise LeaseLost(run_id)
            seq = int(row[0])
            failpoints.hit("txn.compaction", run_id)  # crash tests: mid-transaction
            insert_note_step_txn(cur, run_id, seq, StepKind.COMPACTION.value, body, now)
        self._progressed(run_id)
        return seq

    def restart_in_doubt(self, run_id: str, seq: int, why: str) -> None:
        """Consume a person's 'retry' before re-running, so a second crash asks again."""
        now = self.now()
        with self.db.raw_write() as cur:
            self._checkpoint_txn(cur, run_id, tokens=0, wall=0.0, now=now)
            cur.execute(
                "UPDATE steps SET payload_json = ? WHERE run_id = ? AND seq = ?",
                (json.dumps({"rerun": why}), run_id, seq),
            )
            add_event_txn(
                cur, run_id, "in_doubt", f"re-running interrupted call (step {seq}): {why}", now
            )

    def approval_for(self, run_id: str, llm_seq: int, call_id: str) -> Approval | None:
        with self.db.raw_read() as cur:
            row = cur.execute(
                "SELECT * FROM approvals WHERE run_id = ? AND llm_seq = ? AND call_id = ? "
                "ORDER BY created_at DESC LIMIT 1",
                (run_id, llm_seq, call_id),
            ).fetchone()
        return approval_from_row(row) if row else None

    # ---- durable steps -----------------------------------------------------------------

    def _checkpoint_txn(
        self,
        cur: Any,
        run_id: str,
        *,
        tokens: int,
        wall: float,
        now: float,
        new_steps: int = 0,
    ) -> int:
        """Usage, revision and next seq in one statement, if this executor still holds the
        run; returns the seq of the step being added (when `new_steps` is 1)."""
        params = (new_steps, tokens, wall, now, *self._fence(run_id))
        row = cur.execute(_CHECKPOINT, params).fetchone()
        if row is None:
            raise LeaseLost(run_id)
        return int(row[0])

    def _new_step(
        self,
        run_id: str,
        *,
        kind: str,
        status: str,
        tokens: int,
        wall: float,
        finished: bool,
        payload: dict[str, Any] | None = None,
        tool: str | None = None,
        call_id: str | None = None,
        arguments: str | None = None,
        result: str | None = None,
        llm_seq: int | None = None,
    ) -> int:
        """Insert one step with its checkpoint (usage +1 step) in one transaction.

        The hot path: the payload is encoded before the write lock is taken.
        """
        body = json.dumps(payload) if payload else "{}"
        now = self.now()
        finished_at = now if finished else None
        if self._pg:
            fence = self._fence(run_id)
            values = (tokens, wall, now, *fence, kind, status, tool, call_id, arguments, result)
            with self.db.raw_statement() as cur:
                params = (*values, llm_seq, body, tokens, finished_at)
                row = cur.execute(_PG_NEW_STEP, params).fetchone()
            if row is None:
                raise LeaseLost(run_id)
            self._progressed(run_id)
            return int(row[0])
        with self.db.raw_write() as cur:
            seq = self._checkpoint_txn(cur, run_id, tokens=tokens, wall=wall, now=now, new_steps=1)
            cur.execute(
                INSERT_STEP,
                (
                    run_id,
                    seq,
                    kind,
                    status,
                    tool,
                    call_id,
                    arguments,
                    result,
                    None,
                    llm_seq,
                    body,
                    tokens,
                    now,
                    finished_at,
                ),
            )
        self._progressed(run_id)
        return seq

    def record_llm_reply(
        self, run_id: str, payload: dict[str, Any], tokens: int, wall: float
    ) -> int:
        """Promise 2: once this commits, the reply is never requested again."""
        return self._new_step(
            run_id,
            tokens=tokens,
            wall=wall,
            kind=StepKind.LLM.value,
            status=StepStatus.DONE.value,
            payload=payload,
            finished=True,
        )

    def journal_tool_start(
        self, run_id: str, *, llm_seq: int, call_id: str, tool: str, arguments: str, wall: float
    ) -> int:
        """Promise 3: the call is on record as started before it runs."""
        return self._new_step(
            run_id,
            tokens=0,
            wall=wall,
            kind=StepKind.TOOL.value,
            status=StepStatus.STARTED.value,
            finished=False,
            tool=tool,
            call_id=call_id,
            arguments=arguments,
            llm_seq=llm_seq,
        )

    def finish_tool(
        self,
        run_id: str,
        seq: int,
        *,
        status: StepStatus,
        result: str,
        wall: float,
        artifact: ArtifactData | None = None,
        state: AgentState | None = None,
    ) -> None:
        """The result, any artifact and any state patch commit together with the checkpoint."""
        now = self.now()
        if self._pg and artifact is None and state is None:  # the common case: one statement
            failpoints.hit("txn.finish_tool", run_id)  # crash tests: nothing committed yet
            params = (wall, now, *self._fence(run_id), seq, status.value, result, now, seq)
            with self.db.raw_statement() as cur:
                if cur.execute(_PG_FINISH_TOOL, params).fetchone() is None:
                    raise LeaseLost(run_id)
            self._progressed(run_id)
            return
        with self.db.raw_write() as cur:
            self._checkpoint_txn(cur, run_id, tokens=0, wall=wall, now=now)
            if artifact is not None:
                cur.execute(
                    "INSERT INTO artifacts (id, run_id, seq, size, summary, content, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        artifact.id,
                        run_id,
                        seq,
                        len(artifact.content),
                        artifact.summary,
                        artifact.content,
                        now,
                    ),
                )
                state = state or load_run_txn(cur, run_id).state
                state.artifacts.append(
                    {
                        "artifact_id": artifact.id,
                        "type": "tool_result",
                        "summary": artifact.summary,
                        "bytes": len(artifact.content),
                    }
                )
            if state is not None:
                cur.execute(
                    "UPDATE runs SET state_json = ? WHERE id = ?",
                    (json.dumps(state.to_dict()), run_id),
                )
            failpoints.hit("txn.finish_tool", run_id)  # crash tests: mid-transaction
            cur.execute(
                _FINISH_STEP,
                (status.value, result, now, artifact.id if artifact else None, run_id, seq),
            )
            if cur.rowcount != 1:
                raise LeaseLost(run_id)
        self._progressed(run_id)

    def record_tool_outcome(
        self,
        run_id: str,
        *,
        llm_seq: int,
        call_id: str,
        tool: str,
        arguments: str,
        status: StepStatus,
        result: str,
        wall: float,
    ) -> int:
        """A call that never ran (malformed or denied) is still one answered step."""
        return self._new_step(
            run_id,
            tokens=0,
            wall=wall,
            kind=StepKind.TOOL.value,
            status=status.value,
            tool=tool,
            call_id=call_id,
            arguments=arguments,
            llm_seq=llm_seq,
            result=result,
            finished=True,
        )

    def request_approval(
        self,
        run_id: str,
        *,
        llm_seq: int,
        call_id: str,
        tool: str,
        arguments: str,
        args_hash: str,
        risk: str,
        model_reason: str,
        wall: float,
        reason_text: str,
    ) -> Approval:
        """The run waits for a person: the approval row and the status change are one commit."""
        now = self.now()
        approval_id = uuid.uuid4().hex
        with self.db.raw_write() as cur:
            self._checkpoint_txn(cur, run_id, tokens=0, wall=wall, now=now)
            cur.execute(
                "UPDATE approvals SET status = 'superseded', decided_at = ?, "
                "decided_by = 'system' WHERE run_id = ? AND status = 'pending'",
                (now, run_id),
            )
            cur.execute(
                "INSERT INTO approvals (id, run_id, llm_seq, call_id, tool, arguments, "
                "args_hash, risk, model_reason, status, created_at, always) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, FALSE)",
                (
                    approval_id,
                    run_id,
                    llm_seq,
                    call_id,
                    tool,
                    arguments,
                    args_hash,
                    risk,
                    model_reason,
                    now,
                ),
            )
            failpoints.hit("txn.request_approval", run_id)  # crash tests: mid-transaction
            self._release_txn(
                cur,
                run_id,
                RunStatus.WAITING_APPROVAL,
                now,
                pause_reason=reason_text,
                waiting_tool=tool,
            )
            add_event_txn(
                cur,
                run_id,
                "approval",
                f"waiting for approval of {tool}",
                now,
                becomes=RunStatus.WAITING_APPROVAL,
            )
            row = cur.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        self._let_go(run_id)
        return approval_from_row(row)

    def _release_txn(
        self, cur: Any, run_id: str, status: RunStatus, now: float, **values: Any
    ) -> None:
        """Let go of the run in `status`; `values` are further columns (names are ours)."""
        extra = "".join(f", {column} = ?" for column in values)
        cur.execute(
            _RELEASE.format(extra=extra),
            (status.value, now, *values.values(), *self._fence(run_id)),
        )
        if cur.rowcount != 1:
            raise LeaseLost(run_id)  # nothing of this transaction may stand

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        wall: float,
        message: str,
        result: str | None = None,
        error: str | None = None,
        pause_reason: str | None = None,
        unless_message_after: int | None = None,
    ) -> bool:
        """Leave the run in `status` and let go of it (completed, paused, failed, …).

        With `unless_message_after` (the last seq the caller has read), nothing is written
        and False returned when a person's message came after it: a run must not complete
        over a message it has not answered. Checked under the run's write lock, so a `say`
        either lands before (and is seen here) or finds the run completed (and requeues it).
        """
        now = self.now()
        with self.db.raw_write() as cur:
            if unless_message_after is not None:
                cur.execute("SELECT 1 FROM runs WHERE id = ?" + locking(cur), (run_id,))
                newer = cur.execute(
                    "SELECT 1 FROM steps WHERE run_id = ? AND seq > ? AND kind = ? LIMIT 1",
                    (run_id, unless_message_after, StepKind.USER.value),
                ).fetchone()
                if newer is not None:  # its active time still counts
                    self._checkpoint_txn(cur, run_id, tokens=0, wall=wall, now=now)
                    return False
            self._checkpoint_txn(cur, run_id, tokens=0, wall=wall, now=now)
            values: dict[str, Any] = {"pause_reason": pause_reason}
            if result is not None:
                values["result"] = result
            if error is not None:
                values["error"] = error
            if status is RunStatus.CANCELLED:
                values["error"] = error or "cancelled by user"
            self._release_txn(cur, run_id, status, now, **values)
            add_event_txn(cur, run_id, "status", message, now, becomes=status)
        self._let_go(run_id)
        return True

    def set_retry(
        self, run_id: str, *, attempt: int, max_attempts: int, retry_at: float, error: str
    ) -> None:
        """Each failed LLM attempt is an event; the run's reason says when it tries again."""
        now = self.now()
        with self.db.raw_write() as cur:
            cur.execute(
                "UPDATE runs SET retry_attempt = ?, retry_max = ?, retry_at = ?, "
                f"retry_error = ?, revision = revision + 1, updated_at = ? WHERE {_FENCE}",
                (attempt, max_attempts, retry_at, error, now, *self._fence(run_id)),
            )
            if cur.rowcount != 1:
                raise LeaseLost(run_id)
            add_event_txn(
                cur,
                run_id,
                "retry",
                f"attempt {attempt} of {max_attempts} failed: {error}; retrying in "
                f"{max(0.0, retry_at - now):.1f}s",
                now,
                {"attempt": attempt, "max": max_attempts, "retry_at": retry_at},
            )

    def artifact(self, artifact_id: str) -> tuple[str, bytes] | None:
        """(run_id, content) of an artifact, for the model's `read_artifact` slices."""
        return self.reader.artifact(artifact_id)

    def event(
        self, run_id: str, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        now = self.now()
        with self.db.raw_write() as cur:
            # The one event written without changing its run: lock the row as the others do
            # (see add_event_txn), so the run's events commit in id order.
            cur.execute("SELECT 1 FROM runs WHERE id = ?" + locking(cur), (run_id,))
            add_event_txn(cur, run_id, kind, message, now, data)

    def release_to_queue(self, run_id: str, wall: float) -> None:
        """A graceful stop: the run goes back to the queue for the next executor."""
        now = self.now()
        with self.db.raw_write() as cur:
            cur.execute(
                f"UPDATE runs SET usage_wall_s = usage_wall_s + ? WHERE {_FENCE}",
                (wall, *self._fence(run_id)),
            )
            self._release_txn(cur, run_id, RunStatus.QUEUED, now)
            add_event_txn(
                cur,
                run_id,
                "released",
                f"executor {self.pid} stopped; requeued",
                now,
                becomes=RunStatus.QUEUED,
            )
        self._let_go(run_id)
