"""Where data lives and how the app is tuned: env vars, then `config.toml`, then defaults."""

from __future__ import annotations

import difflib
import errno
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from platformdirs import user_data_dir

from tui_agent.domain.compaction import MAX_CONTEXT_TOKENS, MIN_CONTEXT_TOKENS
from tui_agent.domain.errors import TuiAgentError
from tui_agent.domain.models import Budget, Risk


class ConfigError(TuiAgentError):
    exit_code = 2


@dataclass(frozen=True)
class McpToolConfig:
    """How one MCP tool is treated (None: the default, `external_action`, not idempotent)."""

    risk: Risk | None = None
    idempotent: bool | None = None


@dataclass(frozen=True)
class McpServerConfig:
    """One `[mcp.servers.NAME]` of config.toml: a stdio command, or a streamable HTTP url."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, hash=False)
    cwd: str | None = None
    url: str | None = None
    tools: dict[str, McpToolConfig] = field(default_factory=dict, hash=False)


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
    max_context_tokens: int | None = None
    db_file: Path | None = None  # from TUI_AGENT_DB_URL; None: the database in the home
    # A PostgreSQL URL from TUI_AGENT_DB_URL (it may hold a password: never shown or logged).
    db_url: str | None = field(default=None, repr=False)
    queues: tuple[str, ...] = ("default",)
    executors: int = 1
    retention_days: float | None = None  # final runs older than this are pruned daily
    maintenance_delay_s: float = 60.0  # the supervisor's first daily pass, after its start
    node: str = ""  # this machine's name among the supervisors of a shared store
    mcp_servers: tuple[McpServerConfig, ...] = ()  # `[mcp.servers.NAME]`: tools of MCP servers
    # Ask the model with stream=True and show its reply (and commands' output) as it comes.
    stream: bool = True

    @property
    def live_dir(self) -> Path:
        """The live channel's files (tui_agent/live.py): text under way, never recorded."""
        return self.home / "live"

    @property
    def db_path(self) -> Path:
        return self.db_file or self.home / "tui-agent.db"

    @property
    def shared(self) -> bool:
        """The runs live in PostgreSQL, perhaps served by several machines."""
        return self.db_url is not None

    @property
    def store_label(self) -> str:
        """Where the runs are, as people read it: the file, or `PostgreSQL HOST:PORT/DB`
        (never the user or password)."""
        return str(self.db_path) if self.db_url is None else postgres_label(self.db_url)

    @property
    def store_mark_path(self) -> Path:
        """Which store the home's running supervisor serves (its `store_label`)."""
        return self.home / "supervisor.store"

    def child_env(self) -> dict[str, str]:
        """The environment of a process we start, pinned to this same home and database
        (absolute paths: a detached supervisor does not share our working directory)."""
        env = {**os.environ, "TUI_AGENT_HOME": str(self.home), "TUI_AGENT_NODE": self.node}
        if self.db_file is not None:
            env["TUI_AGENT_DB_URL"] = f"sqlite:///{self.db_file}"
        elif self.db_url is not None:
            env["TUI_AGENT_DB_URL"] = self.db_url
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

    @property
    def api_token_path(self) -> Path:
        """The HTTP API's bearer token (0600), also the key callbacks are signed with."""
        return self.home / "api-token"

    def default_budget(self) -> Budget:
        return Budget(
            max_steps=self.max_steps,
            max_llm_tokens=self.max_llm_tokens,
            max_wall_time_s=self.max_wall_time_s,
            max_artifact_bytes_in_context=self.max_artifact_bytes_in_context,
            llm_timeout_s=self.llm_timeout_s,
            tool_timeout_s=self.tool_timeout_s,
            max_context_tokens=self.max_context_tokens,
        )


def home_from_env(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if env.get("TUI_AGENT_HOME"):
        return Path(env["TUI_AGENT_HOME"]).expanduser().absolute()
    return Path(user_data_dir("tui-agent", appauthor=False))


URL_FORMS = "sqlite:///PATH or postgresql+psycopg://USER[:PASS]@HOST:PORT/DB"


def postgres_url(url: str) -> str | None:
    """A PostgreSQL `TUI_AGENT_DB_URL` in the form psycopg connects with, else None.

    Errors name the part that is wrong, never the URL: it may carry a password."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    dialect, _, driver = scheme.lower().partition("+")
    if not sep or dialect not in ("postgresql", "postgres"):
        return None
    if driver not in ("", "psycopg"):
        raise ConfigError(
            f"TUI_AGENT_DB_URL: the {driver} driver is not supported; use postgresql+psycopg://"
        )
    location = rest.rpartition("@")[2]
    if not location.split("/", 1)[0] or "/" not in location or not location.split("/", 1)[1]:
        raise ConfigError(
            "TUI_AGENT_DB_URL: a PostgreSQL URL needs a host and a database "
            "(postgresql+psycopg://USER[:PASS]@HOST:PORT/DB)"
        )
    normal = f"postgresql://{rest}"
    postgres_params(normal)  # every part must parse here: libpq's errors quote the URL
    return normal


def postgres_label(url: str) -> str:
    """A PostgreSQL store as people read it: `PostgreSQL HOST:PORT/DB`, no user, no password."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"PostgreSQL {parts.hostname or 'localhost'}{port}{parts.path or '/'}"


def postgres_params(url: str) -> dict[str, Any]:
    """psycopg's connection keywords from a PostgreSQL URL, parsed here (percent-decoded),
    so that libpq never sees the URL: its parse errors quote it, password and all."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        what = "port (a number from 1 to 65535)" if "port" in str(exc).lower() else "host"
        raise ConfigError(f"TUI_AGENT_DB_URL: the {what} is not valid") from None
    params: dict[str, Any] = {"host": host, "dbname": unquote(parts.path.lstrip("/"))}
    if port is not None:
        params["port"] = port
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password is not None:
        params["password"] = unquote(parts.password)
    for key, value in parse_qsl(parts.query):
        params[key] = value  # e.g. sslmode=require
    return params


def db_file_from_url(url: str) -> Path | None:
    """`TUI_AGENT_DB_URL` as a SQLite file (None for the home's, or for PostgreSQL). Errors
    never repeat the URL: a server URL may carry a password, which must never reach a
    terminal or a log."""
    url = url.strip()
    if not url or postgres_url(url) is not None:
        return None
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"TUI_AGENT_DB_URL is not a database URL (expected {URL_FORMS})")
    dialect = scheme.split("+", 1)[0].lower()
    if dialect != "sqlite":
        raise ConfigError(
            f"TUI_AGENT_DB_URL: {dialect or 'this'} databases are not supported; use {URL_FORMS}"
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


def _node_name(home: Path) -> str:
    """This machine's name among a shared store's supervisors: its hostname and an id kept
    in the home, so cloned machines (or containers) with one hostname never pass for one
    another (each would free the other's runs as its own dead executors')."""
    path = home / "node-id"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    if not token:
        token = os.urandom(3).hex()
        try:
            ensure_private_dir(home)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
        except FileExistsError:
            token = path.read_text(encoding="utf-8").strip() or token
        except (OSError, ConfigError):
            pass  # a read-only home: this process's own id, still unique
    return f"{socket.gethostname()}-{token}"


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
    "max_context_tokens",
    "approval_timeout_s",
    "retry_max_s",
    "executors",
    "retention_days",
}


QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_queue(name: str, where: str = "--queue") -> str:
    """A queue is a short plain name (it is shown in lists and matched exactly)."""
    if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: a queue name is 1-64 letters, digits, '.', '_' or '-', not {name!r}"
        )
    return name


def _coerce(name: str, value: Any, annotation: str) -> Any:
    if name == "queues":
        if not isinstance(value, list) or not value:
            raise ConfigError('config.toml: queues must be a list of names, e.g. ["default"]')
        return tuple(dict.fromkeys(check_queue(v, "config.toml: queues") for v in value))
    if annotation == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"config.toml: {name} must be true or false")
        return value
    if "str" in annotation:
        if not isinstance(value, str) or value.lower() not in ("full", "normal"):
            raise ConfigError(f'config.toml: {name} must be "full" or "normal"')
        return value.lower()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"config.toml: {name} must be a number")
    if annotation.split(" |")[0] == "int" and not isinstance(value, int):
        raise ConfigError(f"config.toml: {name} must be a whole number")
    if name in _POSITIVE and value <= 0:
        raise ConfigError(f"config.toml: {name} must be greater than 0")
    if name == "max_context_tokens" and not MIN_CONTEXT_TOKENS <= value <= MAX_CONTEXT_TOKENS:
        raise ConfigError(
            f"config.toml: max_context_tokens must be {MIN_CONTEXT_TOKENS:,} to "
            f"{MAX_CONTEXT_TOKENS:,}, not {value:,}"
        )
    if value < 0:
        raise ConfigError(f"config.toml: {name} must not be negative")
    return value


def load_settings(env: dict[str, str] | None = None, *, read_config: bool = True) -> Settings:
    """Settings for this home; a malformed config.toml is one clear ConfigError. Without
    `read_config`, the defaults (what stopping a supervisor needs, whatever the file says)."""
    env = dict(os.environ) if env is None else env
    home = home_from_env(env)
    url = env.get("TUI_AGENT_DB_URL", "")
    settings = Settings(
        home=home,
        db_file=db_file_from_url(url),
        db_url=postgres_url(url),
        # Machines sharing a store tell their executors apart by it (a private store: "").
        node=(env.get("TUI_AGENT_NODE") or _node_name(home)) if postgres_url(url) else "",
    )
    return with_config(settings) if read_config else settings


def with_config(base: Settings) -> Settings:
    """`base`'s home and store with what config.toml says now (the defaults without one):
    a long-lived app reads it again before a start, as a new command would."""
    settings = Settings(home=base.home, db_file=base.db_file, db_url=base.db_url, node=base.node)
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
    try:
        return _apply_config(settings, data)
    except ConfigError as exc:  # said with the file's whole path, as a syntax error is
        raise ConfigError(str(exc).replace("config.toml:", f"{path}:", 1)) from None


def _apply_config(settings: Settings, data: dict[str, Any]) -> Settings:
    fixed = ("home", "db_file", "db_url", "node", "mcp_servers")
    types = {f.name: str(f.type) for f in fields(Settings) if f.name not in fixed}
    changes: dict[str, Any] = {}
    if "mcp" in data:
        changes["mcp_servers"] = parse_mcp(data.pop("mcp"))
    for name, value in data.items():
        if name not in types:
            near = difflib.get_close_matches(name, [*types, "mcp"], n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"config.toml: unknown setting {name!r}{hint}")
        changes[name] = _coerce(name, value, types[name])
    settings = replace(settings, **changes)
    if settings.heartbeat_s >= settings.lease_s:
        # Every lease would run out between two heartbeats and the run change hands.
        raise ConfigError(
            f"config.toml: heartbeat_s ({settings.heartbeat_s:g}) must be shorter than "
            f"lease_s ({settings.lease_s:g})"
        )
    return settings


MCP_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}")
_MCP_SERVER_KEYS = {"command", "args", "env", "cwd", "url", "tools"}


def parse_mcp(data: Any) -> tuple[McpServerConfig, ...]:
    """The `[mcp]` table: `[mcp.servers.NAME]` with command/args/env/cwd (stdio) or url
    (streamable HTTP), and `[mcp.servers.NAME.tools.TOOL]` with risk and idempotent."""
    if not isinstance(data, dict) or set(data) - {"servers"}:
        raise ConfigError("config.toml: [mcp] holds only [mcp.servers.NAME] tables")
    servers = data.get("servers", {})
    if not isinstance(servers, dict):
        raise ConfigError("config.toml: mcp.servers must be tables [mcp.servers.NAME]")
    return tuple(_mcp_server(name, spec) for name, spec in servers.items())


def _mcp_server(name: str, spec: Any) -> McpServerConfig:
    where = f"config.toml: mcp.servers.{name}"
    # Tools are offered as NAME__TOOL: a function name allows letters, digits, '_' and '-'.
    if not MCP_SERVER_NAME.fullmatch(name):
        raise ConfigError(
            f"config.toml: MCP server name {name!r} must be 1-32 letters, digits or '-'"
        )
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(spec) - _MCP_SERVER_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    command, url = spec.get("command"), spec.get("url")
    if command is not None and url is not None:
        raise ConfigError(f"{where}: give command (a stdio server) or url, not both")
    if command is None and url is None:
        raise ConfigError(f"{where} needs command (a stdio server) or url (streamable HTTP)")
    if url is not None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: url must be an http(s) URL")
        for key in ("args", "env", "cwd"):
            if key in spec:
                raise ConfigError(f"{where}: {key} applies to a command, not to a url")
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise ConfigError(f"{where}: command must be a non-empty string")
    args = spec.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where}: args must be a list of strings")
    env = spec.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError(f"{where}: env must be a table of strings")
    cwd = spec.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ConfigError(f"{where}: cwd must be a string")
    tools = spec.get("tools", {})
    if not isinstance(tools, dict):
        raise ConfigError(f"{where}: tools must be tables [mcp.servers.{name}.tools.TOOL]")
    return McpServerConfig(
        name=name,
        command=command,
        args=tuple(args),
        env=dict(env),
        cwd=str(Path(cwd).expanduser()) if cwd else None,
        url=url,
        tools={tool: _mcp_tool(f"{where}.tools.{tool}", t) for tool, t in tools.items()},
    )


def _mcp_tool(where: str, spec: Any) -> McpToolConfig:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(spec) - {"risk", "idempotent"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    risk = spec.get("risk")
    if risk is not None and risk not in {r.value for r in Risk}:
        choices = ", ".join(r.value for r in Risk)
        raise ConfigError(f"{where}: risk must be one of {choices}, not {risk!r}")
    idempotent = spec.get("idempotent")
    if idempotent is not None and not isinstance(idempotent, bool):
        raise ConfigError(f"{where}: idempotent must be true or false")
    return McpToolConfig(Risk(risk) if risk is not None else None, idempotent)
