"""Starting, stopping and inspecting the supervisor of a home from any other process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from tui_agent.domain.errors import TuiAgentError
from tui_agent.settings import Settings
from tui_agent.supervisor.lock import SupervisorLock, pid_alive
from tui_agent.supervisor.logs import open_private_log

START_TIMEOUT_S = 15.0


class SupervisorStartError(TuiAgentError):
    exit_code = 1


def supervisor_pid(settings: Settings) -> int | None:
    return SupervisorLock(settings.lock_path).holder()


def ensure_supervisor(settings: Settings) -> int:
    """The running supervisor's pid, starting one detached if there is none."""
    pid = supervisor_pid(settings)
    if pid:
        return pid
    log_fd = open_private_log(settings.log_dir / "supervisor.log")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui_agent", "supervisor", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
            env=settings.child_env(),
        )
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        pid = supervisor_pid(settings)
        if pid:
            return pid
        code = proc.poll()
        if code is not None:
            # Another process may have won the race to start one: that is fine.
            pid = supervisor_pid(settings)
            if pid:
                return pid
            raise SupervisorStartError(
                f"the supervisor exited at start (code {code}); see "
                f"{settings.log_dir / 'supervisor.log'}"
            )
        time.sleep(0.02)
    raise SupervisorStartError("the supervisor did not start within 15s")


def stop_supervisor(settings: Settings, timeout_s: float = 30.0) -> int | None:
    """Ask the supervisor to stop (its executor hands runs back); returns the pid stopped."""
    pid = supervisor_pid(settings)
    if not pid or pid < 0:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and supervisor_pid(settings):
        time.sleep(0.05)
    return pid


def supervisor_status(settings: Settings, executors: list[dict[str, Any]]) -> dict[str, Any]:
    pid = supervisor_pid(settings)
    running = bool(pid)
    live = [
        {"pid": e["pid"], "runs": e["runs"]} for e in executors if running and pid_alive(e["pid"])
    ]
    return {
        "running": running,
        "pid": pid if running else None,
        "executors": live,
        "home": str(settings.home),
    }
