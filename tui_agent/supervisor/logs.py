"""Private log files for the background processes (kept free of heavy imports: the CLI
uses it to start a supervisor in a few milliseconds)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from tui_agent.domain.errors import HomeUnwritable
from tui_agent.settings import Settings


def open_private_log(path: Path) -> int:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise HomeUnwritable(f"cannot write {path}: {exc.strerror}") from None


MAX_LOG_BYTES = 10 * 1024 * 1024
KEEP_LOGS = 3


def rotate_logs(log_dir: Path, max_bytes: int = MAX_LOG_BYTES, keep: int = KEEP_LOGS) -> None:
    """`x.log` over `max_bytes` becomes `x.log.1` (`.1` → `.2` …, `keep` of them). A process
    still writing to it goes on in `x.log.1` until it restarts; new ones start `x.log`."""
    try:
        logs = [p for p in log_dir.glob("*.log") if p.stat().st_size > max_bytes]
    except OSError:
        return
    for path in logs:
        try:
            for n in range(keep - 1, 0, -1):
                older = path.with_name(f"{path.name}.{n}")
                if older.exists():
                    older.replace(path.with_name(f"{path.name}.{n + 1}"))
            path.replace(path.with_name(f"{path.name}.1"))
        except OSError:
            continue


def configure_logging(settings: Settings, name: str) -> None:
    fd = open_private_log(settings.log_dir / f"{name}.log")
    stream = os.fdopen(fd, "a", buffering=1)
    logging.basicConfig(
        level=logging.INFO,
        stream=stream,
        format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s",
    )


class Outage:
    """One failing thing (the store, say) logged as an outage: its first failure, a line
    every `every_s` while it lasts, and its end; not a warning a second."""

    def __init__(self, log: logging.Logger, what: str, every_s: float = 30.0) -> None:
        self.log = log
        self.what = what
        self.every_s = every_s
        self._since: float | None = None
        self._said = 0.0
        self._count = 0

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._count += 1
        if self._since is None:
            self._since = self._said = now
            self.log.warning("%s: %s", self.what, exc)
        elif now - self._said >= self.every_s:
            self._said = now
            self.log.warning(
                "%s for %.0fs (%d failures): %s", self.what, now - self._since, self._count, exc
            )

    def ok(self) -> None:
        if self._since is not None:
            self.log.info("%s: over after %.1fs", self.what, time.monotonic() - self._since)
            self._since = None
            self._count = 0
