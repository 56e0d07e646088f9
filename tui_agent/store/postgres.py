"""PostgreSQL through psycopg 3, in the shape the store's SQL is written for: DB-API cursors
with `?` parameters and rows readable by position and by column name. So the journal, the
leases, the reader and the starts run unchanged on either engine; what differs per engine is
named where it is used (`is_postgres`): row locks (`FOR UPDATE`, `SKIP LOCKED`) where SQLite's
single writer needs none, and the goal search.

Connections are autocommit with explicit BEGIN/COMMIT (like the SQLite side), one per
thread, replaced when the server or the network dropped them. libpq's own timeouts bound
every wait: a cut-off machine gets an error within about a lease, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq

from tui_agent.domain.errors import StoreError, StoreUnavailable
from tui_agent.settings import postgres_label, postgres_params

if TYPE_CHECKING:
    from sqlalchemy import Engine

READ_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
SCHEMA = "tui_agent"  # our tables, apart from whatever else the database holds
# The pool's own retries are ours to report (one line, in the store's words), not stderr's.
logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
_PARAM = re.compile(r"\?(\d*)")


class PgRow(tuple):  # type: ignore[type-arg]
    """A row by position and by column name, like `sqlite3.Row` (and `.get`, like a dict)."""

    _index: dict[str, int]

    def __new__(cls, values: Any, index: dict[str, int]) -> PgRow:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        i = self._index.get(key)
        return default if i is None else tuple.__getitem__(self, i)

    def keys(self) -> list[str]:
        return list(self._index)


@lru_cache(maxsize=512)
def _index(names: tuple[bytes, ...]) -> dict[str, int]:
    return {name.decode(): i for i, name in enumerate(names)}


def _rows(cursor: Any) -> Callable[[Any], Any]:
    """Rows by position and name; the names come straight from the result (building
    `cursor.description` made a Column object per field of every statement)."""
    result = cursor.pgresult
    if result is None or not result.nfields:
        return tuple
    index = _index(tuple(result.fname(i) or b"" for i in range(result.nfields)))
    return lambda values: PgRow(values, index)


@lru_cache(maxsize=2048)
def to_pg(sql: str) -> tuple[str, bool]:
    """`?` / `?N` parameters as psycopg's `%s` / `%(pN)s` (and a literal % doubled)."""
    numbered = False

    def mark(match: re.Match[str]) -> str:
        nonlocal numbered
        if match.group(1):
            numbered = True
            return f"%(p{match.group(1)})s"
        return "%s"

    return _PARAM.sub(mark, sql.replace("%", "%%")), numbered


def _storable(params: Any) -> Any:
    """PostgreSQL text cannot hold NUL (SQLite's can): a tool's output of a binary file, a
    goal pasted with one, would fail the write. It is kept as U+FFFD, like other bytes
    that are not text."""
    if any(isinstance(v, str) and "\x00" in v for v in params):
        return tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in params)
    return params


class PgCursor:
    """A psycopg cursor taking the store's `?` SQL."""

    postgres = True

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Any = ()) -> PgCursor:
        if not params:
            self._cur.execute(sql)  # no parameters: psycopg sends the text as it is
            return self
        params = _storable(params)
        text, numbered = to_pg(sql)
        if numbered:
            params = {f"p{i}": value for i, value in enumerate(params, 1)}
        self._cur.execute(text, params)
        return self

    def executemany(self, sql: str, rows: Any) -> PgCursor:
        rows = [_storable(row) for row in rows]
        text, numbered = to_pg(sql)
        if numbered:
            rows = [{f"p{i}": value for i, value in enumerate(row, 1)} for row in rows]
        self._cur.executemany(text, rows)  # pipelined: one round trip per batch
        return self

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    @property
    def description(self) -> Any:
        return self._cur.description

    def close(self) -> None:
        self._cur.close()


def wrap_cursor(raw_cursor: Any) -> PgCursor:
    raw_cursor.row_factory = _rows
    return PgCursor(raw_cursor)


class PgConnection:
    """One autocommit psycopg connection, driven with explicit BEGIN/COMMIT."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def cursor(self) -> PgCursor:
        return PgCursor(self.raw.cursor(row_factory=_rows))

    def execute(self, sql: str, params: Any = ()) -> PgCursor:
        return self.cursor().execute(sql, params)

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    @property
    def broken(self) -> bool:
        return bool(self.raw.closed or self.raw.broken)

    def close(self) -> None:
        self.raw.close()


def connect_kwargs(
    url: str, *, timeout_s: float, autocommit: bool = True, lock_wait_s: float | None = None
) -> dict[str, Any]:
    """psycopg's keywords for a connection whose every network wait ends within about
    `timeout_s` (the URL parsed here, never by libpq). A row lock is waited for half that,
    or `lock_wait_s` (a person's command waits as long as SQLite's `busy_timeout_s`)."""
    wait = max(2, int(timeout_s))
    # The session's limits, so that no wait outlives a lease: a row lock (another machine
    # mid-transaction), a statement, a transaction left open by a client that was cut off
    # (the server ends it and frees its locks), a dead client's socket. Isolation is set,
    # not inherited from the server's defaults; our tables live in their own schema.
    ms = wait * 1000
    lock_ms = ms // 2 if lock_wait_s is None else max(1, int(lock_wait_s * 1000))
    options = " ".join(
        f"-c {name}={value}"
        for name, value in (
            ("search_path", f"{SCHEMA},public"),  # public: extensions installed there
            ("default_transaction_isolation", "read\\ committed"),
            ("lock_timeout", lock_ms),
            ("statement_timeout", max(ms * 2, lock_ms + ms)),
            ("idle_in_transaction_session_timeout", ms),
            ("tcp_user_timeout", ms),
            ("tcp_keepalives_idle", max(1, wait // 2)),
            ("tcp_keepalives_interval", 1),
            ("tcp_keepalives_count", 2),
        )
    )
    return {
        **postgres_params(url),
        "options": options,
        "autocommit": autocommit,
        "connect_timeout": wait,
        "keepalives": 1,
        "keepalives_idle": max(1, wait // 2),
        "keepalives_interval": 1,
        "keepalives_count": 2,
        "tcp_user_timeout": wait * 1000,
        "application_name": "tui-agent",
    }


def connect_raw(
    url: str, *, timeout_s: float, autocommit: bool = True, lock_wait_s: float | None = None
) -> Any:
    return psycopg.connect(
        **connect_kwargs(url, timeout_s=timeout_s, autocommit=autocommit, lock_wait_s=lock_wait_s)
    )


class PooledConnections:
    """A few connections every thread of the process shares, a transaction at a time
    (psycopg_pool). A connection per run thread cost a PostgreSQL backend per run: a
    process started and its catalog caches warmed, then thrown away with the thread."""

    def __init__(
        self, url: str, *, timeout_s: float, max_size: int, lock_wait_s: float | None = None
    ) -> None:
        from psycopg_pool import ConnectionPool

        self.pool = ConnectionPool(
            kwargs=connect_kwargs(url, timeout_s=timeout_s, lock_wait_s=lock_wait_s),
            min_size=1,
            max_size=max(2, max_size),
            timeout=max(2.0, timeout_s),  # waiting for a connection is bounded too
            open=False,
            name="tui-agent",
        )
        self._lock = threading.Lock()
        self._open = False

    def get(self) -> PgConnection:
        with self._lock:
            if not self._open:
                self.pool.open(wait=False)
                self._open = True
        return PgConnection(self.pool.getconn())

    def put(self, conn: PgConnection) -> None:
        """Back to the pool (a broken one is discarded there, and replaced)."""
        self.pool.putconn(conn.raw)

    def close_current(self) -> None:
        """A connection was found broken (the server restarted, the network dropped): the
        others that sat idle meanwhile are checked too (in the pool's own workers), so the
        next transactions get live ones instead of failing one by one."""
        if self._open:
            threading.Thread(target=self.pool.check, name="pool-check", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            if self._open:
                self.pool.close()
                self._open = False


# What a server says when the URL names a database, role or password it does not accept.
_REFUSAL = re.compile(
    r"FATAL:\s+((?:database|role) \"[^\"]*\" does not exist|password authentication failed"
    r"[^\n]*|no pg_hba\.conf entry[^\n]*)"
)


def translate(exc: BaseException, where: str) -> Exception | None:
    """psycopg's failures as the store's errors (None: not a database error)."""
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the DB-API error
    if not isinstance(orig, psycopg.Error):
        return None
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    if isinstance(orig, psycopg.errors.DiskFull):
        return StoreUnavailable(f"the disk of {where} is full")
    if isinstance(orig, psycopg.errors.ReadOnlySqlTransaction):
        return StoreUnavailable(f"{where} is read-only; nothing was written")
    if isinstance(orig, psycopg.errors.LockNotAvailable):  # lock_timeout: as SQLite's "locked"
        return StoreUnavailable(f"{where} is locked by another process; try again")
    if isinstance(orig, psycopg.OperationalError | psycopg.errors.AdminShutdown):
        refused = _REFUSAL.search(str(orig))
        if refused:  # the server answered: waiting will not help, the URL must change
            return StoreError(
                f"{where} refuses the connection: {refused.group(1).strip()} "
                "(check TUI_AGENT_DB_URL)"
            )
        if first.startswith("connection failed:"):  # libpq repeats host and port: once is enough
            return StoreUnavailable(f"{where} cannot be reached: {first.rsplit('failed: ', 1)[-1]}")
        return StoreUnavailable(f"{where} cannot be reached or is busy: {first}")
    if isinstance(orig, psycopg.errors.InsufficientPrivilege | psycopg.errors.UndefinedTable):
        return StoreError(f"{where}: {first}")
    return None


class PgDatabase:
    """A PostgreSQL store: the same transactions as `db.Database`, row locks instead of a
    writer lock. `url` is psycopg's form (never shown; `label` is what a person reads)."""

    dialect = "postgresql"
    path = None
    read_begin = READ_BEGIN

    def __init__(
        self,
        url: str,
        clock: Any = None,
        *,
        pool_size: int = 5,
        timeout_s: float = 5.0,
        lock_wait_s: float | None = None,
    ) -> None:
        self.url = url
        self.lock_wait_s = lock_wait_s
        self.label = postgres_label(url)
        self.clock = clock or time.time
        self.pool_size = pool_size
        self.timeout_s = timeout_s
        # The executor's and supervisor's transactions share a small pool; the reader keeps
        # a connection per thread (its nested snapshots share one).
        self._connections = PooledConnections(
            url, timeout_s=timeout_s, max_size=min(pool_size, 8), lock_wait_s=lock_wait_s
        )
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()

    def _connect(self) -> PgConnection:
        try:
            return PgConnection(
                connect_raw(self.url, timeout_s=self.timeout_s, lock_wait_s=self.lock_wait_s)
            )
        except psycopg.Error as exc:
            raise self.translate(exc) from None

    connect_for_reads = _connect

    def translate(self, exc: BaseException) -> Exception:
        mapped = translate(exc, self.label)
        if mapped is not None:
            return mapped
        if isinstance(exc, psycopg.Error):
            first = (str(exc).strip().splitlines() or [""])[0]
            return StoreError(f"{self.label}: {first}")
        return exc  # type: ignore[return-value]

    def translate_operational(self, exc: BaseException) -> Exception | None:
        mapped = translate(exc, self.label)
        return mapped if isinstance(mapped, StoreUnavailable) else None

    def raw_write(self) -> Any:
        from tui_agent.store.db import RawTxn

        return RawTxn(self._connections, None, "BEGIN", self, write=True)

    def raw_read(self) -> Any:
        """Reads, each statement its own snapshot (no BEGIN or ROLLBACK to wait for): the
        executor and supervisor read runs only they change, or facts one query answers."""
        return self.raw_statement()

    def raw_snapshot(self) -> Any:
        """One consistent snapshot for many reads (copying a whole store)."""
        from tui_agent.store.db import RawTxn

        return RawTxn(self._connections, None, READ_BEGIN, self, write=False)

    def raw_statement(self) -> Any:
        """A cursor for one statement that is its own transaction (no BEGIN or COMMIT to
        wait for: the hot path's one round trip)."""
        from tui_agent.store.db import RawTxn

        return RawTxn(self._connections, None, "", self, write=False)

    @property
    def engine(self) -> Engine:
        with self._engine_lock:
            if self._engine is None:
                from sqlalchemy import create_engine

                self._engine = create_engine(
                    "postgresql+psycopg://",
                    creator=lambda: connect_raw(
                        self.url,
                        timeout_s=self.timeout_s,
                        autocommit=False,
                        lock_wait_s=self.lock_wait_s,
                    ),
                    pool_size=self.pool_size,
                    max_overflow=self.pool_size * 2,
                    pool_pre_ping=True,
                    pool_timeout=60,
                )
            return self._engine

    def write(self) -> Any:
        from tui_agent.store.db import Txn

        return Txn(self, write=True, lock=None)

    def read(self) -> Any:
        from tui_agent.store.db import Txn

        return Txn(self, write=False, lock=None)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self._connections.close()

    def prepare(self) -> None:
        """Create or migrate the schema (one supervisor or client at a time, under an
        advisory lock); a newer schema is refused."""
        from tui_agent.store.migrations import migrate

        # One direct connection: a wrong database, user or host is said at once, in
        # libpq's words (the pool would retry in the background and time out).
        try:
            with contextlib.closing(self._connect()) as conn:
                cur = conn.cursor()
                cur.execute("BEGIN")
                cur.execute("SELECT pg_advisory_xact_lock(7262100)")
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
                migrate(cur)
                cur.execute("COMMIT")
        except psycopg.Error as exc:
            raise self.translate(exc) from None


class PgChangeFeed:
    """The change feed over LISTEN/NOTIFY: a trigger notifies on every statement that
    changes a run or adds an event; a lost connection is re-made with backoff (and counts
    as a change, since notifications in between are lost)."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db
        self._size: tuple[float, int] | None = None  # (when asked, bytes)

    async def changes(self) -> AsyncIterator[None]:
        from tui_agent.store.postgres_schema import CHANGES_CHANNEL

        delay = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    **postgres_params(self.db.url),
                    autocommit=True,
                    connect_timeout=max(2, int(self.db.timeout_s)),
                )
            except psycopg.Error:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    delay = 0.5
                    yield None
                    async for _ in conn.notifies():
                        yield None
            except psycopg.Error:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def token(self) -> tuple[int, ...]:
        """Moves whenever any write transaction began on the server since (a false alarm
        costs one refresh; a missed change cannot happen)."""
        try:
            with self.db.raw_read() as cur:
                row = cur.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
        except Exception:
            return (-1,)
        return (int(row[0]),)

    def size(self) -> int:
        """Bytes on disk of the whole database: asked of the server at most every 5 s (the
        status bar asks at every refresh, and a size moves slowly)."""
        now = time.monotonic()
        if self._size is not None and now - self._size[0] < 5.0:
            return self._size[1]
        try:
            with self.db.raw_read() as cur:
                sql = "SELECT pg_database_size(current_database())"
                self._size = (now, int(cur.execute(sql).fetchone()[0]))
        except Exception:
            return 0
        return self._size[1]
