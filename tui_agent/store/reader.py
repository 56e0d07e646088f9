"""Every read of runs, steps, approvals, events and executors, in plain `sqlite3`.

The TUI paints its first frame from here before SQLAlchemy and SQLModel are imported (they
cost more start-up time than Textual itself), and the CLI's `ls`/`show` never load them.
RunStore delegates its reads here, so each query exists once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tui_agent.domain.errors import BadInput, TuiAgentError, UnknownRun
from tui_agent.domain.models import (
    INTERRUPTED_BY_STOP,
    STATUS_GROUPS,
    Approval,
    Event,
    Run,
    Step,
    StepStatus,
)
from tui_agent.store.db import ThreadConnections
from tui_agent.store.migrations import current_version
from tui_agent.store.rows import (
    SUMMARY_NAMES,
    approval_from_row,
    event_from_row,
    run_from_row,
    step_from_row,
)
from tui_agent.store.txn import RUNNABLE, in_queues, runnable_params

# A text filter matching more runs than this walks the newest runs instead of the index.
COMMON_MATCHES = 2000
WAITING = STATUS_GROUPS["waiting"]
_HEX = set("0123456789abcdef")
_SUMMARY = ", ".join(SUMMARY_NAMES)
# PostgreSQL: a run with its steps, events and approvals in one round trip (one statement
# is one consistent snapshot; a BEGIN, five selects and a ROLLBACK were seven).
_PG_HISTORY = (
    "SELECT runs.*, "
    "(SELECT json_agg(s ORDER BY s.seq) FROM steps s WHERE s.run_id = runs.id) AS h_steps, "
    "(SELECT json_agg(e ORDER BY e.id) FROM events e WHERE e.run_id = runs.id) AS h_events, "
    "(SELECT json_agg(a ORDER BY a.created_at) FROM approvals a WHERE a.run_id = runs.id) "
    "AS h_approvals FROM runs WHERE id = ?"
)


def _pg_errors() -> tuple[type[BaseException], ...]:
    """psycopg's error class, when PostgreSQL is in use (never imported for SQLite)."""
    module = sys.modules.get("psycopg")
    return (module.Error,) if module is not None else ()


def _fts_phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class Reader:
    """Read-only queries over one store (either engine), one connection per thread."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.clock: Callable[[], float] = db.clock
        # Per thread, like the executor's connections: a thread's connection closes with it.
        self._connections = ThreadConnections(db.connect_for_reads)

    @classmethod
    def of(cls, db: Any) -> Reader:
        """Reads of the same store, clock and settings as a `Database` (or `PgDatabase`)."""
        return cls(db)

    @property
    def path(self) -> Path | None:
        return self.db.path

    def now(self) -> float:
        return float(self.clock())

    def close(self) -> None:
        self._connections.close_current()

    # ---- connections and snapshots ---------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[Any]:
        """One consistent view for several selects (nested uses share the outer one)."""
        conn = self._connections.get()
        if conn.in_transaction:
            yield conn
            return
        try:
            conn.execute(self.db.read_begin)
        except Exception as exc:
            raise self._translate(conn, exc) from None
        try:
            yield conn
        except (sqlite3.Error, *_pg_errors()) as exc:
            raise self._translate(conn, exc) from None
        finally:
            with contextlib.suppress(Exception):
                if conn.in_transaction:  # ends the read: the WAL can be checkpointed again
                    conn.execute("ROLLBACK")

    def _translate(self, conn: Any, exc: BaseException) -> Exception:
        if getattr(conn, "broken", False):
            self._connections.close_current()  # the next read connects again
        if isinstance(exc, TuiAgentError):
            return exc
        return self.db.translate(exc)

    def _all_rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.snapshot() as conn:
            return conn.execute(sql, params).fetchall()

    def _statement_row(self, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
        """One statement, its own transaction on PostgreSQL's autocommit connection: no
        BEGIN and ROLLBACK to wait for (inside a snapshot, part of it)."""
        conn = self._connections.get()
        if conn.in_transaction:
            rows = conn.execute(sql, params).fetchall()
            return rows[0] if rows else None
        try:
            rows = conn.execute(sql, params).fetchall()
        except (sqlite3.Error, *_pg_errors()) as exc:
            raise self._translate(conn, exc) from None
        return rows[0] if rows else None

    def _one_row(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        rows = self._all_rows(sql, params)
        return rows[0] if rows else None

    # ---- schema ------------------------------------------------------------------------

    def schema_version(self) -> int:
        """0 for an empty database (the store creates it)."""
        with self.snapshot() as conn:
            return current_version(conn.cursor())

    def sqlite_bytes(self) -> int | None:
        """SQLite: the database's size as it stands, its pages still in the write-ahead log
        included, the log's reused space not (None on PostgreSQL, whose feed asks the
        server)."""
        if self.db.dialect == "postgresql":
            return None
        with self.snapshot() as conn:
            sql = "SELECT page_count * page_size AS v FROM pragma_page_count(), pragma_page_size()"
            row = conn.cursor().execute(sql).fetchone()
        return int(row["v"])

    # ---- runs --------------------------------------------------------------------------

    def resolve_id(self, prefix: str) -> str:
        """The full id for an id or unique prefix; UnknownRun or BadInput (ambiguous)."""
        prefix = prefix.strip().lower()
        if not prefix:
            raise BadInput("the run id must not be empty")
        if not set(prefix) <= _HEX:
            raise UnknownRun(f"no run {prefix!r}")
        rows = self._all_rows(
            "SELECT id FROM runs WHERE id >= ? AND id < ? LIMIT 2", (prefix, prefix + "g")
        )
        if not rows:
            raise UnknownRun(f"no run {prefix!r}")
        if len(rows) > 1:
            raise BadInput(f"run prefix {prefix!r} is ambiguous; give more characters")
        return str(rows[0]["id"])

    def get_run(self, run_id: str) -> Run:
        row = self._one_row("SELECT * FROM runs WHERE id = ?", (run_id,))
        if row is None:
            raise UnknownRun(f"no run {run_id}")
        return run_from_row(row)

    def history(self, run_id: str) -> tuple[Run, list[Step], list[Event], list[Approval]]:
        """A run with all its steps, events and approvals, as of one moment."""
        if self.db.dialect == "postgresql":
            row = self._statement_row(_PG_HISTORY, (run_id,))
            if row is None:
                raise UnknownRun(f"no run {run_id}")
            return (
                run_from_row(row),
                [step_from_row(r) for r in row["h_steps"] or ()],
                [event_from_row(r) for r in row["h_events"] or ()],
                [approval_from_row(r) for r in row["h_approvals"] or ()],
            )
        with self.snapshot():
            return (
                self.get_run(run_id),
                self.steps(run_id),
                self.events(run_id),
                self.approvals(run_id),
            )

    def list_runs(
        self,
        *,
        statuses: list[str] | None = None,
        text: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        waiting_only: bool = False,
    ) -> list[Run]:
        """A page of runs, newest first; `before` is the (created_at, id) of the last row seen.

        Only summary columns are read (never the JSON blobs), through the indexes on
        (created_at, id) and (status, created_at, id).
        """
        where: list[str] = []
        params: list[Any] = []
        for wanted in (statuses or [], list(WAITING) if waiting_only else []):
            if wanted:
                where.append(f"status IN ({', '.join('?' * len(wanted))})")
                params += wanted
        if before is not None:
            where.append("(created_at, id) < (?, ?)")
            params += [before[0], before[1]]
        with self.snapshot() as conn:
            words = (text or "").split()
            for word in words:  # every word must match the goal, in any order
                clause, text_params = self._text_match(conn, word, id_prefix=len(words) == 1)
                where.append(clause)
                params += text_params
            sql = f"SELECT {_SUMMARY} FROM runs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [run_from_row(r) for r in rows]

    def _text_match(self, conn: Any, text: str, *, id_prefix: bool = True) -> tuple[str, list[Any]]:
        """Goal contains `text` (case-insensitive), or (`id_prefix`) the id starts with it.

        SQLite: a rare text (three characters or more) is found through the trigram index
        and sorted; a common one is cheaper to find by walking the newest runs until the
        page is full. PostgreSQL: ILIKE over the newest runs.
        """
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pg = self.db.dialect == "postgresql"
        clause = "goal ILIKE ? ESCAPE '\\'" if pg else "goal LIKE ? ESCAPE '\\'"
        params: list[Any] = [f"%{escaped}%"]
        if len(text) >= 3 and not pg:
            phrase = _fts_phrase(text)
            hits = conn.execute(
                "SELECT count(*) AS n FROM "
                "(SELECT rowid FROM runs_fts WHERE runs_fts MATCH ? LIMIT ?)",
                (phrase, COMMON_MATCHES + 1),
            ).fetchall()[0]["n"]
            if hits <= COMMON_MATCHES:
                clause = "runs.rowid IN (SELECT rowid FROM runs_fts WHERE runs_fts MATCH ?)"
                params = [phrase]
        prefix = text.lower()
        if id_prefix and set(prefix) <= _HEX:
            return f"({clause} OR (id >= ? AND id < ?))", [*params, prefix, prefix + "g"]
        return clause, params

    def count_runs(self, *, statuses: list[str] | None = None) -> int:
        if statuses:
            marks = ", ".join("?" * len(statuses))
            row = self._one_row(
                f"SELECT count(*) AS n FROM runs WHERE status IN ({marks})", tuple(statuses)
            )
        else:
            row = self._one_row("SELECT count(*) AS n FROM runs")
        return int(row["n"]) if row else 0

    def count_waiting(self) -> int:
        return self.count_runs(statuses=list(WAITING))

    def interrupted_calls(self, since: float) -> list[Step]:
        """Tool calls a stopping executor interrupted since `since` (their runs went back to
        the queue): only the last step of each queued or running run is looked at."""
        sql = (
            "SELECT steps.* FROM runs JOIN steps ON steps.run_id = runs.id AND steps.seq = ("
            "SELECT max(seq) FROM steps s WHERE s.run_id = runs.id) "
            "WHERE runs.status IN ('queued', 'running') AND steps.kind = 'tool' "
            "AND steps.status = 'error' AND steps.finished_at >= ? AND steps.result LIKE ?"
        )
        rows = self._all_rows(sql, (since, f"{INTERRUPTED_BY_STOP}%"))
        return [step_from_row(r) for r in rows]

    def needs_execution(self, queues: tuple[str, ...] | None = None) -> bool:
        """Some run of `queues` (None: any) wants an executor now (queued, or running
        without a live lease), or a callback is still to be delivered (by a supervisor)."""
        queue_sql, queue_params = in_queues(queues)
        sql = (
            f"SELECT (EXISTS (SELECT 1 FROM runs WHERE {RUNNABLE}{queue_sql}) OR EXISTS "
            "(SELECT 1 FROM deliveries WHERE status = 'pending')) AS n"
        )
        row = self._one_row(sql, (*runnable_params(self.now()), *queue_params))
        return bool(row and row["n"])

    # ---- a run's history ---------------------------------------------------------------

    def steps(self, run_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[Step]:
        sql = "SELECT * FROM steps WHERE run_id = ? AND seq > ? ORDER BY seq"
        params: tuple[Any, ...] = (run_id, after_seq)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        return [step_from_row(r) for r in self._all_rows(sql, params)]

    def step(self, run_id: str, seq: int) -> Step | None:
        row = self._one_row("SELECT * FROM steps WHERE run_id = ? AND seq = ?", (run_id, seq))
        return step_from_row(row) if row else None

    def in_doubt_step(self, run_id: str) -> Step | None:
        """The tool call journaled as started but never finished, if any."""
        row = self._one_row(
            "SELECT * FROM steps WHERE run_id = ? AND status = ? ORDER BY seq LIMIT 1",
            (run_id, StepStatus.STARTED.value),
        )
        return step_from_row(row) if row else None

    def callbacks_pending(self) -> int:
        row = self._one_row("SELECT count(*) AS n FROM deliveries WHERE status = 'pending'")
        return int(row["n"]) if row else 0

    def run_marks(self, run_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """(revision, status, newest event id) of each run: one query however many."""
        marks: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start : start + 500]
            marks_sql = ", ".join("?" * len(chunk))
            rows = self._all_rows(
                "SELECT r.id, r.revision, r.status, (SELECT max(e.id) FROM events e "
                f"WHERE e.run_id = r.id) AS ev FROM runs r WHERE r.id IN ({marks_sql})",
                tuple(chunk),
            )
            marks.update({r["id"]: (r["revision"], r["status"], r["ev"]) for r in rows})
        return marks

    def events(self, run_id: str, *, after_id: int = 0) -> list[Event]:
        rows = self._all_rows(
            "SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id", (run_id, after_id)
        )
        return [event_from_row(r) for r in rows]

    def approvals(self, run_id: str, *, status: str | None = None) -> list[Approval]:
        sql = "SELECT * FROM approvals WHERE run_id = ?"
        params: tuple[Any, ...] = (run_id,)
        if status:
            sql += " AND status = ?"
            params += (status,)
        rows = self._all_rows(sql + " ORDER BY created_at", params)
        return [approval_from_row(r) for r in rows]

    def pending_approval(self, run_id: str) -> Approval | None:
        pending = self.approvals(run_id, status="pending")
        return pending[0] if pending else None

    def artifact(self, artifact_id: str) -> tuple[str, bytes] | None:
        """(run_id, content) of an artifact."""
        row = self._one_row("SELECT run_id, content FROM artifacts WHERE id = ?", (artifact_id,))
        return (str(row["run_id"]), bytes(row["content"])) if row else None

    # ---- executors ---------------------------------------------------------------------

    def executors(self) -> list[dict[str, Any]]:
        """Each registered executor with the runs it holds now."""
        with self.snapshot() as conn:
            procs = conn.execute("SELECT * FROM executors ORDER BY started_at").fetchall()
            held = conn.execute(
                "SELECT owner_pid, owner_node, id FROM runs WHERE owner_pid IS NOT NULL"
            ).fetchall()
        by_pid: dict[tuple[str, int], list[str]] = {}
        for row in held:
            key = (row["owner_node"] or "", int(row["owner_pid"]))
            by_pid.setdefault(key, []).append(row["id"])
        return [
            {
                "pid": p["pid"],
                "node": p["node"],
                "supervisor_pid": p["supervisor_pid"],
                "started_at": p["started_at"],
                "heartbeat_at": p["heartbeat_at"],
                "runs": sorted(by_pid.get((p["node"], p["pid"]), [])),
            }
            for p in procs
        ]
