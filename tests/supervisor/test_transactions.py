"""Promise 1 with real processes: `kill -9` *inside* each multi-statement transaction (a
failpoint pauses the process between its statements, holding the write lock) and prove that
none of it was committed: no artifact without its step, no approval without its status, no
decision without its audit step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import Home
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tests.supervisor.checks import kill9, kill_at, steps_now, strict_check

pytestmark = [pytest.mark.slow, pytest.mark.both_stores]


def rows(home: Home, sql: str, *params: object) -> list[tuple[object, ...]]:
    return [tuple(r) for r in home.query(sql, params)]


def test_killed_inside_finish_tool_commits_no_artifact_and_no_state(
    home: Home, llm: ScriptedLLM
) -> None:
    """The result, its artifact and the state's artifact list are one commit."""
    (home.workspace / "big.txt").write_text("x" * 20_000)
    home.use_server(llm)
    llm.script = [
        Reply("Reading.", [call("read_file", {"path": "big.txt", "limit": 20_000})]),
        Reply("Read it."),
    ]
    home.arm("txn.finish_tool=pause@1")
    run_id = home.start()
    before = kill_at(home, "txn.finish_tool")
    # Nothing of the transaction is visible: the tool step is still only `started`.
    assert rows(home, "SELECT count(*) FROM artifacts") == [(0,)]
    assert rows(home, "SELECT status FROM steps WHERE kind = 'tool'") == [("started",)]
    view = home.wait_status(run_id, "completed")
    artifacts = rows(home, "SELECT id, seq FROM artifacts")
    assert len(artifacts) == 1, "the idempotent read was re-run and stored once"
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["status"] == "finished" and artifacts[0][1] == tool["seq"]
    assert [a["artifact_id"] for a in view["state"]["artifacts"]] == [artifacts[0][0]]
    strict_check(home, before)


def test_killed_inside_request_approval_commits_neither_row_nor_status(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [
        Reply("Writing.", [call("write_file", {"path": "a.txt", "content": "A"})]),
        Reply("Done."),
    ]
    home.arm("txn.request_approval=pause@1")
    run_id = home.start()
    before = kill_at(home, "txn.request_approval")
    assert rows(home, "SELECT count(*) FROM approvals") == [(0,)]
    assert rows(home, "SELECT status FROM runs") == [("running",)]
    view = home.wait_status(run_id, "waiting_approval")
    assert len(view["pending_approvals"]) == 1
    listed = next(r for r in home.json("ls") if r["id"] == run_id)
    assert listed["reason"].startswith("waiting for approval: write_file(")
    assert rows(home, "SELECT count(*) FROM approvals") == [(1,)]
    assert llm.requests_for(0) == 1  # the recorded reply was not asked again
    strict_check(home, before)


def test_a_decision_killed_inside_its_transaction_leaves_the_approval_pending(
    home: Home, llm: ScriptedLLM
) -> None:
    """The CLI process deciding is killed between its statements: still pending, no audit
    step; deciding again works and is recorded once."""
    home.use_server(llm)
    llm.script = [
        Reply("Writing.", [call("write_file", {"path": "a.txt", "content": "A"})]),
        Reply("Done."),
    ]
    run_id = home.start()
    home.wait_status(run_id, "waiting_approval")
    env = {**home.env, "TUI_AGENT_FAILPOINTS": "txn.decide_approval=pause@1"}
    deciding = subprocess.Popen(
        [sys.executable, "-m", "tui_agent", "approve", run_id],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert home.marker("txn.decide_approval") == deciding.pid
    before = steps_now(home)
    kill9(deciding.pid)
    deciding.wait()
    assert rows(home, "SELECT status FROM approvals") == [("pending",)]
    assert rows(home, "SELECT count(*) FROM steps WHERE kind = 'approval'") == [(0,)]
    assert home.show(run_id)["status"] == "waiting_approval"

    assert home.json("approve", run_id)["status"] == "approved"
    view = home.wait_status(run_id, "completed")
    assert (home.workspace / "a.txt").read_text() == "A"
    decisions = [s for s in view["steps"] if s["kind"] == "approval"]
    assert len(decisions) == 1
    assert json.loads(json.dumps(view["approvals"]))[0]["status"] == "approved"
    strict_check(home, before)
    if home.backend == "sqlite":
        assert os.path.exists(home.path / "tui-agent.db")
