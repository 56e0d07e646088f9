"""Bounded context with real processes: a long run against the scripted server never sends
a request over `max_context_tokens`, completes, and a `kill -9` in the middle of a
compaction neither folds the same turns twice nor asks for a recorded reply again."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Home
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tests.supervisor.checks import kill_at, strict_check

pytestmark = [pytest.mark.slow, pytest.mark.both_stores]

LIMIT = 2000
TURNS = 150  # 150 replies with a call each: 300 budget steps


def _script(llm: ScriptedLLM) -> None:
    llm.script = [
        Reply(f"Turn {i}: looking again.", [call("list_dir", {"path": "."})]) for i in range(TURNS)
    ]
    llm.default = Reply("All done.")


def _start(home: Home, llm: ScriptedLLM) -> str:
    home.use_server(llm)
    for n in range(12):  # a listing of some size: each result takes ~100 tokens
        (home.workspace / f"file-{n:02}.txt").write_text("x" * n)
    _script(llm)
    return home.start(
        "look around for a long time",
        "--max-context-tokens",
        str(LIMIT),
        "--max-steps",
        "400",
        "--max-tokens",
        "100000000",
    )


def _sent_tokens(request: dict[str, Any]) -> int:
    """What the server counts (and reports as prompt_tokens) for a request."""
    return sum(len(json.dumps(m)) for m in request["body"]["messages"]) // 4


def _compactions(home: Home, run_id: str) -> list[dict[str, Any]]:
    return [s for s in home.show(run_id)["steps"] if s["kind"] == "compaction"]


def _check_compactions(compactions: list[dict[str, Any]]) -> None:
    """Each folds past the one before it: no turns are folded twice."""
    assert compactions, "a long run was never compacted"
    throughs = [c["through_seq"] for c in compactions]
    seqs = [c["seq"] for c in compactions]
    for i in range(1, len(compactions)):
        assert throughs[i] > seqs[i - 1], (throughs, seqs)
    for c in compactions:
        assert c["tokens_after"] < c["tokens_before"] and c["limit"] == LIMIT
        assert c["summary"].startswith("Earlier work, compacted by tui-agent: steps 1 to ")


def test_a_300_step_run_stays_under_max_context_tokens_and_completes(
    home: Home, llm: ScriptedLLM
) -> None:
    run_id = _start(home, llm)
    view = home.wait_status(run_id, "completed", timeout=180)
    assert view["usage"]["steps"] == TURNS * 2 + 1
    sizes = [_sent_tokens(r) for r in llm.requests]
    assert len(sizes) == TURNS + 1 and max(sizes) <= LIMIT, max(sizes)
    assert max(llm.turns.values()) == 1  # every turn asked once
    compactions = _compactions(home, run_id)
    _check_compactions(compactions)
    # The newest requests hold the newest summary, not the whole conversation.
    last = llm.requests[-1]["body"]["messages"]
    assert "compacted by tui-agent" in last[0]["content"]
    assert sum(1 for m in last if m["role"] == "assistant") < TURNS // 4
    assert view["result"] == "All done."
    strict_check(home, {})


def test_kill_9_during_a_compaction_folds_nothing_twice_and_asks_nothing_again(
    home: Home, llm: ScriptedLLM
) -> None:
    home.arm("txn.compaction=pause@2")  # the executor's second compaction, mid-transaction
    run_id = _start(home, llm)
    before = kill_at(home, "txn.compaction")
    view = home.wait_status(run_id, "completed", timeout=180)
    assert max(llm.turns.values()) == 1, "a recorded reply was requested again"
    assert max(_sent_tokens(r) for r in llm.requests) <= LIMIT
    _check_compactions(_compactions(home, run_id))
    assert view["usage"]["steps"] == TURNS * 2 + 1
    strict_check(home, before)


def test_a_state_too_big_for_the_limit_pauses_the_run_and_resume_raises_it(
    home: Home, llm: ScriptedLLM
) -> None:
    """Every request holds the agent state whole: when it alone outgrows the limit, folding
    cannot help; the run pauses and says why (nothing is sent over the limit), and
    `resume --max-context-tokens` goes on."""
    home.use_server(llm)
    facts = [f"fact {n}: " + "many words " * 120 for n in range(4)]  # ~5,000 characters
    llm.script = [
        Reply("Noting.", [call("update_state", {"patch": {"add_facts": facts}})]),
        Reply("Done."),
    ]
    run_id = home.start("remember it", "--max-context-tokens", "1000")
    view = home.wait_status(run_id, "paused", "completed", "failed")
    assert view["status"] == "paused", (view["status"], view["reason"], view["steps"][-2:])
    assert "max_context_tokens 1,000" in view["reason"], view["reason"]
    assert "resume it with a larger --max-context-tokens" in view["reason"]
    assert len(llm.requests) == 1 and _sent_tokens(llm.requests[0]) <= 1000
    same = home.cli("resume", run_id)  # it would only pause again: refused, said why
    assert same.returncode == 2 and "with --max-context-tokens above 1,000" in same.stderr
    refused = home.cli("resume", run_id, "--max-context-tokens", "200")
    assert refused.returncode == 2 and "at least 1000" in refused.stderr
    home.cli("resume", run_id, "--max-context-tokens", "8000", check=True)
    view = home.wait_status(run_id, "completed")
    assert view["budget"]["max_context_tokens"] == 8000 and view["result"] == "Done."
    assert max(llm.turns.values()) == 1
    strict_check(home, {})
