"""Streaming: the reply and a command's output are visible while they come (the live
channel), only the finished reply or result is recorded, and a reply cut off by a crash is
asked again and recorded once (promise 2 holds for every recorded one)."""

from __future__ import annotations

import os
import signal

import pytest

from tests.conftest import Home, wait_for
from tests.fakes.llm_server import Fault, Reply, ScriptedLLM, call
from tests.supervisor.checks import steps_now, strict_check
from tui_agent.live import LiveOutput
from tui_agent.service.local import LocalService
from tui_agent.settings import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.both_stores]

LONG = "The workspace holds three files and a folder, and I will now read the first one."


def live(home: Home, run_id: str) -> LiveOutput | None:
    service = LocalService.open(load_settings(home.env))
    try:
        return service.live_output(run_id)
    finally:
        service.close()


def llm_steps(view: dict[str, object]) -> list[dict[str, object]]:
    return [s for s in view["steps"] if s["kind"] == "llm"]  # type: ignore[union-attr,index]


def test_the_reply_shows_as_it_streams_and_is_recorded_whole_with_its_usage(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    usage = {"prompt_tokens": 31, "completion_tokens": 17, "total_tokens": 48}
    llm.script = [Reply(LONG, usage=usage)]
    llm.chunk_delay_s = 0.1
    run_id = home.start()
    partial = wait_for(lambda: live(home, run_id), 20, "the partial reply")
    assert partial.kind == "reply" and LONG.startswith(partial.text) and partial.text != LONG
    assert not llm_steps(home.show(run_id)), "a partial reply was recorded"
    view = home.wait_status(run_id, "completed")
    (step,) = llm_steps(view)
    assert view["result"] == LONG and step["tokens"] == 48
    assert view["usage"]["llm_tokens"] == 48
    assert llm.requests[0]["body"]["stream"] is True
    assert llm.requests[0]["body"]["stream_options"] == {"include_usage": True}
    assert live(home, run_id) is None  # gone once recorded
    assert oct((home.path / "live").stat().st_mode & 0o777) == "0o700"


def test_a_server_that_refuses_streaming_is_asked_plainly(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.refuse_stream = True
    llm.script = [Reply("Listing.", [call("list_dir", {"path": "."})]), Reply("Done.")]
    run_id = home.start()
    view = home.wait_status(run_id, "completed")
    assert view["result"] == "Done." and len(llm_steps(view)) == 2
    # the 400 once, then plain requests only (remembered by the executor's client)
    streamed = [r for r in llm.requests if r["body"].get("stream")]
    assert len(streamed) == 1 and len(llm.requests) == 3


def test_a_stream_cut_half_way_is_asked_again_and_nothing_of_it_recorded(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [Reply(LONG)]
    llm.fail(0, Fault(cut_after_chunks=3))
    run_id = home.start()
    view = home.wait_status(run_id, "completed")
    assert llm.requests_for(0) == 2
    assert len(llm_steps(view)) == 1 and view["result"] == LONG
    assert any(e["kind"] == "retry" for e in view["events"])


def test_a_reply_cut_off_by_a_crash_is_asked_again_once_and_recorded_once(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [Reply(LONG, [call("list_dir", {"path": "."})]), Reply("Done.")]
    llm.chunk_delay_s = 0.15
    run_id = home.start()
    wait_for(lambda: live(home, run_id), 20, "the partial reply")
    before = steps_now(home)
    (owner,) = home.query("SELECT owner_pid FROM runs WHERE id = ?", (run_id,))[0]
    assert home.owns(owner)
    os.kill(owner, signal.SIGKILL)
    llm.chunk_delay_s = 0.0
    view = home.wait_status(run_id, "completed", timeout=60)
    assert llm.requests_for(0) == 2  # cut off, so asked again: once
    assert llm.requests_for(1) == 1  # recorded, so never asked again
    steps = llm_steps(view)
    assert len(steps) == 2 and steps[0]["content"] == LONG  # type: ignore[index]
    assert live(home, run_id) is None
    strict_check(home, before)


def test_a_running_commands_output_shows_before_it_ends(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    command = "echo first line; sleep 3; echo second line"
    llm.script = [Reply("Running it.", [call("run_shell", {"command": command})]), Reply("Ok.")]
    run_id = home.start("go", "--auto-approve", "external_action", "--sandbox", "none")

    # The reply before the call streams too: wait for the command's own live row.
    def output() -> LiveOutput | None:
        row = live(home, run_id)
        return row if row is not None and row.kind == "shell" else None

    shown = wait_for(output, 20, "the command's output")
    assert shown.text == "first line\n"
    assert "second" not in shown.text
    tool = [s for s in home.show(run_id)["steps"] if s["kind"] == "tool"]
    assert tool and tool[0]["status"] == "started"  # the command is still running
    view = home.wait_status(run_id, "completed")
    tool = [s for s in view["steps"] if s["kind"] == "tool"]
    assert tool[0]["result"].endswith("first line\nsecond line\n")
    assert live(home, run_id) is None
