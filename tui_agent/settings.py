"""Where data lives and how the app is tuned: env vars, then `config.toml`, then defaults."""

from __future__ import annotations

import errno
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from platformdirs import user_data_dir

from tui_agent.domain.errors import TuiAgentError
from tui_agent.domain.models import Budget


class ConfigError(TuiAgentError):
    exit_code = 2


@dataclass(frozen=True)
class Settings:
    home: Path
    max_concurrent_runs: int = 4
    idle_exit_s: float = 300.0
    synchronous: str = "full"
    lease_s: float = 5.0
    busy_timeout_s: float = 15.0
    heartbeat_s: float = 1.0
    approval_timeout_s: float | None = None
    llm_max_attempts: int = 6
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    max_steps: int = 50
    max_llm_tokens: int = 200_000
    max_wall_time_s: float = 3600.0
    max_artifact_bytes_in_context: int = 8000
    llm_timeout_s: float = 60.0
    tool_timeout_s: float = 60.0
    db_file: Path | None = None  # from TUI_AGENT_DB_URL; None: the database in the home

    @property
    def db_path(self) -> Path:
        return self.db_file or self.home / "tui-agent.db"

    def child_env(self) -> dict[str, str]:
        """The environment of a process we start, pinned to this same home and database
        (absolute paths: a detached supervisor does not share our working directory)."""
        env = {**os.environ, "TUI_AGENT_HOME": str(self.home)}
        if self.db_file is not None:
            env["TUI_AGENT_DB_URL"] = f"sqlite:///{self.db_file}"
        return env

    @property
    def demo_workspace(self) -> Path:
        """Where the offline demo works when no workspace is given: never the user's files."""
        return self.home / "demo-workspace"

    @property
    def lock_path(self) -> Path:
        return self.home / "supervisor.lock"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def config_path(self) -> Path:
        return self.home / "config.toml"

    @property
    def ui_state_path(self) -> Path:
        return self.home / "ui-state.json"

    def default_budget(self) -> Budget:
        return Budget(
            max_steps=self.max_steps,
            max_llm_tokens=self.max_llm_tokens,
            max_wall_time_s=self.max_wall_time_s,
            max_artifact_bytes_in_context=self.max_artifact_bytes_in_context,
            llm_timeout_s=self.llm_timeout_s,
            tool_timeout_s=self.tool_timeout_s,
        )


def home_from_env(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if env.get("TUI_AGENT_HOME"):
        return Path(env["TUI_AGENT_HOME"]).expanduser().absolute()
    return Path(user_data_dir("tui-agent", appauthor=False))


def db_file_from_url(url: str) -> Path | None:
    """`TUI_AGENT_DB_URL` as a SQLite file. Other databases are refused by name only: a
    server URL may carry a password, which must never reach a terminal or a log."""
    url = url.strip()
    if not url:
        return None
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError("TUI_AGENT_DB_URL is not a database URL (expected sqlite:///PATH)")
    dialect = scheme.split("+", 1)[0].lower()
    if dialect != "sqlite":
        raise ConfigError(
            f"TUI_AGENT_DB_URL: {dialect or 'this'} databases are not supported yet; this "
            "version keeps runs in SQLite (sqlite:///PATH, or unset it to use the home)"
        )
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(
            "TUI_AGENT_DB_URL: SQLite needs a file (sqlite:///PATH); "
            "an in-memory database would lose every run"
        )
    if "?" in rest:
        raise ConfigError(
            "TUI_AGENT_DB_URL: query options are not supported (set synchronous in config.toml)"
        )
    path = Path(unquote(rest[1:])).expanduser().absolute()
    if path.is_dir():
        raise ConfigError(f"TUI_AGENT_DB_URL: {path} is a directory, not a database file")
    if not path.parent.is_dir():
        raise ConfigError(f"TUI_AGENT_DB_URL: the directory {path.parent} does not exist")
    return path


def ensure_private_dir(path: Path) -> None:
    """Create a 0700 directory (or tighten an existing one)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o777 != 0o700:
            os.chmod(path, 0o700)
    except OSError as exc:
        if exc.errno == errno.EROFS and path.is_dir():
            return  # a read-only home can still be read; writes say so themselves
        raise ConfigError(f"cannot use {path}: {exc.strerror}") from None


_POSITIVE = {
    "max_concurrent_runs",
    "idle_exit_s",
    "lease_s",
    "heartbeat_s",
    "llm_max_attempts",
    "max_steps",
    "max_llm_tokens",
    "max_wall_time_s",
    "max_artifact_bytes_in_context",
    "llm_timeout_s",
    "tool_timeout_s",
    "approval_timeout_s",
    "retry_max_s",
}


def _coerce(name: str, value: Any, annotation: str) -> Any:
    if "str" in annotation:
        if not isinstance(value, str) or value.lower() not in ("full", "normal"):
            raise ConfigError(f'config.toml: {name} must be "full" or "normal"')
        return value.lower()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"config.toml: {name} must be a number")
    if annotation == "int" and not isinstance(value, int):
        raise ConfigError(f"config.toml: {name} must be a whole number")
    if name in _POSITIVE and value <= 0:
        raise ConfigError(f"config.toml: {name} must be greater than 0")
    if value < 0:
        raise ConfigError(f"config.toml: {name} must not be negative")
    return value


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Settings for this home; a malformed config.toml is one clear ConfigError."""
    env = dict(os.environ) if env is None else env
    home = home_from_env(env)
    settings = Settings(home=home, db_file=db_file_from_url(env.get("TUI_AGENT_DB_URL", "")))
    path = settings.config_path
    if not path.exists():
        return settings
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # the home holds nothing others may read
    except OSError:
        pass
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    types = {f.name: str(f.type) for f in fields(Settings) if f.name not in ("home", "db_file")}
    changes: dict[str, Any] = {}
    for name, value in data.items():
        if name not in types:
            raise ConfigError(f"config.toml: unknown setting {name!r}")
        changes[name] = _coerce(name, value, types[name])
    settings = replace(settings, **changes)
    if settings.heartbeat_s >= settings.lease_s:
        # Every lease would run out between two heartbeats and the run change hands.
        raise ConfigError(
            f"config.toml: heartbeat_s ({settings.heartbeat_s:g}) must be shorter than "
            f"lease_s ({settings.lease_s:g})"
        )
    return settings
