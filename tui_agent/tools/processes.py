"""The processes of a tool call, found and ended whatever became of the executor that started
them.

Every process a call starts carries `TUI_AGENT_CALL=<owner>/<run>/<seq>` in its environment,
which its children inherit. The supervisor ends all of an executor's calls when that executor
dies (by any cause), and a run thread that finds a call in doubt ends that call's processes
before it says so: a call is in doubt only once nothing of it runs, so a retry never overlaps
the first attempt. The environment is read from /proc (Linux).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

CALL_ENV = "TUI_AGENT_CALL"
_NEEDLE = CALL_ENV.encode() + b"="


def call_marker(owner: str, run_id: str, seq: int) -> str:
    return f"{owner}/{run_id}/{seq}"


def owner_prefix(executor_pid: int) -> str:
    """Marks of every call of the executor with this pid (owners are `<pid>-<token>`)."""
    return f"{executor_pid}-"


def processes_marked(
    prefix: str = "", *, run_id: str | None = None, seq: int | None = None, exact: bool = False
) -> list[int]:
    """Live processes whose call mark starts with `prefix` (is it, if `exact`; names that run
    and step, if given)."""
    found: list[int] = []
    for pid, mark in _marked(prefix):
        if exact and mark != prefix:
            continue
        if run_id is not None or seq is not None:
            parts = mark.split("/")
            if len(parts) != 3:
                continue
            if run_id is not None and parts[1] != run_id:
                continue
            if seq is not None and parts[2] != str(seq):
                continue
        found.append(pid)
    return found


def call_processes_of(owner: str) -> list[int]:
    """Live processes of the tool calls of this owner (an executor), not its MCP servers
    (`owner/mcp/NAME`: they serve every run and outlive a call)."""
    servers = f"{owner}/mcp/"
    return [pid for pid, mark in _marked(f"{owner}/") if not mark.startswith(servers)]


def _marked(prefix: str) -> Iterator[tuple[int, str]]:
    """(pid, mark) of every live process but this one whose call mark starts with `prefix`."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        mark = _mark_of(entry)
        if mark is not None and mark.startswith(prefix) and not _is_zombie(entry):
            yield int(entry.name), mark


def end_processes(pids_now: Callable[[], list[int]], timeout_s: float = 10.0) -> int:
    """SIGKILL what `pids_now()` finds until it finds nothing; returns how many were killed.

    Looked up again after each round: a process may fork while we kill its parent.
    """
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        pids = pids_now()
        if not pids:
            return len(killed)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except (ProcessLookupError, PermissionError):
                continue
        if time.monotonic() > deadline:
            return len(killed)
        time.sleep(0.02)


def end_calls_of_executor(executor_pid: int) -> int:
    """Every process of every call the executor with this pid started (it is dead)."""
    prefix = owner_prefix(executor_pid)
    return end_processes(lambda: processes_marked(prefix))


def end_marked(mark: str) -> int:
    """Every process carrying exactly this call's mark."""
    return end_processes(lambda: processes_marked(mark, run_id=None, seq=None, exact=True))


def end_call(run_id: str, seq: int) -> int:
    """Every process of one call, whichever executor started it."""
    return end_processes(lambda: processes_marked(run_id=run_id, seq=seq))


def _mark_of(entry: Path) -> str | None:
    try:
        data = (entry / "environ").read_bytes()
    except OSError:
        return None
    for item in data.split(b"\0"):
        if item.startswith(_NEEDLE):
            return item[len(_NEEDLE) :].decode("utf-8", "replace")
    return None


def _is_zombie(entry: Path) -> bool:
    """A zombie runs nothing: it only waits for its parent (or init) to reap it."""
    try:
        return (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
