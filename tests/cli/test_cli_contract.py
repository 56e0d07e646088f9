"""Every CLI command with its JSON shape and exit codes, against a real home."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Home, wait_for
from tests.fakes.llm_server import Reply, ScriptedLLM, call

pytestmark = pytest.mark.both_stores  # the CLI's contract holds on either engine


def test_run_returns_at_once_with_the_id(home: Home) -> None:
    proc = home.cli("run", "hello", "--workspace", str(home.workspace), check=True)
    run_id = proc.stdout.strip()
    assert len(run_id) == 32 and proc.stderr == ""


def test_run_json_has_the_show_shape(home: Home) -> None:
    data = home.json("run", "hello", "--workspace", str(home.workspace))
    for key in (
        "id",
        "status",
        "goal",
        "created_at",
        "updated_at",
        "budget",
        "usage",
        "state",
        "steps",
        "pending_approvals",
        "result",
        "error",
    ):
        assert key in data, key
    assert set(data["usage"]) == {"steps", "llm_tokens", "wall_time_s"}
    for key in (
        "goal",
        "constraints",
        "budget",
        "plan",
        "known_facts",
        "open_questions",
        "artifacts",
        "risk_flags",
    ):
        assert key in data["state"], key
    assert data["state"]["constraints"]["human_in_the_loop"]["required_for_risk_levels"] == [
        "write_local",
        "external_action",
    ]


def test_show_json_steps_have_tool_arguments_and_results(home: Home) -> None:
    run_id = home.start()
    home.wait_status(run_id, "waiting_approval")
    data = home.json("show", run_id[:10])
    tool = next(s for s in data["steps"] if s["kind"] == "tool")
    for key in ("seq", "kind", "status", "tool", "arguments", "result"):
        assert key in tool
    assert data["pending_approvals"][0]["tool"] == "write_file"
    assert "waiting for approval" in home.cli("show", run_id, check=True).stdout


def test_ls_json_lists_newest_first_with_reason_and_filters(home: Home) -> None:
    first = home.start("first")
    home.wait_status(first, "waiting_approval")
    second = home.start("second")
    home.wait_status(second, "waiting_approval")
    home.cli("cancel", second, check=True)
    rows = home.json("ls")
    assert [r["id"] for r in rows] == [second, first]
    assert set(rows[0]) >= {"id", "status", "goal", "created_at", "updated_at", "usage", "reason"}
    assert rows[1]["reason"].startswith("waiting for approval")
    only = home.json("ls", "--status", "cancelled")
    assert [r["id"] for r in only] == [second]
    assert len(home.json("ls", "--limit", "1")) == 1
    text = home.cli("ls", check=True).stdout
    assert first[:8] in text and "waiting_approval" in text


def test_wait_exit_codes(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.script = [Reply("Done.")]
    ok = home.cli("run", "a", "--workspace", str(home.workspace), "--wait", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "completed"
    llm.script = [Reply("Shell.", [call("run_shell", {"command": "true"})])]
    waiting = home.cli("run", "b", "--workspace", str(home.workspace), "--wait")
    assert waiting.returncode == 4
    from tests.fakes.llm_server import Fault

    llm.script = [Reply("x")]
    llm.fail(0, Fault(401, message="bad key"))
    failed = home.cli("run", "c", "--workspace", str(home.workspace), "--wait")
    assert failed.returncode == 1 and "bad key" in failed.stdout


def test_idempotency_key_returns_the_live_run_then_a_new_one(home: Home) -> None:
    a = home.start("x", "--key", "job-1")
    b = home.start("x", "--key", "job-1")
    assert a == b
    home.cli("cancel", a, check=True)
    c = home.start("x", "--key", "job-1")
    assert c != a


def test_approve_always_allows_the_tool_for_the_rest_of_the_run(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [
        Reply("One.", [call("write_file", {"path": "a.txt", "content": "1"})]),
        Reply("Two.", [call("write_file", {"path": "b.txt", "content": "2"})]),
        Reply("Done."),
    ]
    run_id = home.start()
    home.wait_status(run_id, "waiting_approval")
    out = home.json("approve", run_id, "--always")
    assert out["always"] is True
    view = home.wait_status(run_id, "completed")
    assert (home.workspace / "b.txt").read_text() == "2"
    assert len(view["approvals"]) == 1
    assert view["policy"]["always_allow"] == ["write_file"]


def test_cancel_running_run_stops_it(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.default = Reply("Sleep.", [call("run_shell", {"command": "sleep 30"})])
    run_id = home.start("sleepy", "--auto-approve", "external_action")
    wait_for(
        lambda: any(s["status"] == "started" for s in home.show(run_id)["steps"]),
        20,
        "the shell call to start",
    )
    home.cli("cancel", run_id, check=True)
    view = home.wait_status(run_id, "cancelled", timeout=10)
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["result"].startswith("cancelled")
    assert view["reason"].startswith("cancelled by")


def test_approval_timeout_counts_as_denied(home: Home, llm: ScriptedLLM) -> None:
    from tests.conftest import FAST_CONFIG

    home.configure(FAST_CONFIG + "approval_timeout_s = 1\n")
    home.use_server(llm)
    llm.script = [
        Reply("Write?", [call("write_file", {"path": "a", "content": "x"})]),
        Reply("OK, not written."),
    ]
    run_id = home.start()
    view = home.wait_status(run_id, "waiting_approval")
    assert "denied at" in view["reason"]
    view = home.wait_status(run_id, "completed", timeout=15)
    assert view["approvals"][0]["decided_by"] == "timeout"
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["status"] == "denied" and "timeout" in tool["result"]


def test_supervisor_commands(home: Home) -> None:
    assert home.json("supervisor", "status")["running"] is False
    started = home.json("supervisor", "start")
    status = home.json("supervisor", "status")
    assert status["running"] is True and status["pid"] == started["pid"]
    assert isinstance(status["executors"], list)
    again = home.json("supervisor", "start")
    assert again["pid"] == started["pid"]  # one per home
    run = home.cli("supervisor", "run")
    assert run.returncode == 2 and "already running" in run.stderr
    home.json("supervisor", "stop")
    assert home.json("supervisor", "status")["running"] is False


def test_status_lists_executors_with_the_runs_they_hold(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.default = Reply("Sleep.", [call("run_shell", {"command": "sleep 5"})])
    run_id = home.start("x", "--auto-approve", "external_action")
    wait_for(
        lambda: any(s["status"] == "started" for s in home.show(run_id)["steps"]), 20, "running"
    )
    status = home.json("supervisor", "status")
    assert any(run_id in e["runs"] for e in status["executors"])


def test_api_key_is_never_written_to_the_home(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    home.env["OPENAI_API_KEY"] = "sk-very-secret-0123456789"
    llm.script = [Reply("Hi.", [call("list_dir", {})]), Reply("Bye.")]
    run_id = home.start()
    home.wait_status(run_id, "completed")
    home.cli("supervisor", "stop", check=True)
    for path in home.path.rglob("*"):
        if path.is_file():
            assert b"sk-very-secret" not in path.read_bytes(), path
    tables = ("runs", "steps", "approvals", "artifacts", "events", "executors", "meta")
    dump = "\n".join(str(row) for t in tables for row in home.query(f"SELECT * FROM {t}"))
    assert dump and "sk-very-secret" not in dump


def test_supervisor_exits_by_itself_when_idle(home: Home) -> None:
    from tests.conftest import FAST_CONFIG

    home.configure(FAST_CONFIG.replace("idle_exit_s = 60", "idle_exit_s = 1"))
    run_id = home.start()
    home.wait_status(run_id, "waiting_approval")  # waiting for a person needs no process
    wait_for(lambda: not home.json("supervisor", "status")["running"], 15, "idle exit")
    home.cli("approve", run_id, check=True)  # starts one again
    home.wait_status(run_id, "completed")


def test_every_time_in_json_is_iso_8601_utc(home: Home) -> None:
    run_id = home.start("times")
    view = home.wait_status(run_id, "waiting_approval")
    data = home.json("show", run_id)
    times = [data["created_at"], data["updated_at"]]
    for group in ("steps", "approvals", "events", "pending_approvals"):
        for item in data[group]:
            times += [v for k, v in item.items() if k.endswith("_at") and v is not None]
    assert len(times) > 5 and view["status"] == "waiting_approval"
    for value in times:
        assert isinstance(value, str) and value.endswith("Z") and "T" in value, value


def test_resume_says_each_thing_once_and_refuses_a_budget_below_what_was_used(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.default = Reply("Again.", [call("list_dir", {"path": "."})])
    run_id = home.start("loop", "--max-steps", "3")
    home.wait_status(run_id, "paused")
    low = home.cli("resume", run_id, "--max-steps", "2")
    assert low.returncode == 2
    assert low.stderr == (
        f"tui-agent: --max-steps 2 is not above the 3 steps run {run_id[:8]} has already "
        "used; give more than 3\n"
    )
    out = home.cli("resume", run_id, "--max-steps", "5", check=True).stdout
    assert out.count("queued") == 1, out


def test_supervisor_usage_names_only_the_public_actions(home: Home) -> None:
    bad = home.cli("supervisor", "bogus")
    assert bad.returncode == 2 and "executor" not in bad.stderr
    assert "choose start, stop, status or run" in bad.stderr
    assert "executor" not in home.cli("supervisor", "--help").stdout


def test_the_walk_s_cli_findings(home: Home) -> None:
    """What a new user's walk found: an empty run id is bad input, a second start says the
    supervisor was already running, `ls --status` takes the TUI filter's groups."""
    empty = home.cli("show", "")
    assert empty.returncode == 2 and "must not be empty" in empty.stderr
    first = home.cli("supervisor", "start", check=True).stdout
    again = home.cli("supervisor", "start", check=True).stdout
    assert first.startswith("supervisor started") and again.startswith(
        "supervisor was already running"
    )
    run_id = home.start("waits")
    home.wait_status(run_id, "waiting_approval")
    assert [r["id"] for r in home.json("ls", "--status", "waiting")] == [run_id]
    assert home.json("ls", "--status", "final") == []
    status = home.cli("supervisor", "status", check=True).stdout
    assert not any(line.endswith(" ") for line in status.splitlines())


def test_a_run_saved_while_the_supervisor_cannot_start_is_said_to_be_saved(home: Home) -> None:
    """The run is committed before the supervisor is started: if that start fails, the
    command must not look failed (a person would start the run a second time)."""
    home.arm("supervisor.start=raise@1")
    proc = home.cli("run", "keep me", "--workspace", str(home.workspace))
    assert proc.returncode == 0 and len(proc.stdout.strip()) == 32
    assert proc.stderr.startswith("tui-agent: saved, but the supervisor cannot run: ")
    assert proc.stderr.count("\n") == 1
    home.arm("")
    assert [r["goal"] for r in home.json("ls")] == ["keep me"]
