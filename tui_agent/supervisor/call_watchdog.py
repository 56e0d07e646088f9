"""The executor's handle on its call watchdog (`watchdog.py`): starts the process and tells
it of every lease renewal over a pipe."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys

from tui_agent.supervisor import watchdog

log = logging.getLogger(__name__)


class CallWatchdog:
    """The executor's handle on its watchdog process."""

    def __init__(self, owner: str, fence_s: float, renewed: float) -> None:
        self.owner = owner
        self.fence_s = fence_s
        self._proc = self._spawn(renewed)

    def _spawn(self, renewed: float) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable,
            "-m",
            watchdog.__name__,
            self.owner,
            repr(self.fence_s),
            repr(renewed),
        ]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, close_fds=True)
        assert proc.stdin is not None
        # A watchdog that reads nothing (frozen too) must never block the heartbeat: a line
        # is far below PIPE_BUF, so it is written whole or not at all.
        os.set_blocking(proc.stdin.fileno(), False)
        return proc

    def renewed(self, began: float, at: float) -> None:
        """Tell it of a renewal (a watchdog that died is started again from this one)."""
        assert self._proc.stdin is not None
        try:
            os.write(self._proc.stdin.fileno(), f"{began!r} {at!r}\n".encode())
        except BlockingIOError:
            pass  # it has not read for minutes: frozen, it freezes nothing either
        except (BrokenPipeError, ValueError):
            log.warning("the call watchdog %d is gone; starting another", self._proc.pid)
            self._proc.wait()
            self._proc = self._spawn(began)

    def close(self) -> None:
        """The executor ends: the watchdog ends whatever of its calls is left, then exits."""
        with contextlib.suppress(OSError, ValueError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
