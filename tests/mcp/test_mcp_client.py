"""Runs get tools from MCP servers (`[mcp.servers.NAME]`): a real FastMCP server process
(tests/fakes/mcp_calc_server.py), a real supervisor and executors, the scripted model.

Its tools are `calc__TOOL`; they are journaled, approved and recovered like the built-ins:
a server that dies mid-call leaves the call in doubt (and starts again for the next one),
a killed executor takes its server with it and its call stays in doubt."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_CONFIG, Home, wait_for
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tui_agent.supervisor.lock import pid_alive

pytestmark = pytest.mark.both_stores

SERVER = Path(__file__).resolve().parents[1] / "fakes" / "mcp_calc_server.py"


def configure(home: Home, extra: str = "") -> Path:
    ledger = home.path.parent / "ledger"
    home.configure(
        FAST_CONFIG
        + f"""
[mcp.servers.calc]
command = {json.dumps(sys.executable)}
args = [{json.dumps(str(SERVER))}, {json.dumps(str(ledger))}]

[mcp.servers.calc.tools.add]
risk = "read_only"
idempotent = true
{extra}"""
    )
    return ledger


def lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


def tools(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in view["steps"] if s["kind"] == "tool"]


def offered(llm: ScriptedLLM) -> set[str]:
    return {t["function"]["name"] for t in llm.requests[0]["body"].get("tools", [])}


def test_a_read_only_mcp_tool_runs_and_its_result_is_recorded(home: Home, llm: ScriptedLLM) -> None:
    configure(home)
    home.use_server(llm)
    llm.script = [Reply("Adding.", [call("calc__add", {"a": 2, "b": 3})]), Reply("It is 5.")]
    run_id = home.start("add")
    view = home.wait_status(run_id, "completed")
    assert view["result"] == "It is 5."
    [step] = tools(view)
    assert step["tool"] == "calc__add" and step["status"] == "finished"
    assert step["result"] == "5"
    assert {"calc__add", "calc__append", "run_shell"} <= offered(llm)
    schema = next(
        t["function"]
        for t in llm.requests[0]["body"]["tools"]
        if t["function"]["name"] == "calc__add"
    )
    assert schema["parameters"]["required"] == ["a", "b"]
    assert schema["description"] == "Add two integers."


def test_a_default_risk_mcp_tool_waits_for_approval_then_runs_once(
    home: Home, llm: ScriptedLLM
) -> None:
    ledger = configure(home)
    home.use_server(llm)
    llm.script = [
        Reply("Noting it.", [call("calc__append", {"text": "hello"})]),
        Reply("Noted."),
    ]
    run_id = home.start("note")
    view = home.wait_status(run_id, "waiting_approval")
    assert "calc__append" in view["reason"] and "[external_action]" in view["reason"]
    time.sleep(0.5)
    assert lines(ledger) == []  # nothing ran before a person said yes
    home.json("approve", run_id)
    view = home.wait_status(run_id, "completed")
    assert lines(ledger) == ["hello"]
    [step] = tools(view)
    assert step["status"] == "finished" and "appended" in step["result"]


def test_a_server_crashing_mid_call_leaves_it_in_doubt_and_starts_again(
    home: Home, llm: ScriptedLLM
) -> None:
    ledger = configure(home)
    home.use_server(llm)
    llm.script = [
        Reply("Crashing.", [call("calc__crash", {})]),
        Reply("Adding.", [call("calc__add", {"a": 1, "b": 1})]),
        Reply("Done."),
    ]
    run_id = home.start("crash", "--auto-approve", "external_action")
    view = home.wait_status(run_id, "needs_attention")
    assert "call in doubt: calc__crash()" in view["reason"]
    assert "the MCP server calc crashed" in view["reason"]
    assert tools(view)[0]["status"] == "started"  # no result was made up
    first_pid = int(lines(ledger)[0].split()[1])
    assert not pid_alive(first_pid)
    time.sleep(1.0)
    assert home.show(run_id)["status"] == "needs_attention"  # never re-run behind our back

    home.json("resolve", run_id, "skip")
    view = home.wait_status(run_id, "completed")
    crash, add = tools(view)
    assert crash["status"] == "skipped"
    assert add["status"] == "finished" and add["result"] == "2"  # the restarted server
    assert len(lines(ledger)) == 1


def test_a_crash_retried_by_the_person_runs_once_more(home: Home, llm: ScriptedLLM) -> None:
    ledger = configure(home)
    home.use_server(llm)
    llm.script = [Reply("Crashing.", [call("calc__crash", {})]), Reply("Done.")]
    run_id = home.start("crash", "--auto-approve", "external_action")
    home.wait_status(run_id, "needs_attention")
    home.json("resolve", run_id, "retry")
    # The retry crashes again: the person is asked again, never a loop.
    wait_for(lambda: len(lines(ledger)) == 2, 30, "the retry")
    view = home.wait_status(run_id, "needs_attention")
    assert "calc crashed" in view["reason"]
    home.json("resolve", run_id, "skip")
    home.wait_status(run_id, "completed")
    assert len(lines(ledger)) == 2


def test_an_idempotent_tool_cut_off_by_a_crash_runs_once_more_by_itself(
    home: Home, llm: ScriptedLLM
) -> None:
    ledger = configure(home, "\n[mcp.servers.calc.tools.crash]\nidempotent = true\n")
    home.use_server(llm)
    llm.script = [Reply("Crashing.", [call("calc__crash", {})]), Reply("Done.")]
    run_id = home.start("crash", "--auto-approve", "external_action")
    view = home.wait_status(run_id, "needs_attention")
    # Run again at once (idempotent); the second crash asks a person: never a loop.
    assert len(lines(ledger)) == 2
    assert "calc crashed" in view["reason"]


def test_a_killed_executor_takes_its_mcp_server_along_and_the_call_stays_in_doubt(
    home: Home, llm: ScriptedLLM
) -> None:
    ledger = configure(home)
    home.use_server(llm)
    llm.script = [Reply("Sleeping.", [call("calc__slow", {"seconds": 3})]), Reply("Slept.")]
    run_id = home.start("sleep", "--auto-approve", "external_action")
    wait_for(lambda: lines(ledger), 30, "the slow call to start")
    server_pid = int(lines(ledger)[0].split()[1])
    executor = int(home.query("SELECT owner_pid FROM runs WHERE id = ?", (run_id,))[0][0])
    os.kill(executor, signal.SIGKILL)
    wait_for(lambda: not pid_alive(server_pid), 10, "the MCP server to die with its executor")
    view = home.wait_status(run_id, "needs_attention")
    assert "call in doubt: calc__slow" in view["reason"]
    time.sleep(3.5)  # longer than the call: its `end` never comes, nothing re-ran it
    assert lines(ledger) == [f"start {server_pid}"]
    assert home.show(run_id)["status"] == "needs_attention"

    home.json("resolve", run_id, "retry")
    view = home.wait_status(run_id, "completed", timeout=40)
    assert lines(ledger)[1:] != [] and lines(ledger)[-1] == "end"
    assert [s["status"] for s in tools(view)] == ["finished"]


def test_an_mcp_server_that_cannot_start_offers_no_tools_and_the_run_goes_on(
    home: Home, llm: ScriptedLLM
) -> None:
    home.configure(FAST_CONFIG + '\n[mcp.servers.gone]\ncommand = "/nonexistent/mcp-server"\n')
    home.use_server(llm)
    llm.script = [Reply("Nothing to do.")]
    run_id = home.start("hello")
    view = home.wait_status(run_id, "completed")
    assert view["result"] == "Nothing to do."
    assert not any(n.startswith("gone__") for n in offered(llm))
    logs = "".join(p.read_text() for p in (home.path / "logs").glob("*.log"))
    assert "MCP server gone cannot start" in logs and "not found" in logs


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ('command = "x"\n[mcp.servers.s.tools.t]\nrisk = "dangerous"', "risk must be one of"),
        ('command = "x"\nurl = "http://localhost:1/mcp"', "not both"),
        ('args = ["a"]', "needs command"),
        ('command = "x"\nport = 3', "unknown key 'port'"),
        ('url = "ftp://host"', "http(s) URL"),
    ],
)
def test_bad_mcp_config_is_one_clear_line_and_exit_2(home: Home, table: str, words: str) -> None:
    home.configure(f"[mcp.servers.s]\n{table}\n")
    proc = home.cli("run", "x")
    assert proc.returncode == 2
    assert words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_streamable_http_server_gives_its_tools_too(home: Home, llm: ScriptedLLM) -> None:
    """`url =`: the same tools over streamable HTTP, from a server that runs on its own."""
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ledger = home.path.parent / "http-ledger"
    server = subprocess.Popen(
        [sys.executable, str(SERVER), str(ledger), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            with socket.socket() as conn:
                return conn.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 20, "the MCP server to listen")
        home.configure(
            FAST_CONFIG
            + f"""
[mcp.servers.web]
url = "http://127.0.0.1:{port}/mcp"

[mcp.servers.web.tools.add]
risk = "read_only"
"""
        )
        home.use_server(llm)
        llm.script = [Reply("Adding.", [call("web__add", {"a": 40, "b": 2})]), Reply("42.")]
        run_id = home.start("add over http")
        view = home.wait_status(run_id, "completed")
        [step] = tools(view)
        assert step["tool"] == "web__add" and step["result"] == "42"
        assert {"web__add", "web__append"} <= offered(llm)
    finally:
        server.kill()
        server.wait()
