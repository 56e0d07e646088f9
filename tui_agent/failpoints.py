"""Named pause points so crash tests can `kill -9` a real process at a dangerous moment.

Off unless `TUI_AGENT_FAILPOINTS` is set (e.g. `tool.after_start=pause@2`): then the N-th
hit of that point in a process writes a marker file holding its pid into
`TUI_AGENT_FAILPOINT_DIR` and sleeps until it is killed. A point fires once per marker
directory, so the process that replaces the killed one runs straight through.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_counts: dict[str, int] = {}


def _spec() -> dict[str, int]:
    raw = os.environ.get("TUI_AGENT_FAILPOINTS", "")
    points: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        name, _, action = item.partition("=")
        _, _, nth = action.partition("@")
        points[name] = int(nth or 1)
    return points


_POINTS = _spec()


def hit(name: str, run_id: str = "") -> None:
    """Pause here forever if this failpoint is armed and due (the test then kills us)."""
    if not _POINTS or name not in _POINTS:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] != _POINTS[name]:
        return
    directory = Path(os.environ.get("TUI_AGENT_FAILPOINT_DIR", "."))
    marker = directory / name
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{os.getpid()} {run_id}\n")
    while True:
        time.sleep(3600)
