"""A person's messages in the conversation: where each goes, and that a run never completes
over one it has not answered (a real worker, a real SQLite file, the scripted server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.test_worker import advance, start
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tests.values import a_run
from tui_agent.domain.models import (
    Run,
    RunStatus,
    Step,
    StepKind,
    StepStatus,
)
from tui_agent.engine.conversation import build_messages, unheard_messages
from tui_agent.store.journal import StepJournal
from tui_agent.store.messages import add_message
from tui_agent.store.run_store import RunStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    s = open_store(tmp_path / "engine.db")
    yield s
    s.close()


def _run() -> Run:
    return a_run(workspace="/ws", model="m")


def _reply(seq: int, seen: int | None, *calls: str) -> Step:
    payload: dict[str, Any] = {
        "content": f"reply {seq}",
        "tool_calls": [{"id": c, "name": "list_dir", "arguments": "{}"} for c in calls],
    }
    if seen is not None:
        payload["seen_seq"] = seen
    return Step("r", seq, StepKind.LLM, StepStatus.DONE, 0.0, payload=payload)


def _tool(seq: int, call_id: str, llm_seq: int) -> Step:
    return Step("r", seq, StepKind.TOOL, StepStatus.FINISHED, 0.0, call_id=call_id, llm_seq=llm_seq)


def _said(seq: int, text: str) -> Step:
    return Step("r", seq, StepKind.USER, StepStatus.DONE, 0.0, payload={"text": text})


def _roles(messages: list[dict[str, Any]]) -> list[str]:
    return [f"{m['role']}:{m.get('content') or m.get('tool_call_id')}" for m in messages[1:]]


def test_a_message_said_while_the_model_answered_follows_that_reply_and_its_results() -> None:
    # 3 was said while the model was answering with 4 (whose request was built from 1-2)
    steps = [_reply(1, 0, "a"), _tool(2, "a", 1), _said(3, "hi"), _reply(4, 2, "b")]
    steps.append(_tool(5, "b", 4))
    assert _roles(build_messages(_run(), steps)) == [
        "user:the goal",
        "assistant:reply 1",
        "tool:a",
        "assistant:reply 4",
        "tool:b",
        "user:hi",  # after the results of the reply that had not seen it, never between
    ]
    assert [s.seq for s in unheard_messages(steps)] == [3]


def test_a_message_a_request_saw_goes_before_its_reply_and_is_heard() -> None:
    steps = [_reply(1, 0, "a"), _said(2, "hi"), _tool(3, "a", 1), _reply(4, 3)]
    assert _roles(build_messages(_run(), steps)) == [
        "user:the goal",
        "assistant:reply 1",
        "tool:a",
        "user:hi",
        "assistant:reply 4",
    ]
    assert unheard_messages(steps) == []


def test_replies_recorded_before_messages_existed_saw_every_step_before_them() -> None:
    steps = [_said(1, "early"), _reply(2, None)]
    assert _roles(build_messages(_run(), steps))[1] == "user:early"
    assert unheard_messages(steps) == []


def test_a_run_does_not_complete_over_a_message_that_came_after_what_it_read(
    store: RunStore,
    llm: ScriptedLLM,
    tmp_path: Path,
) -> None:
    run_id = start(store, llm, tmp_path)
    journal = StepJournal(store.db, f"test-{os.getpid()}", os.getpid())
    assert run_id in journal.claim(10, 60)
    journal.record_llm_reply(run_id, {"content": "done", "tool_calls": []}, 5, 0.1)
    _, seq = add_message(store.db, run_id, "one more thing", "me")
    assert seq == 2
    completed = journal.finish_run(
        run_id, RunStatus.COMPLETED, wall=0, message="completed", unless_message_after=1
    )
    assert completed is False
    assert store.get_run(run_id).status is RunStatus.RUNNING  # nothing was written
    assert journal.finish_run(
        run_id, RunStatus.COMPLETED, wall=0, message="completed", unless_message_after=2
    )
    assert store.get_run(run_id).status is RunStatus.COMPLETED


def test_a_message_said_during_a_request_is_in_the_next_one_exactly_once(
    store: RunStore,
    llm: ScriptedLLM,
    tmp_path: Path,
) -> None:
    run_id = start(store, llm, tmp_path)
    said: list[int] = []

    def say_while_answering(messages: list[dict[str, Any]], turn: int) -> None:
        if turn == 0 and not said:  # the executor is waiting for this very reply
            said.append(add_message(store.db, run_id, "use the short form", "me")[1])

    llm.on_request = say_while_answering
    llm.script = [Reply("Looking.", [call("list_dir", {"path": "."})]), Reply("Short: done.")]
    advance(store, run_id)
    run = store.get_run(run_id)
    assert run.status is RunStatus.COMPLETED and run.result == "Short: done."
    first, second = (r["body"]["messages"] for r in llm.requests)
    assert not any(m["content"] == "use the short form" for m in first)
    users = [m for m in second if m["role"] == "user"]
    assert [m["content"] for m in users] == ["g", "use the short form"]
    assert second[-1] == {"role": "user", "content": "use the short form"}
    steps = store.steps(run_id)
    assert [s.kind.value for s in steps] == ["user", "llm", "tool", "llm"]
    assert run.usage.steps == 3  # a message is not a budget step
