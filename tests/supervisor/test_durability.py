"""Each durability promise of product.md, proven by killing a real process with SIGKILL at
the dangerous moment (a failpoint pauses it there; the test sends the real `kill -9`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import Home, wait_for
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tests.supervisor.checks import (
    kill9,
    kill_at,
    shell_script,
    side_effects,
    steps_now,
    strict_check,
)
from tui_agent.supervisor.lock import pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.both_stores]


# ---- promise 2: a recorded LLM reply is never requested again -----------------------------


def test_reply_recorded_then_executor_killed_is_not_requested_again(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [Reply("Listing.", [call("list_dir", {"path": "."})]), Reply("Done here.")]
    home.arm("llm.after_record=pause@1")
    run_id = home.start()
    before = kill_at(home, "llm.after_record")
    view = home.wait_status(run_id, "completed")
    assert llm.requests_for(0) == 1, "turn 0 was billed twice"
    assert llm.requests_for(1) == 1
    llm_steps = [s for s in view["steps"] if s["kind"] == "llm"]
    assert len(llm_steps) == 2
    assert view["result"] == "Done here."
    assert any(e["kind"] == "lost" for e in view["events"])
    strict_check(home, before)


def test_reply_received_but_not_recorded_is_asked_again_and_recorded_once(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [Reply("Listing.", [call("list_dir", {"path": "."})]), Reply("Done.")]
    home.arm("llm.before_record=pause@1")
    run_id = home.start()
    before = kill_at(home, "llm.before_record")
    view = home.wait_status(run_id, "completed")
    assert llm.requests_for(0) == 2  # nothing was recorded, so it must be asked again
    assert len([s for s in view["steps"] if s["kind"] == "llm"]) == 2
    tokens = sum(s["tokens"] for s in view["steps"] if s["kind"] == "llm")
    assert view["usage"]["llm_tokens"] == tokens  # the lost reply is not counted
    strict_check(home, before)


# ---- promise 3: a finished call never runs again ----------------------------------------


def test_finished_tool_call_is_not_run_again_after_kill(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    shell_script(llm)
    home.arm("tool.after_finish=pause@1")
    run_id = home.start("go", "--auto-approve", "external_action")
    before = kill_at(home, "tool.after_finish")
    view = home.wait_status(run_id, "completed")
    assert side_effects(home) == ["ran"]
    tool = [s for s in view["steps"] if s["kind"] == "tool"]
    assert len(tool) == 1 and tool[0]["status"] == "finished"
    assert llm.requests_for(1) == 1
    strict_check(home, before)


# ---- promise 4: in-doubt calls --------------------------------------------------------------


def test_in_doubt_shell_call_is_never_rerun_silently(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    shell_script(llm)
    home.arm("tool.before_finish=pause@1")  # the side effect happened, its record did not
    run_id = home.start("go", "--auto-approve", "external_action")
    before = kill_at(home, "tool.before_finish")
    view = home.wait_status(run_id, "needs_attention")
    assert side_effects(home) == ["ran"]
    assert "call in doubt: run_shell" in view["reason"]
    assert view["in_doubt"]["tool"] == "run_shell"
    listed = next(r for r in home.json("ls") if r["id"] == run_id)
    assert listed["reason"] == view["reason"]  # ls names the call too, from the store alone
    # It stays that way: no process re-runs it behind the person's back.
    home.cli("supervisor", "stop", check=True)
    home.cli("supervisor", "start", check=True)
    time.sleep(2.0)  # long enough for the new executor to have claimed it, were it runnable
    assert home.show(run_id)["status"] == "needs_attention"
    assert side_effects(home) == ["ran"]

    skipped = home.json("resolve", run_id, "skip")
    assert skipped["status"] in ("queued", "running", "completed")
    view = home.wait_status(run_id, "completed")
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["status"] == "skipped" and "unknown" in tool["result"]
    assert side_effects(home) == ["ran"]
    strict_check(home, before)


def test_in_doubt_shell_call_retried_by_the_person_runs_exactly_once_more(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    shell_script(llm)
    home.arm("tool.after_start=pause@1")  # journaled as started; it never ran
    run_id = home.start("go", "--auto-approve", "external_action")
    before = kill_at(home, "tool.after_start")
    home.wait_status(run_id, "needs_attention")
    assert side_effects(home) == []
    home.json("resolve", run_id, "retry")
    view = home.wait_status(run_id, "completed")
    assert side_effects(home) == ["ran"]
    assert [s["status"] for s in view["steps"] if s["kind"] == "tool"] == ["finished"]
    strict_check(home, before)


def test_a_call_that_ran_retried_runs_exactly_once_more_and_a_crash_in_the_retry_asks_again(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    shell_script(llm)
    home.arm("tool.before_finish=pause@1")  # the command ran; its result was not recorded
    run_id = home.start("go", "--auto-approve", "external_action")
    before = kill_at(home, "tool.before_finish")
    home.wait_status(run_id, "needs_attention")
    assert side_effects(home) == ["ran"]

    # The retry crashes at the same moment: the call is in doubt again, never re-run silently.
    home.cli("supervisor", "stop", check=True)
    home.rearm("tool.before_finish=pause@1")
    home.cli("supervisor", "start", check=True)
    home.json("resolve", run_id, "retry")
    before = kill_at(home, "tool.before_finish")
    view = home.wait_status(run_id, "needs_attention")
    assert side_effects(home) == ["ran", "ran"], "the retry ran exactly once more"
    assert "call in doubt: run_shell" in view["reason"]
    time.sleep(2.0)
    assert side_effects(home) == ["ran", "ran"]

    home.json("resolve", run_id, "skip")
    view = home.wait_status(run_id, "completed")
    assert side_effects(home) == ["ran", "ran"]
    assert [s["status"] for s in view["steps"] if s["kind"] == "tool"] == ["skipped"]
    strict_check(home, before)


def test_in_doubt_cancel_fails_the_run(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    shell_script(llm)
    home.arm("tool.before_finish=pause@1")
    run_id = home.start("go", "--auto-approve", "external_action")
    before = kill_at(home, "tool.before_finish")
    home.wait_status(run_id, "needs_attention")
    out = home.json("cancel", run_id)
    assert out["status"] == "failed"
    stored = home.show(run_id)  # the store, not only the CLI's reply
    assert stored["status"] == "failed" and stored["in_doubt"] is None
    assert "cancel" in (stored["error"] or "") or "doubt" in (stored["error"] or "")
    time.sleep(2.0)  # nothing runs it afterwards either
    assert home.show(run_id)["status"] == "failed"
    assert side_effects(home) == ["ran"]
    strict_check(home, before)


@pytest.mark.parametrize(
    "moment", ["tool.after_start", "tool.before_finish"], ids=["before the write", "after it"]
)
def test_in_doubt_idempotent_write_is_simply_rerun(
    home: Home, llm: ScriptedLLM, moment: str
) -> None:
    home.use_server(llm)
    llm.script = [
        Reply("Writing.", [call("write_file", {"path": "out.txt", "content": "exact"})]),
        Reply("Written."),
    ]
    home.arm(f"{moment}=pause@1")
    run_id = home.start("go", "--auto-approve", "write_local")
    before = kill_at(home, moment)
    if moment == "tool.before_finish":
        assert (home.workspace / "out.txt").read_text() == "exact"  # it did write
    view = home.wait_status(run_id, "completed")
    assert (home.workspace / "out.txt").read_text() == "exact"
    tools = [s for s in view["steps"] if s["kind"] == "tool"]
    assert len(tools) == 1 and tools[0]["status"] == "finished"
    assert any(e["kind"] == "in_doubt" and "idempotent" in e["message"] for e in view["events"])
    strict_check(home, before)


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
    # Were the model asked again it would now propose another command: it must not be.
    llm.script[0] = Reply("Changed.", [call("run_shell", {"command": "echo changed >> side.log"})])
    assert home.json("approve", run_id)["status"] == "approved"  # starts a supervisor again
    before = kill_at(home, "tool.before_start")
    view = home.wait_status(run_id, "completed")
    assert side_effects(home) == ["approved"]
    assert len(view["approvals"]) == 1  # not asked again after the crash
    assert llm.requests_for(0) == 1
    assert view["approvals"][0]["status"] == "approved"
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["arguments"] == {"command": "echo approved >> side.log"}
    strict_check(home, before)


def test_an_approval_deadline_passing_with_no_supervisor_counts_as_denied(
    home: Home, llm: ScriptedLLM
) -> None:
    home.configure("idle_exit_s = 60\nlease_s = 2.0\nheartbeat_s = 0.3\napproval_timeout_s = 1\n")
    home.use_server(llm)
    shell_script(llm)
    run_id = home.start()
    home.wait_status(run_id, "waiting_approval")
    before = steps_now(home)
    home.kill_all()
    time.sleep(1.5)  # the deadline passes while nothing runs
    late = home.cli("approve", run_id)
    assert late.returncode == 1 and "timed out" in late.stderr and "denied" in late.stderr
    assert late.stderr.count("\n") == 1
    view = home.wait_status(run_id, "completed")
    assert side_effects(home) == []
    (approval,) = view["approvals"]
    assert approval["status"] == "denied" and approval["decided_by"] == "timeout"
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["status"] == "denied" and "timeout" in tool["result"]
    strict_check(home, before)


# ---- promise 7: budgets survive restarts --------------------------------------------------


def test_max_steps_is_exact_across_a_crash(home: Home, llm: ScriptedLLM) -> None:
    """Steps, tokens and active time all carry across a kill: a run with max_steps 10 that
    crashed after 5 stops at 10 in all, and its wall time is the sum of both lives."""
    home.use_server(llm)
    llm.latency_s = 0.2  # each turn takes a measurable while
    llm.default = Reply("Again.", [call("list_dir", {"path": "."})])
    home.arm("llm.after_record=pause@3")  # after 5 steps: llm, tool, llm, tool, llm
    started = time.monotonic()
    run_id = home.start("loop", "--max-steps", "10")
    before = kill_at(home, "llm.after_record")
    wall_first_life = home.show(run_id)["usage"]["wall_time_s"]
    assert wall_first_life >= 0.3  # two recorded turns of 0.2 s (the third's pause is lost)
    view = home.wait_status(run_id, "paused")
    elapsed = time.monotonic() - started
    # five more steps (tool, llm, tool, llm, tool: two turns of 0.2 s) in the second life,
    # never more than real time
    assert wall_first_life + 0.4 <= view["usage"]["wall_time_s"] <= elapsed
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
    strict_check(home, before)


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
    before = steps_now(home)
    wait_for(lambda: not pid_alive(stalled), 10, "the supervisor to kill the hung executor")
    view = home.wait_status(run_id, "completed")
    # Each takeover (the kill; on a loaded machine a 0.4 s lease may also lapse once more):
    # at most the turn in flight (never recorded) was asked again, once per takeover.
    claims = [e["kind"] for e in view["events"]].count("claimed")
    assert claims >= 2, view["events"]
    # Fenced off, the stalled executor claimed nothing more (it once took the run again
    # once its let-go thread ended, and its shell call was then cut off: in doubt).
    by_stalled = [
        e for e in view["events"] if e["kind"] == "claimed" and e["data"]["pid"] == stalled
    ]
    assert len(by_stalled) == 1, view["events"]
    requests = [llm.requests_for(turn) for turn in range(3)]
    assert all(n >= 1 for n in requests) and sum(requests) <= 3 + (claims - 1), requests
    assert side_effects(home) == ["ran"]
    assert [s["kind"] for s in view["steps"]] == ["llm", "tool", "llm", "tool", "llm"]
    strict_check(home, before)


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
    before = steps_now(home)
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
    # one kill: at most one reply was lost in flight, so at most one request repeated in all
    requests = [llm.requests_for(turn) for turn in range(4)]
    assert all(n >= 1 for n in requests) and sum(requests) <= 5, requests
    assert len([s for s in view["steps"] if s["kind"] == "llm"]) == 4
    strict_check(home, before)


def test_executor_killed_is_restarted_and_run_resumes_quickly(home: Home, llm: ScriptedLLM) -> None:

    home.use_server(llm)
    llm.script = [Reply("Listing.", [call("list_dir", {"path": "."})]), Reply("Done.")]
    home.arm("tool.after_finish=pause@1")
    run_id = home.start()
    pid = home.marker("tool.after_finish")
    before = steps_now(home)
    sup = home.supervisor_pid()
    killed_at = time.time()
    kill9(pid)
    wait_for(lambda: llm.requests_for(1) >= 1, 10, "the next step")
    assert time.time() - killed_at < 2.0, "resume took longer than 2 s"
    home.wait_status(run_id, "completed")
    assert home.supervisor_pid() == sup  # the supervisor survived and restarted the executor
    status = home.json("supervisor", "status")
    assert status["running"] and status["pid"] == sup
    assert status["executors"], "the restarted executor is listed"
    assert all(e["pid"] != pid for e in status["executors"])
    strict_check(home, before)


def _standby_pids(home: Home) -> list[int]:
    """Warm standby executors of this home (other tests' homes may have their own)."""
    mine = f"TUI_AGENT_HOME={home.path}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"executor" in argv and b"--standby" in argv and mine in env:
                found.append(int(entry.name))
    return found


def test_with_default_leases_a_killed_executor_is_replaced_by_the_warm_standby_within_2s(
    home: Home, llm: ScriptedLLM
) -> None:
    """Default lease_s and heartbeat_s; the kill comes once the warm standby is ready, so the
    promotion path is what recovers the run."""
    home.configure("idle_exit_s = 60\n")
    home.use_server(llm)
    llm.script = [Reply("Listing.", [call("list_dir", {"path": "."})]), Reply("Done.")]
    home.arm("tool.after_finish=pause@1")
    run_id = home.start()
    pid = home.marker("tool.after_finish")
    wait_for(lambda: _standby_pids(home), 20, "the warm standby")
    standby = _standby_pids(home)
    log = home.path / "logs" / "executor.log"
    wait_for(
        lambda: any(f"standby {p} ready" in log.read_text() for p in standby),
        20,
        "the standby to be imported and connected",
    )
    before = steps_now(home)
    killed_at = time.time()
    kill9(pid)
    wait_for(lambda: llm.requests_for(1) >= 1, 10, "the next step")
    assert time.time() - killed_at < 2.0, "resume took longer than 2 s"
    view = home.wait_status(run_id, "completed")
    claims = [e for e in view["events"] if e["kind"] == "claimed"]
    assert any(str(p) in claims[-1]["message"] for p in standby), "the standby took the run"
    strict_check(home, before)


def test_a_crash_looping_executor_backs_off_and_never_spins(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.script = [Reply("Never.")]
    home.arm("executor.serve=exit@1")  # every executor dies as it starts serving
    run_id = home.start()
    sup = home.supervisor_pid()
    time.sleep(8)
    log = (home.path / "logs" / "supervisor.log").read_text()
    deaths = log.count("exited (70)")
    # young deaths back off 1, 2, 4 s: a handful in 8 s, not hundreds
    assert 2 <= deaths <= 8, log[-2000:]
    assert home.supervisor_pid() == sup, "the supervisor itself stays up"
    assert home.show(run_id)["status"] == "queued"
    assert llm.requests_for(0) == 0
