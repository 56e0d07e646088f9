"""The five built-in tools of the product contract."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

from tui_agent.domain.models import INTERRUPTED_BY_STOP, Risk, StatePatch
from tui_agent.files import write_atomically
from tui_agent.tools.processes import CALL_ENV, end_marked
from tui_agent.tools.registry import Tool, ToolContext, ToolInputError, ToolOutput, ToolRegistry
from tui_agent.tools.sandbox import SandboxUnavailable, sandbox_argv
from tui_agent.tools.workspace import resolve_inside

ARTIFACT_PREFIX = "artifact:"
DEFAULT_READ_LIMIT = 8000
MAX_SHELL_OUTPUT = 10 * 1024 * 1024
LIVE_TAIL_BYTES = 64 * 1024  # of a running command's output, shown live
LIVE_EVERY_S = 0.1


def _list_dir(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
    target = resolve_inside(ctx.workspace, args.get("path", "."), ctx.private)
    if not target.is_dir():
        raise ToolInputError(f"{args.get('path', '.')!r} is not a directory")
    lines = []
    for entry in sorted(target.iterdir(), key=lambda p: p.name):
        if entry.is_dir():
            lines.append(f"{entry.name}/")
        else:
            try:
                size = entry.stat().st_size
            except OSError:
                size = 0
            lines.append(f"{entry.name} ({size} bytes)")
    return ToolOutput("\n".join(lines) if lines else "(empty directory)")


def _slice(text: str, offset: int, limit: int) -> str:
    chunk = text[offset : offset + limit]
    rest = len(text) - (offset + len(chunk))
    if rest > 0:
        chunk += f"\n[... {rest} more characters; continue with offset={offset + len(chunk)}]"
    return chunk


def _read_file(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
    path = args["path"]
    offset = int(args.get("offset", 0))
    limit = int(args.get("limit", DEFAULT_READ_LIMIT))
    if path.startswith(ARTIFACT_PREFIX):
        content = ctx.read_artifact(path[len(ARTIFACT_PREFIX) :])
        if content is None:
            raise ToolInputError(f"no artifact {path[len(ARTIFACT_PREFIX) :]!r} in this run")
        return ToolOutput(_slice(content.decode("utf-8", "replace"), offset, limit))
    target = resolve_inside(ctx.workspace, path, ctx.private)
    if not target.is_file():
        raise ToolInputError(f"{path!r} is not a file")
    text = target.read_bytes().decode("utf-8", "replace")
    return ToolOutput(_slice(text, offset, limit))


def _write_file(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
    target = resolve_inside(ctx.workspace, args["path"], ctx.private)
    if target.is_dir():
        raise ToolInputError(f"{args['path']!r} is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    data = args["content"].encode()
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    write_atomically(target, data, mode)
    relative = os.path.relpath(target, os.path.realpath(ctx.workspace))
    return ToolOutput(
        f"wrote {len(data)} bytes to {args['path']}",
        produced={"type": "file", "path": relative, "bytes": len(data)},
    )


def _run_shell(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
    if not ctx.workspace.is_dir():
        raise ToolInputError(f"the workspace {ctx.workspace} no longer exists")
    timeout = float(args.get("timeout_s", ctx.timeout_s))
    timeout = min(timeout, ctx.timeout_s) if timeout > 0 else ctx.timeout_s
    try:
        argv = sandbox_argv(
            args["command"], mode=ctx.sandbox, workspace=ctx.workspace, private=ctx.private
        )
    except SandboxUnavailable as exc:
        raise ToolInputError(f"the command was not run: {exc}") from None
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            argv,
            cwd=ctx.workspace,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_command_env(ctx.call_mark),
            preexec_fn=_die_with_parent() if ctx.sandbox == "none" else None,
        )
        deadline = time.monotonic() + timeout
        outcome = ""
        shown = 0.0
        while proc.poll() is None:
            if ctx.on_output is not None and time.monotonic() - shown >= LIVE_EVERY_S:
                shown = time.monotonic()
                _show_output(out.fileno(), ctx.on_output)
            if ctx.cancel.is_set():
                outcome = "cancelled"
            elif ctx.stop.is_set():
                outcome = INTERRUPTED_BY_STOP
            elif time.monotonic() > deadline:
                outcome = f"timed out after {timeout:g}s"
            if outcome:
                _end_command(proc, ctx)
                break
            time.sleep(0.02)
        else:
            _end_command(proc, ctx)  # what it left in the background ends with it
        out.seek(0)
        output = out.read(MAX_SHELL_OUTPUT).decode("utf-8", "replace")
    header = outcome or f"exit code {proc.returncode}"
    return ToolOutput(f"{header}\n{output}", failed=bool(outcome))


def _show_output(fd: int, on_output: Callable[[str], None]) -> None:
    """Hand the output's tail to the live view (it skips what did not change). pread: the
    command writes through the same file offset, which a seek here would move."""
    size = os.fstat(fd).st_size
    if size:
        start = max(0, size - LIVE_TAIL_BYTES)
        on_output(os.pread(fd, size - start, start).decode("utf-8", "replace"))


def _command_env(call_mark: str) -> dict[str, str]:
    """The executor's environment without secrets, plus the call's mark."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TUI_AGENT_", "OPENAI_")) and k != CALL_ENV
    }
    if call_mark:
        env[CALL_ENV] = call_mark
    return env


def _end_command(proc: subprocess.Popen[bytes], ctx: ToolContext) -> None:
    """Kill the command's group and wait for it. In the sandbox that is all: its PID
    namespace dies with it. Unconfined, whatever else carries the call's mark is ended too
    (a process that left the group), which scans /proc, so only there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if ctx.sandbox == "none" and ctx.call_mark:
        end_marked(ctx.call_mark)


def _die_with_parent() -> Callable[[], None]:
    """For the child before exec (unconfined commands only): die when the executor dies.

    prctl is looked up here, in the parent: the child of a threaded process must not load
    libraries. If the executor died before prctl took effect, the child exits at once."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def in_child() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return in_child


def _update_state(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
    try:
        patch = StatePatch.parse(args["patch"])
    except ValueError as exc:
        raise ToolInputError(f"invalid patch: {exc}") from None
    return ToolOutput("state updated", patch=patch)


def builtin_registry(more: Callable[[], list[Tool]] | None = None) -> ToolRegistry:
    """The built-in tools, with those `more` offers (MCP servers')."""
    path = {"type": "string", "description": "path relative to the workspace"}
    return ToolRegistry(
        [
            Tool(
                "list_dir",
                Risk.READ_ONLY,
                True,
                "List a directory of the workspace (directories end with '/').",
                {"type": "object", "properties": {"path": path}, "required": []},
                _list_dir,
            ),
            Tool(
                "read_file",
                Risk.READ_ONLY,
                True,
                "Read a slice of a text file of the workspace, or of a stored artifact "
                "(path 'artifact:ID'). offset and limit count characters.",
                {
                    "type": "object",
                    "properties": {
                        "path": path,
                        "offset": {"type": "integer", "minimum": 0},
                        "limit": {"type": "integer", "minimum": 1},
                    },
                    "required": ["path"],
                },
                _read_file,
            ),
            Tool(
                "write_file",
                Risk.WRITE_LOCAL,
                True,
                "Write a text file in the workspace (replaces it whole).",
                {
                    "type": "object",
                    "properties": {"path": path, "content": {"type": "string"}},
                    "required": ["path", "content"],
                },
                _write_file,
            ),
            Tool(
                "run_shell",
                Risk.EXTERNAL_ACTION,
                False,
                "Run a shell command in the workspace; returns its exit code and output.",
                {
                    "type": "object",
                    "properties": {
                        "command": {"type": "string"},
                        "timeout_s": {"type": "number", "minimum": 0},
                    },
                    "required": ["command"],
                },
                _run_shell,
            ),
            Tool(
                "update_state",
                Risk.READ_ONLY,
                True,
                "Change the agent state: patch may have plan (replaces it), add_facts, "
                "add_questions, resolve_questions, add_risk_flags.",
                {
                    "type": "object",
                    "properties": {
                        "patch": {
                            "type": "object",
                            "properties": {
                                "plan": {"type": "array", "items": {"type": "string"}},
                                "add_facts": {"type": "array"},
                                "add_questions": {"type": "array", "items": {"type": "string"}},
                                "resolve_questions": {"type": "array", "items": {"type": "string"}},
                                "add_risk_flags": {"type": "array", "items": {"type": "string"}},
                            },
                        }
                    },
                    "required": ["patch"],
                },
                _update_state,
            ),
        ],
        more,
    )
