"""The live channel: what a run is doing right now, outside the journal.

While the model writes its reply, or a `run_shell` command prints, the executor keeps the
text so far in `<home>/live/<run_id>` (a 0600 file in a 0700 directory, replaced whole,
at most ~10 times a second, the last 64 KB only). The file is removed once the step is
recorded; nothing here is ever recorded or replayed: a crash loses it, and the journal's
reply or result is the only truth. Readers (the service, for the TUI) find the text of one
run by its id. With executors on another machine (a shared PostgreSQL store) there is no
file here, so no live text.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

LIVE_DIR = "live"
MAX_LIVE_CHARS = 64 * 1024
INTERVAL_S = 0.1
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class LiveOutput:
    """The text so far of the step under way: `kind` "reply" (the model's reply; `seq` is
    the last step the request saw) or "shell" (a command's output; `seq` is its step)."""

    kind: str
    seq: int
    text: str
    updated_at: float


def live_path(directory: Path, run_id: str) -> Path | None:
    """The run's file (None for an id that cannot be a file name: nothing to read)."""
    return directory / run_id if _RUN_ID.fullmatch(run_id) else None


def read_live(directory: Path, run_id: str) -> LiveOutput | None:
    """The run's live text, or None (no step under way here, or a torn/odd file)."""
    path = live_path(directory, run_id)
    if path is None:
        return None
    try:
        data = json.loads(path.read_bytes())
        return LiveOutput(
            kind=str(data["kind"]),
            seq=int(data["seq"]),
            text=str(data["text"]),
            updated_at=float(data["updated_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Publisher:
    """One step's live text: called with the text so far; writes when it changed and the
    last write is `INTERVAL_S` old (a later call carries what was skipped). Never raises:
    a live view that cannot be written must not fail the run."""

    def __init__(self, path: Path, kind: str, seq: int, interval_s: float = INTERVAL_S) -> None:
        self.path = path
        self.kind = kind
        self.seq = seq
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._written = ""
        self._at = 0.0

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        with self._lock:
            if text == self._written or now - self._at < self.interval_s:
                return
            self._written, self._at = text, now
        tail = text[-MAX_LIVE_CHARS:]
        data = {"kind": self.kind, "seq": self.seq, "text": tail, "updated_at": time.time()}
        with contextlib.suppress(OSError):
            _write(self.path, json.dumps(data).encode())

    def clear(self) -> None:
        """The step is recorded (or given up): no live text for it any more."""
        with self._lock:
            self._written, self._at = "", 0.0
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


class LiveChannel:
    """The executor's side: a publisher per step under way, in the home's live directory."""

    def __init__(self, directory: Path, interval_s: float = INTERVAL_S) -> None:
        self.directory = directory
        self.interval_s = interval_s
        self._ready = False

    def publisher(self, run_id: str, kind: str, seq: int) -> Publisher | None:
        path = live_path(self.directory, run_id)
        if path is None or not self._ensure_dir():
            return None
        return Publisher(path, kind, seq, self.interval_s)

    def clear(self, run_id: str) -> None:
        """Whatever a dead executor left for this run (it is claimed anew)."""
        path = live_path(self.directory, run_id)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def _ensure_dir(self) -> bool:
        if not self._ready:
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(self.directory, 0o700)
                self._ready = True
            except OSError:
                return False
        return True


def _write(path: Path, data: bytes) -> None:
    """Replace the file whole (a reader never sees half of it), 0600 from its creation."""
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
