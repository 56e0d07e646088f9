"""The HTTP API's bearer token: made once, 0600 in the home, or given by the environment
(`TUI_AGENT_API_TOKEN`, e.g. the same token on every machine of a shared store, whose
callbacks any of them may sign)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets

from tui_agent.domain.errors import HomeUnwritable
from tui_agent.settings import ConfigError, Settings, ensure_private_dir

ENV_VAR = "TUI_AGENT_API_TOKEN"
MIN_CHARS = 16


def api_token(settings: Settings) -> str:
    """The token, created on first use (two processes at once agree on one)."""
    given = os.environ.get(ENV_VAR)
    if given is not None:
        if len(given.strip()) < MIN_CHARS:
            raise ConfigError(f"{ENV_VAR} must be at least {MIN_CHARS} characters")
        return given.strip()
    path = settings.api_token_path
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= MIN_CHARS:
            return text
        path.unlink()  # empty or cut short (a full disk): make a new one
    ensure_private_dir(settings.home)
    # Written whole under another name, then linked into place: a process that finds the
    # file finds all of it, and of two made at once the first link wins.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        return path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise HomeUnwritable(f"cannot create {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def same_token(given: str | None, token: str) -> bool:
    """Compared in constant time: the answer's timing tells nothing of the token."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def signature(token: str, body: bytes) -> str:
    """`sha256=HEX`: HMAC-SHA256 of the body keyed by the token (a receiver checks it)."""
    return "sha256=" + hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
