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


def frozen_app(home: Path, **kwargs: object) -> AgentApp:
    service = LocalService.open(Settings(home=home), clock=lambda: FROZEN)
    return AgentApp(
        service, start_supervisor=False, live=False, default_workspace="/work/project", **kwargs
    )  # type: ignore[arg-type]
