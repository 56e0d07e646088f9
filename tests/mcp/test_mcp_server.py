"""`tui-agent mcp serve` as a real process, driven by the MCP SDK's own stdio client: the
CLI's rules and errors, decisions recorded as made over MCP."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from anyio import to_thread
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError
from mcp.types import CallToolResult, TextResourceContents

from tests.conftest import Home

pytestmark = pytest.mark.both_stores


@asynccontextmanager
async def mcp_session(home: Home) -> AsyncIterator[ClientSession]:
    """A session with a `tui-agent mcp serve` of `home` (its stderr kept in the home)."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "tui_agent", "mcp", "serve"],
        env=home.env,
        cwd=str(home.workspace),
    )
    with (home.path.parent / "mcp-stderr.log").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert not result.isError, _text(result)
    return dict(json.loads(_text(result)))


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    """The one line of a tool error."""
    result = await session.call_tool(tool, arguments)
    assert result.isError, _text(result)
    line = _text(result)
    assert "\n" not in line and "Traceback" not in line, line
    return line


async def read(session: ClientSession, uri: str) -> Any:
    contents = (await session.read_resource(uri)).contents  # type: ignore[arg-type]
    assert isinstance(contents[0], TextResourceContents)
    assert contents[0].mimeType == "application/json"
    return json.loads(contents[0].text)


def _text(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def wait_status(home: Home, run_id: str, *statuses: str) -> dict[str, Any]:
    return await to_thread.run_sync(lambda: home.wait_status(run_id, *statuses))


def _count(home: Home, table: str) -> int:
    return int(home.query(f"SELECT count(*) FROM {table}")[0][0])


async def test_tools_and_resources_are_listed(home: Home) -> None:
    async with mcp_session(home) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"start_run", "get_run", "approve", "deny", "cancel", "say"} <= set(tools)
        assert tools["start_run"].inputSchema["required"] == ["goal"]
        assert all("\n    " not in (t.description or "") for t in tools.values())
        assert tools["get_run"].annotations and tools["get_run"].annotations.readOnlyHint
        assert tools["cancel"].annotations and tools["cancel"].annotations.destructiveHint
        resources = [str(r.uri) for r in (await session.list_resources()).resources]
        assert resources == ["state://runs"]
        templates = (await session.list_resource_templates()).resourceTemplates
        assert [t.uriTemplate for t in templates] == ["state://runs/{run}"]
        assert await read(session, "state://runs") == {"runs": []}
    assert (home.path.parent / "mcp-stderr.log").read_text().strip() == ""


async def test_a_run_is_started_read_and_approved_over_mcp(home: Home) -> None:
    async with mcp_session(home) as session:
        run = await call(
            session,
            "start_run",
            goal="summarise the workspace",
            workspace=str(home.workspace),
            model="demo",
        )
        assert run["status"] in ("queued", "running", "waiting_approval")
        await wait_status(home, run["id"], "waiting_approval")  # the supervisor was started

        listed = (await read(session, "state://runs"))["runs"]
        assert [(r["id"], r["status"]) for r in listed] == [(run["id"], "waiting_approval")]
        assert listed[0]["goal"] == "summarise the workspace" and listed[0]["reason"]
        state = await read(session, f"state://runs/{run['id'][:8]}")
        assert state["id"] == run["id"] and state["status"] == "waiting_approval"
        assert state["state"]["goal"] == "summarise the workspace"
        assert {"plan", "known_facts", "open_questions", "artifacts"} <= set(state["state"])
        assert state["state"]["plan"], "the demo makes a plan before it writes"
        assert state["pending_approvals"] and state["usage"]["steps"] >= 1

        shown = await call(session, "get_run", run=run["id"][:8])
        assert shown["status"] == "waiting_approval" and shown["pending_approvals"][0]["tool"]
        decided = await call(session, "approve", run=run["id"])
        assert decided["id"] == run["id"]
        done = await wait_status(home, run["id"], "completed")
        (approval,) = done["approvals"]
        assert approval["status"] == "approved" and approval["decided_by"].endswith(" (MCP)")
        said = await call(session, "say", run=run["id"], text="one more thing")
        message = next(s for s in said["steps"] if s["seq"] == said["message_seq"])
        assert message["kind"] == "user" and message["by"].endswith(" (MCP)")
        await wait_status(home, run["id"], "completed")


async def test_deny_with_a_reason_and_cancel_over_mcp(home: Home) -> None:
    async with mcp_session(home) as session:
        ws = str(home.workspace)
        first = await call(session, "start_run", goal="summarise", workspace=ws, model="demo")
        second = await call(session, "start_run", goal="again", workspace=ws, model="demo")
        await wait_status(home, first["id"], "waiting_approval")
        await wait_status(home, second["id"], "waiting_approval")

        await call(session, "deny", run=first["id"], reason="not in this folder")
        denied = await wait_status(home, first["id"], "completed", "failed", "paused")
        (approval,) = denied["approvals"]
        assert approval["status"] == "denied" and approval["decided_by"].endswith(" (MCP)")
        assert approval["decision_reason"] == "not in this folder"

        await call(session, "cancel", run=second["id"])
        await wait_status(home, second["id"], "cancelled")
        line = await refused(session, "approve", run=second["id"])
        assert "cancelled" in line


async def test_bad_input_is_a_one_line_tool_error_and_writes_nothing(home: Home) -> None:
    async with mcp_session(home) as session:
        ws = str(home.workspace)
        assert "must not be empty" in await refused(session, "start_run", goal="  ", workspace=ws)
        assert "absolute" in await refused(session, "start_run", goal="x", workspace="rel")
        line = await refused(session, "start_run", goal="x", workspace=ws, max_steps="many")
        assert "max_steps" in line
        line = await refused(session, "start_run", goal="x", workspace=ws, max_steps=0)
        assert "max_steps" in line and "--" not in line
        assert "no run" in await refused(session, "get_run", run="ffffffff")
        assert "no run" in await refused(session, "approve", run="ffffffff")
        assert "no run" in await refused(session, "deny", run="ffffffff", reason="no")
        assert "no run" in await refused(session, "cancel", run="ffffffff")
        assert "no run" in await refused(session, "say", run="ffffffff", text="hi")
        assert (await session.call_tool("no_such_tool", {})).isError
        with pytest.raises(McpError, match=r"^no run"):
            await session.read_resource("state://runs/ffffffff")  # type: ignore[arg-type]
        assert (await read(session, "state://runs")) == {"runs": []}
    assert _count(home, "runs") == 0 and _count(home, "approvals") == 0


async def test_a_run_whose_supervisor_was_killed_goes_on_while_mcp_serves(home: Home) -> None:
    home.env["TUI_AGENT_DEMO_DELAY"] = "0.5"  # slow enough to be killed mid-run
    async with mcp_session(home) as session:
        run = await call(
            session,
            "start_run",
            goal="summarise",
            workspace=str(home.workspace),
            model="demo",
            auto_approve=["write_local"],
        )
        await wait_status(home, run["id"], "running")
        first = home.supervisor_pid()
        await to_thread.run_sync(home.kill_all)  # supervisor and executors, not the server
        done = await wait_status(home, run["id"], "completed")  # its keeper started another
        assert done["result"] and home.supervisor_pid() not in (None, first)


def test_a_person_at_the_terminal_gets_one_line_for_garbage_and_ctrl_c_ends_it(
    home: Home,
) -> None:
    """Typed by hand: a line that is not JSON-RPC is one line on stderr and the server goes
    on; it names tui-agent's version; Ctrl+C (SIGINT) ends it at once, stdin still open."""
    import signal
    import subprocess
    import time

    from tui_agent import __version__

    proc = subprocess.Popen(
        [sys.executable, "-m", "tui_agent", "mcp", "serve"],
        env=home.env,
        cwd=home.workspace,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        hello = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "a person", "version": "1"},
            },
        }
        proc.stdin.write("hello there\n\n" + json.dumps(hello) + "\n")
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
        assert answer["id"] == 1
        assert answer["result"]["serverInfo"] == {"name": "tui-agent", "version": __version__}
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        assert time.monotonic() - began < 5
    finally:
        proc.kill()
        proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err, err
    ignored = [line for line in err.splitlines() if "not a JSON-RPC message" in line]
    assert len(ignored) == 1, err
