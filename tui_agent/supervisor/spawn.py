"""Starting, stopping and inspecting the supervisor of a home from any other process."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

from tui_agent.domain.errors import TuiAgentError
from tui_agent.settings import Settings
from tui_agent.supervisor.lock import SupervisorLock, pid_alive
from tui_agent.supervisor.logs import open_private_log

START_TIMEOUT_S = 30.0
READY_FD_ENV = "TUI_AGENT_READY_FD"


class SupervisorStartError(TuiAgentError):
    exit_code = 1


class OtherStore(TuiAgentError):
    """The home's supervisor serves another store than this process uses."""

    exit_code = 2


def supervisor_pid(settings: Settings) -> int | None:
    return SupervisorLock(settings.lock_path).holder()


def served_store(settings: Settings) -> str | None:
    """The store the home's running supervisor serves (None: none runs, or it says not)."""
    if not supervisor_pid(settings):
        return None
    try:
        return settings.store_mark_path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def check_same_store(settings: Settings, pid: int) -> None:
    """A shell that forgot (or changed) TUI_AGENT_DB_URL must not be served, nor told it is
    served, by the home's supervisor of another store."""
    serves = served_store(settings)
    if serves is not None and serves != settings.store_label:
        raise OtherStore(
            f"the supervisor of this home (pid {pid}) serves {serves}, not "
            f"{settings.store_label}; use the TUI_AGENT_DB_URL it was started with, or stop "
            "it (`tui-agent supervisor stop`) and start it again"
        )


def ensure_supervisor(settings: Settings) -> int:
    """The running supervisor's pid, starting one detached if there is none.

    Returns only once the new supervisor holds its lock and has opened the store; if it
    cannot run, raises with its own one-line reason (a newer schema, a corrupt store, a
    read-only home). A running supervisor of another store is an `OtherStore` error."""
    pid = supervisor_pid(settings)
    if pid and pid > 0:
        check_same_store(settings, pid)
        return pid
    log_fd = open_private_log(settings.log_dir / "supervisor.log")
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui_agent", "supervisor", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
            env={**settings.child_env(), READY_FD_ENV: str(write_fd)},
            pass_fds=(write_fd,),
        )
    finally:
        os.close(log_fd)
        os.close(write_fd)
    try:
        answer = _read_line(read_fd, START_TIMEOUT_S)
    finally:
        os.close(read_fd)
    if answer == "ok":
        return proc.pid
    if answer.startswith("error: a supervisor is already running"):
        pid = supervisor_pid(settings)  # another process won the race to start one: fine
        if pid and pid > 0:
            return pid
    if answer.startswith("error: "):
        raise SupervisorStartError(f"the supervisor cannot run: {answer.removeprefix('error: ')}")
    if answer == "":
        try:  # the pipe closed: a crash at start (reap it to say so), or no word in time
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise SupervisorStartError(
                f"the supervisor did not start within {START_TIMEOUT_S:g}s; see "
                f"{settings.log_dir / 'supervisor.log'}"
            ) from None
    code = proc.wait()
    raise SupervisorStartError(
        f"the supervisor exited at start (code {code}); see {settings.log_dir / 'supervisor.log'}"
    )


def tell_starter(line: str) -> None:
    """A supervisor that cannot run at all (say, its config.toml is broken) tells the
    process that started it why, as the first line of the ready pipe (its only line)."""
    raw = os.environ.pop(READY_FD_ENV, "")
    if raw.isdigit():
        with contextlib.suppress(OSError):
            os.write(int(raw), (line.replace("\n", " ") + "\n").encode())
            os.close(int(raw))


def _read_line(fd: int, timeout_s: float) -> str:
    """The first line written to the pipe ('' at EOF or after timeout_s)."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return ""
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


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


def live_executors(
    executors: list[dict[str, Any]], lease_s: float, now: float
) -> list[dict[str, Any]]:
    """Executors (of any machine) whose heartbeat is younger than a lease: the only sign of
    life another machine's executor gives."""
    return [e for e in executors if e["heartbeat_at"] >= now - lease_s]


def supervisor_status(settings: Settings, executors: list[dict[str, Any]]) -> dict[str, Any]:
    """This machine's supervisor and its live executors; on a shared store also the other
    machines' executors that beat within a lease (pids of another machine mean nothing
    here, so only their heartbeats count)."""
    pid = supervisor_pid(settings)
    running = bool(pid)
    serves = served_store(settings) if running else None
    live = [
        {"pid": e["pid"], "node": e.get("node", ""), "runs": e["runs"]}
        for e in executors
        if running and e.get("node", "") == settings.node and pid_alive(e["pid"])
    ]
    others = [
        {"pid": e["pid"], "node": e["node"], "runs": e["runs"]}
        for e in live_executors(executors, settings.lease_s, time.time())
        if settings.shared and e["node"] != settings.node
    ]
    return {
        "running": running,
        "pid": pid if running else None,
        "executors": live,
        "other_machines": others,
        "home": str(settings.home),
        "serves": serves,
    }
