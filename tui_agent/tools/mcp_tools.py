"""Tools of MCP servers (`[mcp.servers.NAME]` in config.toml), offered to runs as `NAME__TOOL`.

One `McpServers` per executor process keeps a client session per server on a background
asyncio loop (run threads are synchronous). A server starts when its tools are first asked
for; one that cannot start offers no tools (the executor log says why in one line) and is
tried again later, with backoff. A server that dies during a call leaves that call in doubt
(`CallInDoubt`): the worker leaves its step open, exactly like a call of a killed executor,
and the server starts again for the next call.

A stdio server carries the executor's mark (tools/processes.py) and a parent-death signal: it
never outlives its executor, and the supervisor ends it with a dead executor's calls.
Imported only when servers are configured: the MCP SDK is slow to load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.types import CONNECTION_CLOSED, CallToolResult, TextContent
from mcp.types import Tool as McpTool

from tui_agent.domain.models import Risk
from tui_agent.settings import McpServerConfig
from tui_agent.supervisor.backoff import RestartBackoff
from tui_agent.tools.processes import CALL_ENV, processes_marked
from tui_agent.tools.registry import CallInDoubt, Tool, ToolContext, ToolOutput

log = logging.getLogger(__name__)

SEPARATOR = "__"  # function names allow no dot: NAME__TOOL
START_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Run before the server's own command (in its process, which then execs it): the server gets
# SIGKILL when the executor dies, whatever kills it.
_LAUNCH = (
    "import ctypes,os,sys;ctypes.CDLL(None).prctl(1,9);"
    "os.getppid()==int(sys.argv[1]) or os._exit(1);os.execvp(sys.argv[2],sys.argv[2:])"
)


@dataclass
class _Server:
    config: McpServerConfig
    mark: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    session: ClientSession | None = None
    closing: asyncio.Event | None = None
    task: asyncio.Task[None] | None = None
    tools: list[Tool] = field(default_factory=list)
    started_at: float = 0.0
    problem: str | None = None  # why it is not running (None: never tried, or running)
    backoff: RestartBackoff = field(default_factory=RestartBackoff)


class McpServers:
    """The configured MCP servers of one executor process, and their tools."""

    def __init__(
        self, configs: Sequence[McpServerConfig], *, owner: str, log_dir: Path | None = None
    ) -> None:
        self._servers = {
            c.name: _Server(c, f"{owner}/mcp/{c.name}") for c in configs
        }  # the mark: never a run's (`owner/RUN/SEQ`), yet ended with the owner's calls
        self._log_dir = log_dir
        self._logs: list[TextIO] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcp", daemon=True)
        self._thread.start()

    # ---- what runs see -------------------------------------------------------------------

    def tools(self) -> list[Tool]:
        """Every server's tools, starting those not running (unless backing off)."""
        found: list[Tool] = []
        for server in self._servers.values():
            with server.lock:
                if not self._running(server) and server.backoff.ready(time.monotonic()):
                    self._start(server)
                found += server.tools
        return found

    def states(self) -> dict[str, str]:
        """Each server's state in a few words (for logs and status)."""
        return {
            name: "running" if s.session is not None else (s.problem or "not started")
            for name, s in self._servers.items()
        }

    def close(self) -> None:
        """End every server (stdin closed, then SIGTERM/SIGKILL by the SDK) and the loop."""
        for server in self._servers.values():
            self._stop(server)
        tasks = [s.task for s in self._servers.values() if s.task is not None]
        if tasks:

            async def wait_all() -> None:
                await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(wait_all(), self._loop).result(CLOSE_TIMEOUT_S + 1)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CLOSE_TIMEOUT_S)
        for fh in self._logs:
            with contextlib.suppress(OSError):
                fh.close()

    # ---- one call ------------------------------------------------------------------------

    def call(
        self, server: _Server, tool: str, ctx: ToolContext, args: dict[str, Any]
    ) -> ToolOutput:
        """Call `tool`; CallInDoubt if the server died with the call in flight."""
        name = server.config.name
        with server.lock:
            if not self._running(server):
                self._start(server)
            session = server.session
        if session is None:
            # Nothing was sent: a plain error the model can read, not a call in doubt.
            why = server.problem or "it cannot start"
            return ToolOutput(f"error: the MCP server {name} is not running: {why}", True)
        future = asyncio.run_coroutine_threadsafe(session.call_tool(tool, args), self._loop)
        deadline = time.monotonic() + ctx.timeout_s
        while True:
            try:
                result = future.result(timeout=0.05)
                break
            except TimeoutError:
                if ctx.cancel.is_set():
                    future.cancel()
                    return ToolOutput(
                        f"cancelled; whether {name} finished the call is unknown", True
                    )
                if time.monotonic() > deadline:
                    future.cancel()
                    return ToolOutput(
                        f"timed out after {ctx.timeout_s:g}s; whether the MCP server {name} "
                        "finished the call is unknown",
                        True,
                    )
                # (a stopping executor waits for the answer: it cannot take the call back)
            except McpError as exc:
                if exc.error.code == CONNECTION_CLOSED or not self._alive(server):
                    raise self._crashed(server, tool) from None
                return ToolOutput(f"error: {exc.error.message}", True)
            except Exception as exc:  # a broken stream: the request may have arrived
                log.warning("MCP server %s: %s", name, _one_line(exc))
                raise self._crashed(server, tool) from None
        with server.lock:
            server.backoff.died(lived_s=1e9, clean=True, now=time.monotonic())
        return _output(result)

    # ---- lifecycle -----------------------------------------------------------------------

    def _running(self, server: _Server) -> bool:
        if server.session is None:
            return False
        if server.config.command is not None and not self._alive(server):
            # It died between calls: nothing of ours was in flight; start it again.
            log.warning("MCP server %s exited; starting it again", server.config.name)
            self._stop(server)
            server.backoff.died(
                lived_s=time.monotonic() - server.started_at, clean=False, now=time.monotonic()
            )
            return False
        return True

    def _alive(self, server: _Server) -> bool:
        """A stdio server's process (or one it started) still runs (read from /proc)."""
        if server.config.command is None:
            return server.session is not None
        return bool(processes_marked(server.mark, exact=True))

    def _crashed(self, server: _Server, tool: str) -> CallInDoubt:
        name = server.config.name
        with server.lock:
            lived = time.monotonic() - server.started_at
            self._stop(server)
            server.problem = "it crashed"
            server.backoff.died(lived_s=lived, clean=False, now=time.monotonic())
        log.warning(
            "MCP server %s crashed during %s%s%s; it starts again for the next call",
            name,
            name,
            SEPARATOR,
            tool,
        )
        return CallInDoubt(f"the MCP server {name} crashed")

    def _stop(self, server: _Server) -> None:
        server.session = None
        closing = server.closing
        if closing is not None:
            self._loop.call_soon_threadsafe(closing.set)

    def _start(self, server: _Server) -> None:
        """Start the server and list its tools (caller holds its lock); on failure it offers
        no tools and the log says why, once per failure."""
        name = server.config.name
        server.started_at = time.monotonic()
        command = server.config.command
        try:
            if command is not None and not _command_found(server.config):
                raise FileNotFoundError(f"command {command!r} not found")
            future = asyncio.run_coroutine_threadsafe(self._open(server), self._loop)
            listed = future.result(START_TIMEOUT_S + 1)
        except Exception as exc:
            server.problem = f"cannot start: {_one_line(exc)}"
            server.tools = []
            server.backoff.died(lived_s=0.0, clean=False, now=time.monotonic())
            log.warning("MCP server %s %s; its tools are not offered", name, server.problem)
            return
        server.problem = None
        server.tools = self._as_tools(server, listed)
        log.info("MCP server %s: %d tool(s)", name, len(server.tools))

    async def _open(self, server: _Server) -> list[McpTool]:
        ready: asyncio.Future[list[McpTool]] = asyncio.get_running_loop().create_future()
        server.closing = asyncio.Event()
        server.task = asyncio.create_task(self._serve(server, server.closing, ready))
        try:
            return await asyncio.wait_for(asyncio.shield(ready), START_TIMEOUT_S)
        except BaseException:
            server.closing.set()
            server.task.cancel()
            raise

    async def _serve(
        self, server: _Server, closing: asyncio.Event, ready: asyncio.Future[list[McpTool]]
    ) -> None:
        """Hold the server's session until `closing` (the SDK's contexts live in one task)."""
        try:
            async with (
                self._transport(server.config, server.mark) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                listed: list[McpTool] = []
                cursor: str | None = None
                while True:
                    page = await session.list_tools(cursor=cursor)
                    listed += page.tools
                    cursor = page.nextCursor
                    if not cursor:
                        break
                server.session = session
                ready.set_result(listed)
                await closing.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(_leaf(exc))
            elif not closing.is_set():
                log.warning("MCP server %s: %s", server.config.name, _one_line(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            if server.closing is closing:
                server.session = None

    @asynccontextmanager
    async def _transport(self, config: McpServerConfig, mark: str) -> AsyncIterator[Any]:
        if config.url is not None:
            async with streamable_http_client(config.url) as (read, write, _):
                yield read, write
            return
        assert config.command is not None
        params = StdioServerParameters(
            command=sys.executable,
            args=["-S", "-c", _LAUNCH, str(os.getpid()), config.command, *config.args],
            env={**config.env, CALL_ENV: mark},
            cwd=config.cwd,
        )
        async with stdio_client(params, errlog=self._errlog(config.name)) as (read, write):
            yield read, write

    def _errlog(self, name: str) -> TextIO:
        """The server's stderr: a log of its own in the home's logs (else the executor's)."""
        if self._log_dir is None:
            return sys.stderr
        try:
            fh = (self._log_dir / f"mcp-{name}.log").open("a", encoding="utf-8")
        except OSError:
            return sys.stderr
        self._logs.append(fh)
        return fh

    def _as_tools(self, server: _Server, listed: list[McpTool]) -> list[Tool]:
        config = server.config
        tools: list[Tool] = []
        for mcp_tool in listed:
            exposed = f"{config.name}{SEPARATOR}{re.sub(r'[^A-Za-z0-9_-]', '_', mcp_tool.name)}"
            if not _FUNCTION_NAME.fullmatch(exposed):
                log.warning("MCP server %s: tool %r skipped (name too long)", config.name, exposed)
                continue
            rule = config.tools.get(mcp_tool.name)
            risk = rule.risk if rule is not None and rule.risk is not None else None
            idempotent = rule.idempotent if rule is not None else None
            schema = dict(mcp_tool.inputSchema or {})
            schema.setdefault("type", "object")
            schema.setdefault("properties", {})
            tools.append(
                Tool(
                    exposed,
                    risk or Risk.EXTERNAL_ACTION,
                    bool(idempotent),
                    mcp_tool.description or f"{mcp_tool.name} of the MCP server {config.name}",
                    schema,
                    _runner(self, server, mcp_tool.name),
                )
            )
        return tools


def _command_found(config: McpServerConfig) -> bool:
    """Its command exists, looked up as the server's process will (its PATH, its cwd)."""
    command = config.command or ""
    if os.sep in command and config.cwd and not os.path.isabs(command):
        command = os.path.join(config.cwd, command)
    return shutil.which(command, path=config.env.get("PATH", os.environ.get("PATH"))) is not None


def _runner(servers: McpServers, server: _Server, tool: str) -> Any:
    def run(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
        return servers.call(server, tool, ctx, args)

    return run


def _output(result: CallToolResult) -> ToolOutput:
    """The call's content as text (other kinds named); a tool error is an error step."""
    parts: list[str] = []
    for item in result.content:
        if isinstance(item, TextContent):
            parts.append(item.text)
        else:
            parts.append(f"[{item.type} content{_mime(item)}]")
    if not parts and result.structuredContent is not None:
        parts.append(json.dumps(result.structuredContent))
    return ToolOutput("\n".join(parts), failed=bool(result.isError))


def _mime(item: Any) -> str:
    mime = getattr(item, "mimeType", None)
    return f": {mime}" if mime else ""


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside the SDK's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _one_line(exc: BaseException) -> str:
    exc = _leaf(exc)
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
