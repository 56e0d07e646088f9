"""Each durability promise of product.md, proven by killing a real process with SIGKILL at
the dangerous moment (a failpoint pauses it there; the test sends the real `kill -9`)."""

from __future__ import annotations

import os
import signal
import sqlite3

import pytest

from tests.conftest import Home, _alive, wait_for
from tests.fakes.llm_server import Reply, ScriptedLLM, call

pytestmark = pytest.mark.slow


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def side_effects(home: Home) -> list[str]:
    path = home.workspace / "side.log"
    return path.read_text().splitlines() if path.exists() else []


def shell_script(llm: ScriptedLLM, command: str = "echo ran >> side.log") -> None:
    llm.script = [
        Reply("Running it.", [call("run_shell", {"command": command})]),
        Reply("Finished."),
    ]


def integrity_ok(home: Home) -> None:
    with sqlite3.connect(home.path / "tui-agent.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = conn.execute("SELECT run_id, seq FROM steps").fetchall()
        assert len(seqs) == len(set(seqs))


# ---- promise 2: a recorded LLM reply is never requested again -----------------------------


def test_reply_recorded_then_executor_killed_is_not_requested_again(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [Reply("Listing.", [call("list_dir", {"path": "."})]), Reply("Done here.")]
    home.arm("llm.after_record=pause@1")
    run_id = home.start()
    kill9(home.marker("llm.after_record"))
    view = home.wait_status(run_id, "completed")
    assert llm.requests_for(0) == 1, "turn 0 was billed twice"
    assert llm.requests_for(1) == 1
    llm_steps = [s for s in view["steps"] if s["kind"] == "llm"]
    assert len(llm_steps) == 2
    assert view["result"] == "Done here."
    assert any(e["kind"] == "lost" for e in view["events"])
    integrity_ok(home)


def test_reply_received_but_not_recorded_is_asked_again_and_recorded_once(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [Reply("Listing.", [call("list_dir", {"path": "."})]), Reply("Done.")]
    home.arm("llm.before_record=pause@1")
    run_id = home.start()
    kill9(home.marker("llm.before_record"))
    view = home.wait_status(run_id, "completed")
    assert llm.requests_for(0) == 2  # nothing was recorded, so it must be asked again
    assert len([s for s in view["steps"] if s["kind"] == "llm"]) == 2
    tokens = sum(s["tokens"] for s in view["steps"] if s["kind"] == "llm")
    assert view["usage"]["llm_tokens"] == tokens  # the lost reply is not counted
    integrity_ok(home)


# ---- promise 3: a finished call never runs again ----------------------------------------


def test_finished_tool_call_is_not_run_again_after_kill(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    shell_script(llm)
    home.arm("tool.after_finish=pause@1")
    run_id = home.start("go", "--auto-approve", "external_action")
    kill9(home.marker("tool.after_finish"))
    view = home.wait_status(run_id, "completed")
    assert side_effects(home) == ["ran"]
    tool = [s for s in view["steps"] if s["kind"] == "tool"]
    assert len(tool) == 1 and tool[0]["status"] == "finished"
    assert llm.requests_for(1) == 1
    integrity_ok(home)


# ---- promise 4: in-doubt calls --------------------------------------------------------------


def test_in_doubt_shell_call_is_never_rerun_silently(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    shell_script(llm)
    home.arm("tool.before_finish=pause@1")  # the side effect happened, its record did not
    run_id = home.start("go", "--auto-approve", "external_action")
    kill9(home.marker("tool.before_finish"))
    view = home.wait_status(run_id, "needs_attention")
    assert side_effects(home) == ["ran"]
    assert "call in doubt: run_shell" in view["reason"]
    assert view["in_doubt"]["tool"] == "run_shell"
    # It stays that way: no process re-runs it behind the person's back.
    home.cli("supervisor", "stop", check=True)
    home.cli("supervisor", "start", check=True)
    assert home.show(run_id)["status"] == "needs_attention"
    assert side_effects(home) == ["ran"]

    skipped = home.json("resolve", run_id, "skip")
    assert skipped["status"] in ("queued", "running", "completed")
    view = home.wait_status(run_id, "completed")
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["status"] == "skipped" and "unknown" in tool["result"]
    assert side_effects(home) == ["ran"]
    integrity_ok(home)


def test_in_doubt_shell_call_retried_by_the_person_runs_exactly_once_more(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    shell_script(llm)
    home.arm("tool.after_start=pause@1")  # journaled as started; it never ran
    run_id = home.start("go", "--auto-approve", "external_action")
    kill9(home.marker("tool.after_start"))
    home.wait_status(run_id, "needs_attention")
    assert side_effects(home) == []
    home.json("resolve", run_id, "retry")
    view = home.wait_status(run_id, "completed")
    assert side_effects(home) == ["ran"]
    assert [s["status"] for s in view["steps"] if s["kind"] == "tool"] == ["finished"]


def test_in_doubt_cancel_fails_the_run(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    shell_script(llm)
    home.arm("tool.before_finish=pause@1")
    run_id = home.start("go", "--auto-approve", "external_action")
    kill9(home.marker("tool.before_finish"))
    home.wait_status(run_id, "needs_attention")
    out = home.json("cancel", run_id)
    assert out["status"] == "failed"
    assert side_effects(home) == ["ran"]


def test_in_doubt_idempotent_write_is_simply_rerun(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.script = [
        Reply("Writing.", [call("write_file", {"path": "out.txt", "content": "exact"})]),
        Reply("Written."),
    ]
    home.arm("tool.after_start=pause@1")
    run_id = home.start("go", "--auto-approve", "write_local")
    kill9(home.marker("tool.after_start"))
    view = home.wait_status(run_id, "completed")
    assert (home.workspace / "out.txt").read_text() == "exact"
    tools = [s for s in view["steps"] if s["kind"] == "tool"]
    assert len(tools) == 1 and tools[0]["status"] == "finished"
    assert any(e["kind"] == "in_doubt" and "idempotent" in e["message"] for e in view["events"])


# ---- promise 5: approvals are rows that survive everything --------------------------------


def test_approved_call_killed_before_execution_runs_once_with_approved_args(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    shell_script(llm, "echo approved >> side.log")
    home.arm("tool.before_start=pause@1")
    run_id = home.start()
    view = home.wait_status(run_id, "waiting_approval")
    assert view["pending_approvals"][0]["arguments"] == {"command": "echo approved >> side.log"}
    # The supervisor and executor die while the run waits: the approval is only a row.
    home.kill_all()
    assert home.json("approve", run_id)["status"] == "approved"  # starts a supervisor again
    kill9(home.marker("tool.before_start"))
    view = home.wait_status(run_id, "completed")
    assert side_effects(home) == ["approved"]
    assert len(view["approvals"]) == 1  # not asked again after the crash
    assert view["approvals"][0]["status"] == "approved"
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["arguments"] == {"command": "echo approved >> side.log"}


# ---- promise 7: budgets survive restarts --------------------------------------------------


def test_max_steps_is_exact_across_a_crash(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.default = Reply("Again.", [call("list_dir", {"path": "."})])
    home.arm("llm.after_record=pause@3")  # after 5 steps: llm, tool, llm, tool, llm
    run_id = home.start("loop", "--max-steps", "10")
    kill9(home.marker("llm.after_record"))
    view = home.wait_status(run_id, "paused")
    assert view["usage"]["steps"] == 10
    assert len([s for s in view["steps"] if s["kind"] != "approval"]) == 10
    assert view["reason"] == "budget spent: steps 10 of 10"
    tokens = sum(s.get("tokens", 0) for s in view["steps"])
    assert view["usage"]["llm_tokens"] == tokens

    bad = home.cli("resume", run_id)
    assert bad.returncode == 2 and "larger budget" in bad.stderr
    home.cli("resume", run_id, "--max-steps", "12", check=True)
    view = home.wait_status(run_id, "paused")
    assert view["usage"]["steps"] == 12
    assert view["budget"]["max_steps"] == 12


# ---- a lease that runs out under a live run thread -----------------------------------------


def test_a_stalled_heartbeat_gets_the_executor_killed_and_nothing_repeated(
    home: Home, llm: ScriptedLLM
) -> None:
    """The executor's heartbeat stops (a hang, a stall) while its run thread is busy: past
    lease_s the supervisor kills it as hung, and the run is taken over without a second
    thread on it, a recorded reply asked again, or a side effect repeated. (That an
    executor never claims a run it still advances is proven in tests/store.)"""
    home.configure("idle_exit_s = 60\nlease_s = 0.4\nheartbeat_s = 0.1\nretry_max_s = 0.5\n")
    home.use_server(llm)
    llm.latency_s = 0.6  # every turn outlives the lease
    llm.script = [
        Reply("Running it.", [call("run_shell", {"command": "echo ran >> side.log"})]),
        Reply("Looking.", [call("list_dir", {"path": "."})]),
        Reply("Finished."),
    ]
    home.arm("executor.heartbeat=pause@1")
    run_id = home.start("go", "--auto-approve", "external_action")
    stalled = home.marker("executor.heartbeat")
    wait_for(lambda: not _alive(stalled), 10, "the supervisor to kill the hung executor")
    view = home.wait_status(run_id, "completed")
    # turn 0 was in flight (never recorded) when the hung executor was killed: asked again
    assert [llm.requests_for(turn) for turn in range(3)] == [2, 1, 1]
    assert side_effects(home) == ["ran"]
    assert [e["kind"] for e in view["events"]].count("claimed") == 2
    assert [s["kind"] for s in view["steps"]] == ["llm", "tool", "llm", "tool", "llm"]
    integrity_ok(home)


# ---- supervisor and executor killed together -------------------------------------------


def test_supervisor_and_executor_killed_together_next_start_recovers(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.latency_s = 0.3
    llm.script = [
        Reply("1", [call("list_dir", {})]),
        Reply("2", [call("list_dir", {})]),
        Reply("3", [call("list_dir", {})]),
        Reply("finished"),
    ]
    run_id = home.start()
    wait_for(lambda: home.show(run_id)["usage"]["steps"] >= 2, 20, "two steps")
    home.kill_all()
    assert home.show(run_id)["status"] == "running"
    # With no process alive, the reason comes from the store (the lease runs out) and says
    # how to get the run moving: no supervisor is running, not "being recovered".
    reason = wait_for(lambda: home.show(run_id)["reason"], 10, "a reason")
    assert reason.startswith("executor lost since") and "no supervisor is running" in reason
    assert "tui-agent supervisor start" in reason and "being recovered" not in reason
    listed = next(r for r in home.json("ls") if r["id"] == run_id)
    assert listed["reason"] == reason
    home.cli("supervisor", "start", check=True)
    view = home.wait_status(run_id, "completed")
    for turn in range(4):
        assert llm.requests_for(turn) <= 2
    assert len([s for s in view["steps"] if s["kind"] == "llm"]) == 4
    integrity_ok(home)


def test_executor_killed_is_restarted_and_run_resumes_quickly(home: Home, llm: ScriptedLLM) -> None:
    import time

    home.use_server(llm)
    llm.script = [Reply("Listing.", [call("list_dir", {"path": "."})]), Reply("Done.")]
    home.arm("tool.after_finish=pause@1")
    run_id = home.start()
    pid = home.marker("tool.after_finish")
    sup = home.supervisor_pid()
    killed_at = time.time()
    kill9(pid)
    wait_for(lambda: llm.requests_for(1) >= 1, 10, "the next step")
    assert time.time() - killed_at < 2.0, "resume took longer than 2 s"
    home.wait_status(run_id, "completed")
    assert home.supervisor_pid() == sup  # the supervisor survived and restarted the executor
    status = home.json("supervisor", "status")
    assert status["running"] and status["pid"] == sup
    assert all(e["pid"] != pid for e in status["executors"])
