"""Shared fixtures: a private home per test, the scripted model server, CLI subprocesses,
and cleanup of every supervisor a test started (they are real detached processes)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.llm_server import ScriptedLLM
from tui_agent.supervisor.lock import pid_alive

os.environ.pop("NO_COLOR", None)
for _name in (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "TUI_AGENT_MODEL",
    "TUI_AGENT_HOME",
    "TUI_AGENT_FAILPOINTS",
):
    os.environ.pop(_name, None)

# The test process itself (Pilot tests, in-process services) is guarded like its children:
# database path -> log. One hook for the session; each `home` registers its database.
_GUARDED: dict[str, str] = {}


def _guard_hook(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not _GUARDED or not args or isinstance(args[0], int):
        return
    try:
        path = os.path.abspath(os.fsdecode(args[0]))
    except (TypeError, ValueError):
        return
    for suffix in ("-wal", "-shm", "-journal", ""):
        if path.endswith(suffix):
            log = _GUARDED.get(path[: len(path) - len(suffix)] if suffix else path)
            if log and os.path.exists(path) and _from_the_product():
                import traceback

                stack = "".join(traceback.format_stack(limit=8))
                with open(log, "a", encoding="utf-8") as fh:
                    fh.write(f"test process opened {path}\n{stack}")
                return


def _from_the_product() -> bool:
    """The open comes from tui_agent's code (a test may read the file it seeded itself)."""
    frame = sys._getframe(2)
    while frame is not None:
        if f"{os.sep}tui_agent{os.sep}" in frame.f_code.co_filename:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


sys.addaudithook(_guard_hook)

FAST_CONFIG = """
idle_exit_s = 60
lease_s = 2.0
heartbeat_s = 0.3
retry_initial_s = 0.05
retry_max_s = 0.5
"""


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)  # each poll may open a service: leave the cores to the processes
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def hold_write_lock(home: Home, seconds: float) -> threading.Thread:
    """Another process-like writer sitting on the store's writes: SQLite's BEGIN IMMEDIATE;
    on PostgreSQL a transaction holding the tables in EXCLUSIVE mode (reads go on, writes
    wait), as a stuck writer holding their rows would."""
    ready = threading.Event()

    def hold() -> None:
        if home.db_url is not None:
            from tests.pg import connect_store

            with connect_store(home.db_url) as pg:
                pg.execute("LOCK TABLE runs, steps, approvals IN EXCLUSIVE MODE")
                ready.set()
                time.sleep(seconds)
                pg.rollback()
            return
        conn = sqlite3.connect(home.path / "tui-agent.db", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        ready.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait(5)
    return thread


class Home:
    """A private TUI_AGENT_HOME with a workspace, and helpers to drive the real CLI; with
    `db_url` its runs live in that PostgreSQL database instead of the home's SQLite file."""

    def __init__(self, root: Path, db_url: str | None = None) -> None:
        self.db_url = db_url
        self.path = root / "home"
        self.workspace = root / "ws"
        self.workspace.mkdir(parents=True)
        self.fail_dir = root / "failpoints"
        self.fail_dir.mkdir()
        self.env: dict[str, str] = {
            **os.environ,
            "TUI_AGENT_HOME": str(self.path),
            "TUI_AGENT_DEMO_DELAY": "0",
            "TUI_AGENT_FAILPOINT_DIR": str(self.fail_dir),
            "PYTHONUNBUFFERED": "1",
            # Every process of the test records any open of the live database through a
            # descriptor of its own (it would drop SQLite's locks): the teardown fails on one.
            "TUI_AGENT_GUARD_DB": str(self.path / "tui-agent.db"),
            "TUI_AGENT_GUARD_DB_LOG": str(root / "db-opens.log"),
        }
        self.db_opens_log = root / "db-opens.log"
        if db_url is not None:
            self.env["TUI_AGENT_DB_URL"] = db_url

    @property
    def backend(self) -> str:
        return "postgres" if self.db_url else "sqlite"

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """A write to this home's store, whichever engine (tests that tamper with it)."""
        self.execute_many(sql, [params])

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One transaction writing the statement once per row, whichever engine."""
        from tui_agent.settings import load_settings
        from tui_agent.store.factory import database_for

        db = database_for(load_settings(self.env))
        try:
            with db.raw_write() as cur:
                cur.executemany(sql, rows)
        finally:
            db.dispose()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of a read of this home's store, whichever engine (the store's own `?` SQL)."""
        from tui_agent.settings import load_settings
        from tui_agent.store.factory import database_for

        db = database_for(load_settings(self.env))
        try:
            with db.raw_read() as cur:
                return list(cur.execute(sql, params).fetchall())
        finally:
            db.dispose()

    def configure(self, text: str = FAST_CONFIG) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.path / "config.toml").write_text(text)

    def use_server(self, server: ScriptedLLM, model: str = "scripted") -> None:
        self.env.update(
            OPENAI_BASE_URL=server.base_url,
            OPENAI_API_KEY="sk-test-not-a-secret",
            TUI_AGENT_MODEL=model,
        )

    def arm(self, failpoints: str) -> None:
        self.env["TUI_AGENT_FAILPOINTS"] = failpoints

    def rearm(self, failpoints: str) -> None:
        """Arm again in a fresh marker directory (a point fires once per directory); only
        processes started after this see it."""
        self.fail_dir = self.fail_dir.with_name(f"{self.fail_dir.name}-{uuid.uuid4().hex[:6]}")
        self.fail_dir.mkdir()
        self.env["TUI_AGENT_FAILPOINT_DIR"] = str(self.fail_dir)
        self.arm(failpoints)

    def cli(
        self, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "tui_agent", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workspace,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"tui-agent {args} -> {proc.returncode}: {proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json", check=True).stdout)

    def start(self, goal: str = "do the thing", *args: str) -> str:
        return str(self.json("run", goal, "--workspace", str(self.workspace), *args)["id"])

    def show(self, run_id: str) -> dict[str, Any]:
        """`show --json`, computed in-process from the same store (fast for polling)."""
        from tui_agent.service.local import LocalService
        from tui_agent.service.views import run_json
        from tui_agent.settings import load_settings

        service = LocalService.open(load_settings(self.env))
        try:
            return run_json(service.run_view(service.resolve_ref(run_id)))
        finally:
            service.close()

    def wait_status(self, run_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            data = self.show(run_id)
            return data if data["status"] in statuses else None

        return dict(wait_for(check, timeout, f"run {run_id[:8]} to be {statuses}"))

    def marker(self, name: str, timeout: float = 30) -> int:
        """Wait for a failpoint to pause a process; returns its pid."""
        path = self.fail_dir / name
        wait_for(lambda: path.exists() and path.read_text().strip(), timeout, f"failpoint {name}")
        return int(path.read_text().split()[0])

    def database_opens(self) -> str:
        """What the guard saw: Python-level opens of the live database's files (should be '')."""
        return self.db_opens_log.read_text() if self.db_opens_log.exists() else ""

    def supervisor_pid(self) -> int | None:
        """The pid holding the supervisor's lock now (a killed one's pid stays in the file)."""
        from tui_agent.supervisor.lock import SupervisorLock

        pid = SupervisorLock(self.path / "supervisor.lock").holder()
        return pid if pid and pid > 0 else None

    def owns(self, pid: int) -> bool:
        """The pid is a tui-agent process of this home (not a stranger that reused the pid)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"tui_agent" in argv and f"TUI_AGENT_HOME={self.path}".encode() in env

    def kill_all(self) -> None:
        """SIGKILL the supervisor and every executor registered in this home."""
        pids: set[int] = set()
        sup = self.supervisor_pid()
        if sup:
            pids.add(sup)
        if self.db_url or (self.path / "tui-agent.db").exists():
            with contextlib.suppress(Exception):
                pids |= {r[0] for r in self.query("SELECT pid FROM executors")}
                pids |= {r[0] for r in self.query("SELECT owner_pid FROM runs WHERE owner_pid > 0")}
        pids = {pid for pid in pids if self.owns(pid)}  # a recorded pid may be reused
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            wait_for(lambda p=pid: not pid_alive(p), 10, f"pid {pid} to die")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_stores: run once on SQLite and once on a real PostgreSQL server"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`both_stores` tests run on each engine: the conformance of the two backends."""
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_stores"):
        metafunc.parametrize("backend", ["sqlite", "postgres"], indirect=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.pg import stop_cluster

    stop_cluster()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def db_url(backend: str) -> str | None:
    """A fresh PostgreSQL database for a `postgres` test, else None (SQLite)."""
    if backend != "postgres":
        return None
    from tests.pg import cluster

    return cluster().new_database()


@pytest.fixture
def store_target(tmp_path: Path, db_url: str | None) -> Path | str:
    """Where a test's store lives: a SQLite file, or a PostgreSQL database's URL."""
    return db_url or tmp_path / "store.db"


@pytest.fixture
def home(tmp_path: Path, db_url: str | None) -> Iterator[Home]:
    h = Home(tmp_path, db_url)
    h.configure()
    _GUARDED[h.env["TUI_AGENT_GUARD_DB"]] = h.env["TUI_AGENT_GUARD_DB_LOG"]
    yield h
    if os.environ.get("TUI_AGENT_TEST_COVERAGE"):
        # A stopped supervisor and executor write their coverage data; killed ones cannot.
        with contextlib.suppress(Exception):
            h.cli("supervisor", "stop", timeout=30)
    h.kill_all()
    _GUARDED.pop(h.env["TUI_AGENT_GUARD_DB"], None)
    opens = h.database_opens()
    assert not opens, f"a process opened the live database through its own descriptor:\n{opens}"


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Any]:
    from tests.terminal import Terminal

    # Unique per test process: two test sessions on one machine must not share a tmux server.
    term = Terminal(f"tui-agent-test-{os.getpid()}-{tmp_path.name}")
    yield term
    term.tmux("kill-server")


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM().start()
    yield server
    server.stop()
