"""Private log files for the background processes (kept free of heavy imports: the CLI
uses it to start a supervisor in a few milliseconds)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tui_agent.domain.errors import HomeUnwritable
from tui_agent.settings import Settings


def open_private_log(path: Path) -> int:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise HomeUnwritable(f"cannot write {path}: {exc.strerror}") from None


def configure_logging(settings: Settings, name: str) -> None:
    fd = open_private_log(settings.log_dir / f"{name}.log")
    stream = os.fdopen(fd, "a", buffering=1)
    logging.basicConfig(
        level=logging.INFO,
        stream=stream,
        format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s",
    )
