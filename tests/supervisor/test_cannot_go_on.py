"""A run that cannot go on, proven with real processes: it is validated before it resumes
(its workspace, its model's endpoint, its recorded policy) and waits paused with the reason
instead of failing or crash-looping; a run that keeps killing its executor is quarantined
after three deaths in a row at one step while the supervisor and the other runs go on."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Home, wait_for
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tests.supervisor.checks import steps_now, strict_check

pytestmark = [pytest.mark.slow, pytest.mark.both_stores]


def _events(home: Home, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in home.show(run_id)["events"] if e["kind"] == kind]


def _log_size(home: Home) -> int:
    log = home.path / "logs" / "supervisor.log"
    return log.stat().st_size if log.exists() else 0


def _log_since(home: Home, offset: int) -> str:
    return (home.path / "logs" / "supervisor.log").read_text()[offset:]


def test_a_run_that_keeps_killing_its_executor_is_quarantined_and_the_others_go_on(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)

    def first_turn(messages: list[dict[str, Any]]) -> Reply:
        if "poison" in json.dumps(messages):
            return Reply("Listing.", [call("list_dir", {"path": "."})])
        # Slow enough to be under way whenever the poison kills the executor they share.
        return Reply("Nothing to do.", delay_s=1.5)

    llm.script = [first_turn]
    home.arm("tool.running=exit@1")  # any executor dies at its first tool call
    poison = home.start("poison")
    innocent = home.start("innocent")
    sup = home.supervisor_pid()
    before = steps_now(home)

    view = home.wait_status(poison, "needs_attention", timeout=60)
    reason = view["reason"]
    assert reason.startswith(
        'quarantined: its executor died 3 times in a row at step 2 (list_dir(path="."))'
    ), reason
    assert f"tui-agent resume {poison[:8]}" in reason
    assert [e["data"]["deaths"] for e in _events(home, poison, "lost")] == [1, 2]
    listed = next(r for r in home.json("ls") if r["id"] == poison)
    assert listed["reason"] == reason  # from the store alone
    # The run that shared the dying executors was never set aside: it finishes.
    done = home.wait_status(innocent, "completed", timeout=60)
    assert done["result"] == "Nothing to do."
    # It did die with the poison (twice, as a rule: then only one of the two may be held by
    # an executor at a time, and the third death is the poison's alone).
    assert _events(home, innocent, "lost")
    assert home.supervisor_pid() == sup, "the supervisor itself stays up"
    # Set aside for good: no executor takes it again by itself.
    claims = len(_events(home, poison, "claimed"))
    time.sleep(2.0)
    assert home.show(poison)["status"] == "needs_attention"
    assert len(_events(home, poison, "claimed")) == claims == 3

    # The person finds the cause (here: the failpoint), and resumes it.
    home.cli("supervisor", "stop", check=True)
    home.env.pop("TUI_AGENT_FAILPOINTS")
    home.cli("resume", poison, check=True)
    view = home.wait_status(poison, "completed")
    assert [s["status"] for s in view["steps"] if s["kind"] == "tool"] == ["finished"]
    strict_check(home, before)


def _spoil_workspace(home: Home, run_id: str, ws: Path) -> str:
    shutil.rmtree(ws)
    return f"workspace {ws} no longer exists"


def _spoil_policy(home: Home, run_id: str, ws: Path) -> str:
    home.execute("UPDATE runs SET policy_json = ? WHERE id = ?", ('{"sandbox": "jail"', run_id))
    return "its recorded policy cannot be read (not valid JSON)"


def _spoil_base_url(home: Home, run_id: str, ws: Path) -> str:
    home.execute("UPDATE runs SET base_url = ? WHERE id = ?", ("localhost:1234", run_id))
    return "its recorded base URL is not an http(s) URL"


@pytest.mark.parametrize(
    "spoil",
    [_spoil_workspace, _spoil_policy, _spoil_base_url],
    ids=["workspace deleted", "policy unreadable", "base URL broken"],
)
def test_a_run_that_cannot_go_on_is_paused_by_the_recovery_and_resume_refuses(
    home: Home, llm: ScriptedLLM, tmp_path: Path, spoil: Any
) -> None:
    """Spoilt while the supervisor was down: the recovery pauses the run with the reason
    (no failed steps, no crash loop); `resume` refuses it in one line and writes nothing;
    once the cause is gone (the workspace back, or a fork) the work goes on."""
    home.use_server(llm)
    llm.latency_s = 0.2
    llm.script = [
        Reply("1", [call("list_dir", {})]),
        Reply("2", [call("list_dir", {})]),
        Reply("finished"),
    ]
    ws = tmp_path / "project"
    ws.mkdir()
    run_id = home.json("run", "go", "--workspace", str(ws))["id"]
    wait_for(lambda: home.show(run_id)["usage"]["steps"] >= 1, 20, "a first step")
    home.kill_all()
    before = steps_now(home)
    expected = spoil(home, run_id, ws)

    offset = _log_size(home)
    home.cli("supervisor", "start", check=True)
    view = home.wait_status(run_id, "paused")
    assert expected in view["reason"], view["reason"]
    assert view["error"] is None
    time.sleep(1.5)  # were it a crash loop, executors would be dying by now
    assert "exited" not in _log_since(home, offset)
    stored = home.show(run_id)
    assert stored["status"] == "paused" and len(_events(home, run_id, "claimed")) == 2

    refused = home.cli("resume", run_id)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert f"run {run_id[:8]} cannot go on: {expected}" in refused.stderr
    again = home.show(run_id)
    assert again["status"] == "paused" and again["updated_at"] == stored["updated_at"]
    assert len(again["events"]) == len(stored["events"])  # nothing written

    if spoil is _spoil_workspace:
        ws.mkdir()
        home.cli("resume", run_id, check=True)
        goes_on = run_id
    else:
        fork = ["fork", run_id, "--from-step", "1"]
        if spoil is _spoil_policy:
            plain = home.cli(*fork)  # a new run needs a policy of its own
            assert plain.returncode == 2 and plain.stderr.count("\n") == 1, plain.stderr
            fork += ["--sandbox", "workspace"]
        goes_on = home.json(*fork)["id"]
    view = home.wait_status(goes_on, "completed")
    assert view["result"] == "finished"
    strict_check(home, before)


def test_a_model_with_no_endpoint_in_the_supervisors_environment_pauses_the_run(
    home: Home, llm: ScriptedLLM
) -> None:
    """Only the executor knows its environment: it pauses the run, once, with how to fix
    it (a person's shell may hold the key the supervisor lacks, so `resume` lets it try)."""
    home.use_server(llm)
    llm.latency_s = 0.2
    llm.script = [Reply("1", [call("list_dir", {})]), Reply("finished")]
    run_id = home.start()
    wait_for(lambda: home.show(run_id)["usage"]["steps"] >= 1, 20, "a first step")
    home.kill_all()
    before = steps_now(home)
    home.execute("UPDATE runs SET base_url = NULL WHERE id = ?", (run_id,))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        home.env.pop(name)
    asked = len(llm.requests)
    home.cli("supervisor", "start", check=True)
    view = home.wait_status(run_id, "paused")
    assert "neither OPENAI_API_KEY nor OPENAI_BASE_URL" in view["reason"], view["reason"]
    assert "restart the supervisor" in view["reason"]
    assert view["error"] is None and len(llm.requests) == asked  # nothing was sent anywhere

    home.cli("supervisor", "stop", check=True)
    home.use_server(llm)  # the endpoint is back in the environment the supervisor gets
    home.cli("resume", run_id, check=True)
    view = home.wait_status(run_id, "completed")
    assert view["result"] == "finished"
    strict_check(home, before)


def test_a_paused_run_whose_workspace_was_deleted_is_not_resumed(
    home: Home, llm: ScriptedLLM, tmp_path: Path
) -> None:
    home.use_server(llm)
    llm.default = Reply("Again.", [call("list_dir", {})])
    ws = tmp_path / "project"
    ws.mkdir()
    run_id = home.json("run", "go", "--workspace", str(ws), "--max-steps", "2")["id"]
    view = home.wait_status(run_id, "paused")
    assert view["reason"] == "budget spent: steps 2 of 2"
    shutil.rmtree(ws)
    refused = home.cli("resume", run_id, "--max-steps", "4")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"workspace {ws} no longer exists" in refused.stderr
    after = home.show(run_id)
    assert after["status"] == "paused" and after["budget"]["max_steps"] == 2
    assert after["updated_at"] == view["updated_at"]
    forked = home.cli("fork", run_id, "--from-step", "1")  # the fork's workspace is checked too
    assert forked.returncode == 2 and f"workspace {ws} does not exist" in forked.stderr
