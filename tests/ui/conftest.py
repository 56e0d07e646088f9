"""UI fixtures: the real service over a real SQLite file, with a frozen clock for snapshots."""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ui.seed import T0
from tui_agent.service.local import LocalService
from tui_agent.settings import Settings
from tui_agent.ui.app import AgentApp

FROZEN = T0 + 600.0
SNAP_ROOT = Path("/tmp/tui-agent-snapshots")
PINNED_PG_SIZE = 8 << 20


@pytest.fixture
def snap_home(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fixed path, so the database location in the status bar is the same every run.

    Two test sessions on one machine would share it: an OS lock on the root makes the
    second wait for the first's snapshot test instead of clashing with it."""
    SNAP_ROOT.mkdir(parents=True, exist_ok=True)
    with open(SNAP_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = SNAP_ROOT / request.node.name.split("[")[0]
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, mode=0o700)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def snap_store(snap_home: Path, db_url: str | None) -> Path | str:
    """Where a snapshot test seeds its runs: the home's file, or the test's PostgreSQL
    database (`both_stores`)."""
    return db_url or snap_home / "tui-agent.db"


def frozen_app(home: Path, db_url: str | None = None, **kwargs: object) -> AgentApp:
    """The app over the home's store, its clock frozen. On PostgreSQL the status bar says
    the home's file all the same (the server's port is new every run) and a size of 8 MB
    (the server's files change with its own housekeeping): the screen must then be the
    SQLite one but for that size (`test_each_screen_is_the_same_on_both_stores`)."""
    service = LocalService.open(Settings(home=home, db_url=db_url), clock=lambda: FROZEN)
    if db_url is not None:
        label = str(home / "tui-agent.db")
        service.store_label = lambda: label  # type: ignore[method-assign]
        service.database_size = lambda: PINNED_PG_SIZE  # type: ignore[method-assign]
    return AgentApp(
        service, start_supervisor=False, live=False, default_workspace="/work/project", **kwargs
    )  # type: ignore[arg-type]
