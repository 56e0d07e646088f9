"""A person's message to a run under way, with real processes: seen at the next model call
exactly once, never colliding with the executor's own steps, and neither lost nor doubled
by a `kill -9` of the executor right after it (no recorded reply is requested again)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Home, wait_for
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tests.supervisor.checks import kill9, steps_now, strict_check
from tui_agent.service.local import LocalService
from tui_agent.settings import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.both_stores]


def _said(messages: list[dict[str, Any]], text: str) -> int:
    return sum(1 for m in messages if m["role"] == "user" and m["content"] == text)


def _requests(llm: ScriptedLLM, turn: int) -> list[list[dict[str, Any]]]:
    return [r["body"]["messages"] for r in llm.requests if r["turn"] == turn]


def test_a_running_run_sees_the_message_at_its_next_model_call(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    run_id: list[str] = []

    def say_while_answering(messages: list[dict[str, Any]], turn: int) -> None:
        if turn == 0:  # the executor waits for this reply while the person says something
            wait_for(lambda: run_id, 30, "`run` to print the id")
            home.cli("say", run_id[0], "look at the tests too", check=True)

    llm.script = [Reply("Listing.", [call("list_dir", {"path": "."})]), Reply("Done.")]
    llm.on_request = say_while_answering
    run_id.append(home.start())
    view = home.wait_status(run_id[0], "completed")
    (first,) = _requests(llm, 0)
    (second,) = _requests(llm, 1)
    assert _said(first, "look at the tests too") == 0  # said after that request was sent
    assert _said(second, "look at the tests too") == 1
    assert second[-1]["role"] == "user"  # after the call's result, never between
    kinds = [s["kind"] for s in view["steps"]]
    assert kinds == ["user", "llm", "tool", "llm"], kinds
    strict_check(home, {})


def test_messages_racing_the_executor_never_collide_and_are_all_heard(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [Reply(f"Turn {i}.", [call("list_dir", {"path": "."})]) for i in range(8)]
    run_id = home.start()
    service = LocalService.open(load_settings(home.env))
    try:
        for i in range(6):
            service.say(run_id, f"note {i}")
    finally:
        service.close()
    view = home.wait_status(run_id, "completed", timeout=60)
    seqs = [s["seq"] for s in view["steps"]]
    assert seqs == list(range(1, len(seqs) + 1))
    texts = [s["text"] for s in view["steps"] if s["kind"] == "user"]
    assert texts == [f"note {i}" for i in range(6)]
    last = llm.requests[-1]["body"]["messages"]
    assert all(_said(last, f"note {i}") == 1 for i in range(6))
    assert all(n == 1 for n in llm.turns.values()), llm.turns  # promise 2
    strict_check(home, {})


@pytest.mark.parametrize("failpoint", ["llm.after_record", "llm.before_record"])
def test_a_message_survives_a_kill_of_the_executor_right_after_it(
    home: Home, llm: ScriptedLLM, failpoint: str
) -> None:
    home.use_server(llm)
    llm.script = [Reply("Listing.", [call("list_dir", {"path": "."})]), Reply("Done.")]
    home.arm(f"{failpoint}=pause@1")
    run_id = home.start()
    pid = home.marker(failpoint)  # the executor holds the run, paused at its first reply
    said = home.cli("say", run_id, "and count the files")
    assert said.returncode == 0, said.stderr
    before = steps_now(home)
    kill9(pid)
    view = home.wait_status(run_id, "completed")
    messages = [s for s in view["steps"] if s["kind"] == "user"]
    assert [m["text"] for m in messages] == ["and count the files"]
    if failpoint == "llm.after_record":
        assert llm.requests_for(0) == 1, "a recorded reply was requested again"
    else:
        assert llm.requests_for(0) == 2  # never recorded: asked again, now with the message
        assert _said(_requests(llm, 0)[1], "and count the files") == 1
    (final,) = _requests(llm, 1)
    assert _said(final, "and count the files") == 1
    assert llm.requests_for(1) == 1
    assert any(e["kind"] == "lost" for e in view["events"])
    strict_check(home, before)
