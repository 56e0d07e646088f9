"""Where a compaction cuts (pure: steps in, a plan out): between turns, past the previous
compaction, never over a person's message the model has not answered, and nothing when
there is nothing to fold."""

from __future__ import annotations

from typing import Any

from tests.values import a_run
from tui_agent.domain.compaction import folded
from tui_agent.domain.models import Run, Step, StepKind, StepStatus
from tui_agent.engine.context import plan_compaction, request_tokens
from tui_agent.engine.conversation import build_messages

LIMIT = 4000


def _run(goal: str = "look around") -> Run:
    return a_run(workspace="/ws", model="m", goal=goal)


def _reply(seq: int, call_id: str | None, seen: int | None = None) -> Step:
    payload: dict[str, Any] = {
        "content": f"reply {seq}",
        "tool_calls": [{"id": call_id, "name": "list_dir", "arguments": "{}"}] if call_id else [],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0},
    }
    if seen is not None:
        payload["seen_seq"] = seen
    return Step("r", seq, StepKind.LLM, StepStatus.DONE, 0.0, payload=payload)


def _tool(seq: int, call_id: str, llm_seq: int, size: int = 400) -> Step:
    return Step(
        "r",
        seq,
        StepKind.TOOL,
        StepStatus.FINISHED,
        0.0,
        tool="list_dir",
        arguments="{}",
        call_id=call_id,
        llm_seq=llm_seq,
        result="file.txt (1 bytes)\n" * (size // 19),
    )


def _turns(n: int, first: int = 1) -> list[Step]:
    steps: list[Step] = []
    for i in range(n):
        seq = first + 2 * i
        steps += [_reply(seq, f"c{seq}"), _tool(seq + 1, f"c{seq}", seq)]
    return steps


def _compaction(seq: int, payload: dict[str, Any]) -> Step:
    return Step("r", seq, StepKind.COMPACTION, StepStatus.DONE, 0.0, payload=payload)


def test_the_cut_falls_between_turns_and_keeps_the_newest_ones() -> None:
    run, window = _run(), _turns(20)
    plan = plan_compaction(run, window, [], LIMIT)
    assert plan is not None
    kept = [s for s in window if s.seq > plan.through_seq]
    assert kept and kept[0].kind is StepKind.LLM  # a call is never cut from its result
    assert 0 < plan.through_seq < window[-1].seq
    summary = plan.payload["summary"]
    assert summary.startswith("Earlier work, compacted by tui-agent: steps 1 to ")
    assert "- step 1, the model: reply 1 (calls list_dir)" in summary
    assert "- step 2, list_dir({}) → ok: file.txt (1 bytes) | file.txt" in summary
    assert "Kept from the agent state" in summary and "- open questions:" in summary
    assert set(plan.payload["state"]) == {"plan", "facts", "open_questions", "artifacts"}
    # The request after it: the summary in the system message, then the kept turns.
    after = build_messages(run, [*window, _compaction(41, plan.payload)])
    assert "compacted by tui-agent" in after[0]["content"]
    assert folded(after).replies == sum(
        s.kind is StepKind.LLM for s in window if s.seq <= plan.through_seq
    )
    assert sum(m["role"] == "assistant" for m in after) == len(
        [s for s in kept if s.kind is StepKind.LLM]
    )


def test_a_second_compaction_folds_the_first_and_what_it_kept() -> None:
    run, window = _run(), _turns(20)
    first = plan_compaction(run, window, [], LIMIT)
    assert first is not None
    window = [s for s in window if s.seq > first.through_seq] + [_compaction(41, first.payload)]
    window += _turns(10, first=42)
    second = plan_compaction(run, window, [], LIMIT)
    # It folds on from the first's cut (the turns the first kept may go, or some of them).
    assert second is not None and second.through_seq > first.through_seq
    assert second.payload["from_seq"] == first.through_seq + 1
    assert second.payload["replies"] > first.payload["replies"]
    lines = second.payload["lines"]
    assert len(lines) == len(set(lines))  # no step is listed twice


def test_an_unanswered_message_of_the_person_is_not_folded() -> None:
    run = _run()
    window = _turns(10)
    said = Step("r", 21, StepKind.USER, StepStatus.DONE, 0.0, payload={"text": "stop soon"})
    window += [said, *_turns(5, first=22)]
    window[-2] = _reply(30, "c30", seen=20)  # the newest reply was asked before it was said
    window[-1] = _tool(31, "c30", 30)
    plan = plan_compaction(run, window, [], LIMIT)
    assert plan is not None and plan.through_seq < 21
    after = build_messages(run, [*window, _compaction(32, plan.payload)])
    assert any(m["role"] == "user" and m["content"] == "stop soon" for m in after)


def test_nothing_to_fold_is_none() -> None:
    assert plan_compaction(_run("x" * 20_000), [], [], LIMIT) is None


def test_the_size_is_the_measured_request_plus_what_came_after() -> None:
    run = _run()
    reply = _reply(1, "c1")
    reply.payload["usage"] = {"prompt_tokens": 900, "completion_tokens": 100}
    window = [reply, _tool(2, "c1", 1, size=4000)]
    messages = build_messages(run, window)
    reply.payload["system_tokens"] = 10**6  # the state shrank: never counted below zero
    size = request_tokens(messages, [], window)
    assert 1000 + 4000 // 4 <= size <= 1000 + 4000 // 4 + 150
    reply.payload.pop("usage")  # nothing measured: everything estimated
    assert request_tokens(messages, [], window) > 4000 // 4


def test_the_newest_turn_is_never_folded_even_when_it_alone_is_too_big() -> None:
    """The result the model just asked for stays whole: the older turns go, and when only
    the newest is left there is nothing to fold (the run pauses, saying why)."""
    run = _run()
    window = [*_turns(3), _reply(7, "c7"), _tool(8, "c7", 7, size=20_000)]
    plan = plan_compaction(run, window, [], LIMIT)
    assert plan is not None and plan.through_seq == 6
    assert plan_compaction(run, window[-2:], [], LIMIT) is None
    # Nor by a second compaction right after the first kept it (the request still too
    # big): the turn before that compaction step is still the newest one (a stranger's
    # walk saw "folded steps 25 to 27" right after "folded steps 18 to 24").
    after_first = [*window[-2:], _compaction(9, plan.payload)]
    assert plan_compaction(run, after_first, [], LIMIT) is None


def test_a_message_not_yet_answered_is_never_folded_even_twice() -> None:
    """Compaction after compaction folds what came before the message, never the message:
    with nothing else left, it is None (a pause), not a message lost."""
    run = _run()
    said = Step("r", 7, StepKind.USER, StepStatus.DONE, 0.0, payload={"text": "x" * 5000})
    window = [*_turns(3), said]
    seq = 8
    while (plan := plan_compaction(run, window, [], LIMIT)) is not None:
        assert plan.through_seq < said.seq
        window = [s for s in window if s.seq > plan.through_seq]
        window.append(_compaction(seq, plan.payload))
        seq += 1
        assert seq < 20, "compaction never ends"
    assert said in window
