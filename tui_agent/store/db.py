"""Opening the SQLite database safely: pragmas, write transactions, checks before touching it."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui_agent.domain.errors import StoreError, StoreUnavailable

BUSY_TIMEOUT_MS = 15_000
if TYPE_CHECKING:  # SQLAlchemy loads with the engine: the read path never needs it
    from sqlalchemy import Engine

READ_ONLY = "{where} is read-only (its filesystem or permissions); nothing was written"


def check_database_file(path: Path) -> None:
    """Refuse a file that is not a SQLite database before SQLite can write anything to it.

    The file is asked through SQLite itself, never through a descriptor of our own: closing
    any descriptor of a file drops every POSIX lock this process holds on it, SQLite's
    included, and another process would then checkpoint and delete the WAL under our live
    connections (sqlite.org, "How To Corrupt An SQLite Database File", 2.2). SQLite keeps
    such descriptors open until its last lock on the file is gone.
    """
    if not path.exists():
        return
    if not os.access(path, os.R_OK):
        raise StoreError(f"cannot read the database {path}: permission denied")
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error:
        return  # cannot be opened at all: the real open says why, in its words
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise StoreError(
                f"{path} is not a tui-agent database (corrupt or foreign file); left it untouched"
            ) from None
        # locked, busy, I/O: the real open maps these to a readable, retryable error
    finally:
        conn.close()


def _start_incremental(path: Path) -> None:
    """A new, empty file: pages freed by `prune` go back to the file system (`auto_vacuum`
    can only be chosen before the first write, which here is WAL mode's header). Files made
    before this keep `auto_vacuum = NONE`: their free pages are reused instead."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
    except sqlite3.Error:
        pass  # another process made it first; its choice stands
    finally:
        conn.close()


def create_file_private(path: Path) -> None:
    """Create the database file 0600 so SQLite's -wal and -shm files inherit that mode.

    Only a file that does not exist yet is opened here (no connection of ours can hold a
    lock on it); an existing one is only chmod-ed, which takes no descriptor.
    """
    try:
        if not path.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        if path.stat().st_mode & 0o777 != 0o600:
            os.chmod(path, 0o600)
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise StoreError(f"cannot create the database {path}: {exc.strerror}") from None
        if not path.exists():
            raise StoreUnavailable(READ_ONLY.format(where=path.parent)) from None


def synchronous_mode(value: str) -> str:
    """`FULL` (the default: a commit survives power loss) or `NORMAL`; anything else refused."""
    mode = value.upper()
    if mode not in {"FULL", "NORMAL"}:
        raise StoreError(f"synchronous must be 'full' or 'normal', not {value!r}")
    return mode


def configure_connection(
    conn: sqlite3.Connection, synchronous: str, busy_ms: int = BUSY_TIMEOUT_MS
) -> None:
    """The pragmas every connection gets, pooled or not (foreign keys are off by default)."""
    conn.isolation_level = None
    cur = conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute(f"PRAGMA synchronous = {synchronous}")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


class ThreadConnections:
    """One `sqlite3` connection per thread, closed when its thread ends.

    A sqlite3 connection sits in a reference cycle (its statement cache refers back to it),
    so a finished thread's connection used to stay open until a full GC pass: an executor
    that runs each run in its own thread for hours collected open files.
    """

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._local = threading.local()

    def get(self) -> Any:
        holder: _Closer | None = getattr(self._local, "holder", None)
        if holder is not None and getattr(holder.conn, "broken", False):
            self.close_current()  # the server or the network dropped it: connect again
            holder = None
        if holder is None:
            holder = self._local.holder = _Closer(self._connect())
        return holder.conn

    def close_current(self) -> None:
        holder: _Closer | None = getattr(self._local, "holder", None)
        if holder is not None:
            self._local.holder = None
            holder.conn.close()


class _Closer:
    """Not part of the cycle: dropped with the thread's locals, it closes the connection.

    Never in a forked child: a fork that runs Python before exec (a command's preexec_fn)
    drops every other thread's locals there, and closing a PostgreSQL connection from the
    child would end the parent's session (libpq sends Terminate on the shared socket)."""

    __slots__ = ("conn", "pid")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pid = os.getpid()

    def __del__(self) -> None:
        if os.getpid() != self.pid:
            return
        with contextlib.suppress(Exception):
            self.conn.close()


def connect_plain(path: Path, synchronous: str, busy_ms: int) -> sqlite3.Connection:
    """A connection for one thread (closable from the thread that tears it down)."""
    conn = sqlite3.connect(path, timeout=busy_ms / 1000, check_same_thread=False)
    configure_connection(conn, synchronous, busy_ms)
    return conn


def make_engine(
    path: Path, *, synchronous: str = "FULL", pool_size: int = 5, busy_ms: int = BUSY_TIMEOUT_MS
) -> Engine:
    """An engine whose writers use BEGIN IMMEDIATE and whose readers use a deferred BEGIN.

    pysqlite's own transaction handling is turned off (it would run reads outside the
    transaction and lose another process's update); we issue BEGIN ourselves.
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import QueuePool

    sync = synchronous_mode(synchronous)
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": busy_ms / 1000},
        poolclass=QueuePool,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_timeout=60,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        configure_connection(dbapi_conn, sync, busy_ms)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


class Database:
    """One SQLite file: read and write transactions with a shared clock (`postgres.
    PgDatabase` is the same for PostgreSQL; `store.factory` picks one by URL).

    Two ways in, same pragmas and the same writer lock: `raw_write()`/`raw_read()` hand out a
    plain `sqlite3` cursor (the executor and supervisor use nothing else, so they never import
    SQLAlchemy), and `write()`/`read()` a SQLAlchemy connection for the service's store; the
    engine is built on first use.
    """

    def __init__(
        self,
        path: Path,
        clock: Any = None,
        synchronous: str = "FULL",
        busy_ms: int = BUSY_TIMEOUT_MS,
        pool_size: int = 5,
    ) -> None:
        import time

        self.path = path
        self.clock = clock or time.time
        # SQLite has one writer at a time. Queueing this process's writers here, instead of
        # letting dozens of threads poll SQLite's busy handler, keeps a lock wait fair and
        # short; busy_timeout is then only for other processes.
        self.write_lock = threading.Lock()
        self.synchronous = synchronous_mode(synchronous)
        self.busy_ms = busy_ms
        self.pool_size = pool_size
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._connections = ThreadConnections(self._connect_raw)

    dialect = "sqlite"
    read_begin = "BEGIN"

    @property
    def label(self) -> str:
        return str(self.path)

    def connect_for_reads(self) -> sqlite3.Connection:
        """A reader's connection: rows as dicts (the reader maps them by name)."""
        try:
            conn = connect_plain(self.path, self.synchronous, self.busy_ms)
        except sqlite3.Error as exc:
            raise self.translate(exc) from None
        conn.row_factory = _dict_row
        return conn

    def translate(self, exc: BaseException) -> Exception:
        """A read's failure as one readable error."""
        mapped = translate_operational(exc)
        if mapped is not None:
            return mapped
        return StoreError(f"cannot read the database {self.path}: {exc}")

    @staticmethod
    def translate_operational(exc: BaseException) -> Exception | None:
        return translate_operational(exc)

    def prepare(self) -> None:
        """Check and create the file, then migrate it if it is behind (see open_database)."""
        from tui_agent.store.migrations import LATEST_VERSION, current_version, migrate

        check_database_file(self.path)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        create_file_private(self.path)
        if fresh:
            _start_incremental(self.path)
        try:
            with self.raw_read() as cur:
                behind = current_version(cur) != LATEST_VERSION  # newer: migrate() refuses
            if behind:
                with self.raw_write() as cur:
                    migrate(cur)
        except (StoreError, StoreUnavailable):
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None

    @property
    def engine(self) -> Engine:
        with self._engine_lock:
            if self._engine is None:
                self._engine = make_engine(
                    self.path,
                    synchronous=self.synchronous,
                    pool_size=self.pool_size,
                    busy_ms=self.busy_ms,
                )
            return self._engine

    def write(self) -> Any:
        """A BEGIN IMMEDIATE transaction: read-then-write is safe against other processes."""
        return Txn(self, write=True, lock=self.write_lock)

    def read(self) -> Any:
        """A deferred transaction: one consistent snapshot for several selects."""
        return Txn(self, write=False, lock=None)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self._connections.close_current()

    def raw_write(self) -> Any:
        """A BEGIN IMMEDIATE transaction on this thread's own DB-API connection."""
        return RawTxn(self._connections, self.write_lock, "BEGIN IMMEDIATE", self, write=True)

    def raw_read(self) -> Any:
        """A deferred transaction (one snapshot) on this thread's own DB-API connection."""
        return RawTxn(self._connections, None, "BEGIN", self, write=False)

    def raw_statement(self) -> Any:
        """One statement outside any transaction (PRAGMAs that refuse to run in one)."""
        return RawTxn(self._connections, self.write_lock, "", self, write=False)

    raw_snapshot = raw_read  # every SQLite read is one snapshot

    def _connect_raw(self) -> sqlite3.Connection:
        """Rows are `sqlite3.Row` (by index and by name)."""
        conn = connect_plain(self.path, self.synchronous, self.busy_ms)
        conn.row_factory = sqlite3.Row
        return conn


def translate_operational(exc: BaseException) -> StoreUnavailable | None:
    """SQLite's environmental failures as one readable, retryable error (else None)."""
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the DB-API error
    if not isinstance(orig, sqlite3.OperationalError):
        return None
    text = str(orig)
    if "locked" in text or "busy" in text:
        return StoreUnavailable("the database is locked by another process; try again")
    if "full" in text:
        return StoreUnavailable("the disk holding the database is full")
    if "readonly" in text or "read-only" in text:
        return StoreUnavailable(READ_ONLY.format(where="the database"))
    if "disk I/O" in text or "unable to open" in text:
        return StoreUnavailable(f"the database cannot be written: {text}")
    return None


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


class Txn:
    """A SQLAlchemy transaction of either engine, its failures mapped to the store's."""

    def __init__(self, db: Any, *, write: bool, lock: threading.Lock | None) -> None:
        self._engine = db.engine
        self._map = db.translate_operational
        self._write = write
        self._lock = lock

    def __enter__(self) -> Any:
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._conn = self._engine.connect().execution_options(write=self._write)
            self._tx = self._conn.begin()
        except BaseException as err:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
            if self._lock is not None:
                self._lock.release()
            mapped = self._map(err)
            if mapped is not None:
                raise mapped from err
            raise
        return self._conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._tx.commit()
            else:
                self._tx.rollback()
        except Exception as err:
            mapped = self._map(err)
            if mapped is not None:
                raise mapped from err
            raise
        finally:
            self._conn.close()
            if self._lock is not None:
                self._lock.release()
        if exc is not None:
            mapped = self._map(exc)
            if mapped is not None:
                raise mapped from exc


class RawTxn:
    """A transaction on this thread's own DB-API connection (either engine's)."""

    def __init__(
        self,
        connections: ThreadConnections,
        lock: threading.Lock | None,
        begin: str,
        db: Any,
        *,
        write: bool,
    ) -> None:
        self._connections = connections
        self._lock = lock
        self._begin = begin
        self._write = write
        self._map = db.translate_operational

    def __enter__(self) -> Any:
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._conn = self._connections.get()
            self._cur = self._conn.cursor()
            if self._begin:  # "": one statement in autocommit, its own transaction
                self._cur.execute(self._begin)
        except BaseException as err:
            self._release()
            self._drop_if_broken()
            mapped = self._map(err)
            if mapped is not None:
                raise mapped from err
            raise
        return self._cur

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None and self._write:
                self._cur.execute("COMMIT")
            elif self._conn.in_transaction:  # a failed write, or the end of a read
                self._cur.execute("ROLLBACK")
        except Exception as err:
            self._drop_if_broken()
            mapped = self._map(err)
            if mapped is not None:
                raise mapped from err
            raise
        finally:
            self._release()
        if exc is not None:
            self._drop_if_broken()
            mapped = self._map(exc)
            if mapped is not None:
                raise mapped from exc

    def _drop_if_broken(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None and getattr(conn, "broken", False):
            self._connections.close_current()

    def _release(self) -> None:
        try:
            cur = getattr(self, "_cur", None)
            if cur is not None:
                cur.close()
            put = getattr(self._connections, "put", None)  # a pooled connection goes back
            conn = getattr(self, "_conn", None)
            if put is not None and conn is not None:
                put(conn)
        finally:
            if self._lock is not None:
                self._lock.release()


def open_database(
    path: Path,
    *,
    synchronous: str = "FULL",
    pool_size: int = 5,
    clock: Any = None,
    busy_timeout_s: float = BUSY_TIMEOUT_MS / 1000,
) -> Database:
    """Open (creating if needed) and migrate; refuses corrupt files and newer schemas.

    All in plain `sqlite3` (also on a read-only home); a migration takes the write lock.
    """
    return prepared(Database(path, clock, synchronous, int(busy_timeout_s * 1000), pool_size))


def prepared(db: Any) -> Any:
    """The store (either engine's) created or migrated; on failure its connections closed."""
    try:
        db.prepare()
    except BaseException:
        db.dispose()
        raise
    return db
