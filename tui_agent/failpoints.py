"""Named pause points so crash tests can `kill -9` a real process at a dangerous moment.

Off unless `TUI_AGENT_FAILPOINTS` is set (e.g. `tool.after_start=pause@2`): then the N-th
hit of that point in a process writes a marker file holding its pid into
`TUI_AGENT_FAILPOINT_DIR` and sleeps until it is killed. A point fires once per marker
directory, so the process that replaces the killed one runs straight through.
`NAME=exit@N` instead makes every process that reaches its N-th hit exit at once (code 70):
a crash loop; `NAME=raise@N` raises there (a bug in our code, for the internal-error path);
`NAME=stop@N` writes the marker and stops the whole process (SIGSTOP) right there, every
thread with it: a frozen machine, e.g. inside a write transaction.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

_counts: dict[str, int] = {}


def _spec() -> tuple[dict[str, int], dict[str, str]]:
    raw = os.environ.get("TUI_AGENT_FAILPOINTS", "")
    points: dict[str, int] = {}
    verbs: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        name, _, action = item.partition("=")
        verb, _, nth = action.partition("@")
        points[name] = int(nth or 1)
        verbs[name] = verb or "pause"
    return points, verbs


_POINTS, _VERBS = _spec()


def hit(name: str, run_id: str = "") -> None:
    """Pause here forever if this failpoint is armed and due (the test then kills us)."""
    if not _POINTS or name not in _POINTS:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] != _POINTS[name]:
        return
    if _VERBS[name] == "exit":
        os._exit(70)
    if _VERBS[name] == "raise":
        raise RuntimeError(f"failpoint {name} raised")
    directory = Path(os.environ.get("TUI_AGENT_FAILPOINT_DIR", "."))
    marker = directory / name
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{os.getpid()} {run_id}\n")
    if _VERBS[name] == "stop":
        # Sent to this very thread: it stops on its way back from the call, the others
        # with it. Sent to the process, the kernel may hand it to another thread, and this
        # one ran on into its next system call first (a statement sent and committed).
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
        return  # thawed (SIGCONT): go on as if nothing happened
    while True:
        time.sleep(3600)


def guard_database_files(db_path: str, log_path: str) -> None:
    """Record every Python-level open of the live database's files (tests turn this on).

    A process must never open the database, its -wal or its -shm through a descriptor of
    its own once the file exists: closing that descriptor drops SQLite's POSIX locks and
    lets another process delete the WAL under our connections. SQLite's own opens happen in
    C and are not seen here; every one that is seen is written to `log_path`.
    """
    import sys
    import traceback

    watched = {os.path.abspath(db_path) + suffix for suffix in ("", "-wal", "-shm", "-journal")}

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event != "open" or not args or isinstance(args[0], int):
            return
        try:
            path = os.path.abspath(os.fsdecode(args[0]))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        if path in watched and os.path.exists(path):
            where = "".join(traceback.format_stack(limit=8)[:-1])
            with open(log_path, "a", encoding="utf-8") as fh:  # not a watched path
                fh.write(f"pid {os.getpid()} opened {path}\n{where}\n")

    sys.addaudithook(hook)
