"""The MCP server (FastMCP from the MCP Python SDK): the CLI's run commands as tools and each
run's agent state as resources, over the same service, so validation, status rules and
errors are the CLI's.

The service's calls block on the store: each runs in a worker thread (as the HTTP API's
routes do), never on the event loop that speaks the protocol. While it serves, it keeps a
supervisor alive for the runs that want one, as `serve` and the open TUI do.

Stdout *is* the protocol: `serve` gives the SDK a private copy of it and points file
descriptor 1 at stderr, so a stray print (or a child process) can never corrupt a message.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from io import TextIOWrapper
from typing import Any, TypeVar

import anyio
from anyio import to_thread
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ResourceError, ToolError
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.stdio import stdio_server
from mcp.types import ContentBlock, JSONRPCMessage, ToolAnnotations
from pydantic import AnyUrl, ValidationError

from tui_agent import __version__
from tui_agent.domain.errors import BadInput, TuiAgentError
from tui_agent.service.api import AgentService, StartRequest
from tui_agent.service.fields import in_field_names
from tui_agent.service.keeper import keep_supervisor
from tui_agent.service.views import run_json, summary_json

RUNS_LISTED = 50
log = logging.getLogger("tui_agent.mcp")
T = TypeVar("T")

INSTRUCTIONS = (
    "tui-agent runs AI agent runs durably. Start one with start_run; a risky tool call "
    "waits for approve or deny; read a run with get_run or the resource state://runs/ID "
    "(its goal, plan, facts, questions and artifacts); state://runs lists the newest runs."
)


class _Server(FastMCP):
    """FastMCP whose tool errors are one line a person can read, never a traceback."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any]
    ) -> Sequence[ContentBlock] | dict[str, Any]:
        try:
            return await super().call_tool(name, arguments)
        except ToolError as exc:
            raise ToolError(_error_line(exc)) from None

    async def read_resource(self, uri: AnyUrl | str) -> Iterable[ReadResourceContents]:
        try:
            return await super().read_resource(uri)
        except Exception as exc:
            cause = _domain_error(exc)
            if cause is None:
                raise
            raise ResourceError(_one_line(str(cause))) from None


def _domain_error(exc: BaseException) -> TuiAgentError | None:
    """The service's error under the SDK's wrappers (which chain it only implicitly)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TuiAgentError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _error_line(exc: ToolError) -> str:
    cause = exc.__cause__
    if isinstance(cause, TuiAgentError):
        return _one_line(in_field_names(str(cause)))
    if isinstance(cause, ValidationError):
        first = cause.errors()[0] if cause.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _one_line(f"{where}: {first.get('msg', 'malformed')}" if where else str(cause))
    if isinstance(cause, UnicodeError):  # text no store can keep; refused before writing
        return "the request holds text that is not valid"
    if cause is None:  # the SDK's own (an unknown tool): already a line
        return _one_line(str(exc))
    log.error("unexpected error", exc_info=cause)
    return f"internal error: {type(cause).__name__}"


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "error"


def create_server(service: AgentService) -> FastMCP:
    """The server over `service`; decisions are recorded as the service's `who`."""
    server = _Server("tui-agent", instructions=INSTRUCTIONS, log_level="WARNING")
    server._mcp_server.version = __version__  # the SDK would name its own version

    def tool(**options: Any) -> Callable[[Callable[..., Any]], Any]:
        """`server.tool` with the docstring as a client shows it (no source indentation)."""

        def register(fn: Callable[..., Any]) -> Any:
            return server.tool(description=inspect.cleandoc(fn.__doc__ or ""), **options)(fn)

        return register

    async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await to_thread.run_sync(lambda: fn(*args, **kwargs))

    def show(run_id: str) -> dict[str, Any]:
        return run_json(service.run_view(run_id))

    def state_of(ref: str) -> dict[str, Any]:
        view = service.run_view(service.resolve_ref(ref))
        data = run_json(view)
        return {
            "id": data["id"],
            "status": data["status"],
            "reason": data["reason"],
            "usage": data["usage"],
            "state": data["state"],
            "pending_approvals": data["pending_approvals"],
            "result": data["result"],
            "error": data["error"],
        }

    def newest() -> dict[str, Any]:
        runs = service.list_runs(limit=RUNS_LISTED)
        return {"runs": [summary_json(r, service.reason(r)) for r in runs]}

    @server.resource(
        "state://runs",
        name="runs",
        description=f"The {RUNS_LISTED} newest runs, newest first (id, status, goal, reason).",
        mime_type="application/json",
    )
    async def runs() -> str:
        return _dumps(await call(newest))

    @server.resource(
        "state://runs/{run}",
        name="run_state",
        description="A run's agent state (goal, constraints, budget, plan, facts, questions, "
        "artifacts) with its status, reason and usage. RUN is the id or a unique prefix.",
        mime_type="application/json",
    )
    async def run_state(run: str) -> str:
        return _dumps(await call(state_of, run))

    @tool()
    async def start_run(
        goal: str,
        workspace: str | None = None,
        model: str | None = None,
        max_steps: int | None = None,
        auto_approve: list[str] | None = None,
    ) -> dict[str, Any]:
        """Start a run toward `goal` (as `tui-agent run`). `workspace` is an absolute path
        (default: the demo's own folder for the demo model), `auto_approve` lists risks
        approved without asking (e.g. write_local). Returns the run as `show --json`."""
        if workspace is not None and not workspace.startswith("/"):
            raise BadInput(
                "workspace must be an absolute path (the server's own directory is not yours)"
            )

        def start() -> dict[str, Any]:
            run, _ = service.start_run(
                StartRequest(
                    goal=goal,
                    workspace=workspace,
                    model=model,
                    max_steps=max_steps,
                    auto_approve=tuple(auto_approve or ()),
                )
            )
            data = show(run.id)
            problem = getattr(service, "supervisor_problem", None)
            if problem:  # the run is saved; say why nothing runs it yet
                data["supervisor_problem"] = problem
            return data

        return await call(start)

    @tool(annotations=ToolAnnotations(readOnlyHint=True))
    async def get_run(run: str) -> dict[str, Any]:
        """The run as `tui-agent show --json` prints it (RUN: the id or a unique prefix)."""
        return await call(lambda: show(service.resolve_ref(run)))

    @tool()
    async def approve(run: str, always: bool = False) -> dict[str, Any]:
        """Approve the run's pending tool call; `always` approves that tool for the rest of
        the run. Returns the run."""

        def decide() -> dict[str, Any]:
            run_id = service.resolve_ref(run)
            service.approve(run_id, always=always)
            return show(run_id)

        return await call(decide)

    @tool()
    async def deny(run: str, reason: str | None = None) -> dict[str, Any]:
        """Deny the run's pending tool call (the model is told, with `reason` if given).
        Returns the run."""

        def decide() -> dict[str, Any]:
            run_id = service.resolve_ref(run)
            service.deny(run_id, reason=reason)
            return show(run_id)

        return await call(decide)

    @tool(annotations=ToolAnnotations(destructiveHint=True, idempotentHint=True))
    async def cancel(run: str) -> dict[str, Any]:
        """Cancel the run (a run under way stops at its next step). Returns the run."""

        def decide() -> dict[str, Any]:
            run_id = service.resolve_ref(run)
            service.cancel(run_id)
            return show(run_id)

        return await call(decide)

    @tool()
    async def say(run: str, text: str) -> dict[str, Any]:
        """A follow-up or steering message: a completed run continues with it, one under way
        sees it at its next model call. Returns the run with the message's `message_seq`."""

        def tell() -> dict[str, Any]:
            run_id = service.resolve_ref(run)
            _, seq = service.say(run_id, text)
            return {**show(run_id), "message_seq": seq}

        return await call(tell)

    return server


class _ProtocolLines:
    """stdin's lines for the SDK's stdio transport, read when the event loop says they are
    there, not by a thread blocked in read(): so Ctrl+C ends the server at once (the SDK's
    thread held it until stdin closed). A line that is not a JSON-RPC message is told on
    stderr in one line and skipped (the SDK logged a many-line validation error)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""
        self.eof = False
        # A regular file (stdin redirected from one) cannot be waited on; it never blocks.
        self.pollable = not stat.S_ISREG(os.fstat(fd).st_mode)

    def __aiter__(self) -> _ProtocolLines:
        return self

    async def __anext__(self) -> str:
        while True:
            line = await self._line()
            if line is None:
                raise StopAsyncIteration
            if not line.strip():
                continue
            try:
                JSONRPCMessage.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                why = first.get("msg", "malformed")
                sys.stderr.write(
                    f"tui-agent mcp: ignored a line that is not a JSON-RPC message ({why})\n"
                )
                continue
            return line

    async def _line(self) -> str | None:
        while b"\n" not in self.pending and not self.eof:
            if self.pollable:
                await anyio.wait_readable(self.fd)
            chunk = os.read(self.fd, 65536)
            self.eof = not chunk
            self.pending += chunk
        if not self.pending:
            return None
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode("utf-8", errors="replace")


def serve(service: AgentService) -> int:
    """Speak MCP on stdin/stdout until the client closes stdin (or Ctrl+C, SIGTERM)."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray write lands in stderr
    server = create_server(service)
    service.warm_up()
    if sys.stdin.isatty():  # a person at a terminal, not a client: say it is listening
        sys.stderr.write(
            "tui-agent mcp: serving MCP on stdin/stdout for an MCP client "
            "(Ctrl+C or end of input stops it)\n"
        )

    async def run() -> None:
        out = anyio.wrap_file(TextIOWrapper(protocol, encoding="utf-8", write_through=True))
        lines: Any = _ProtocolLines(sys.stdin.fileno())
        async with (
            stdio_server(stdin=lines, stdout=out) as (read_stream, write_stream),
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(keep_supervisor, service, log)
            # FastMCP's own run_stdio_async takes no streams: its low-level server, given ours.
            low = server._mcp_server
            await low.run(read_stream, write_stream, low.create_initialization_options())
            tasks.cancel_scope.cancel()  # the client is gone: so is the keeper

    try:
        anyio.run(run)
    finally:
        protocol.close()
    return 0


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)
