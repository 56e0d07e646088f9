"""The engine in-process: a real RunWorker over a real SQLite file, talking HTTP to the
scripted server through the real openai client (no supervisor, so rules are easy to see)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tui_agent.domain.models import Budget, Policy, RunSpec, RunStatus
from tui_agent.engine.worker import RetryPolicy, RunWorker
from tui_agent.llm.factory import make_client
from tui_agent.store.journal import StepJournal
from tui_agent.store.run_store import RunStore, open_store
from tui_agent.tools.builtin import builtin_registry


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    s = open_store(tmp_path / "engine.db")
    yield s
    s.close()


def start(store: RunStore, llm: ScriptedLLM, ws: Path, **budget: float) -> str:
    spec = RunSpec(
        goal="g",
        workspace=str(ws),
        model="scripted",
        base_url=llm.base_url,
        budget=Budget(**budget),
        policy=Policy(),
    )  # type: ignore[arg-type]
    return store.create_run(spec)[0].id


def advance(store: RunStore, run_id: str) -> None:
    """Claim the run and let one worker advance it until it leaves the executor."""
    journal = StepJournal(store.db, f"test-{os.getpid()}", os.getpid())
    assert run_id in journal.claim(10, 60)
    RunWorker(
        journal,
        run_id,
        builtin_registry(),
        lambda r: make_client(r.model, r.base_url),
        RetryPolicy(3, 0.01, 0.05),
        threading.Event(),
    ).run()


def test_approval_is_bound_to_the_exact_arguments(
    store: RunStore, llm: ScriptedLLM, tmp_path: Path
) -> None:
    llm.script = [
        Reply("Write.", [call("write_file", {"path": "a.txt", "content": "safe"})]),
        Reply("Done."),
    ]
    run_id = start(store, llm, tmp_path)
    advance(store, run_id)
    assert store.get_run(run_id).status is RunStatus.WAITING_APPROVAL
    store.decide_approval(run_id, approve=True, by="tester")
    # The recorded call now carries other arguments than the ones approved.
    with store.db.write() as conn:
        row = conn.exec_driver_sql(
            "SELECT payload_json FROM steps WHERE run_id = ? AND kind = 'llm'", (run_id,)
        ).one()
        payload = json.loads(row[0])
        payload["tool_calls"][0]["arguments"] = json.dumps({"path": "a.txt", "content": "evil"})
        conn.exec_driver_sql(
            "UPDATE steps SET payload_json = ? WHERE run_id = ? AND seq = 1",
            (json.dumps(payload), run_id),
        )
    advance(store, run_id)
    assert store.get_run(run_id).status is RunStatus.WAITING_APPROVAL  # asked again
    assert not (tmp_path / "a.txt").exists()
    approvals = store.approvals(run_id)
    assert [a.status for a in approvals] == ["approved", "pending"]
    assert json.loads(approvals[1].arguments)["content"] == "evil"


def test_token_budget_pauses_the_run(store: RunStore, llm: ScriptedLLM, tmp_path: Path) -> None:
    llm.default = Reply(
        "More.",
        [call("list_dir", {})],
        usage={"prompt_tokens": 400, "completion_tokens": 100, "total_tokens": 500},
    )
    run_id = start(store, llm, tmp_path, max_llm_tokens=1200)
    advance(store, run_id)
    run = store.get_run(run_id)
    assert run.status is RunStatus.PAUSED
    assert run.usage.llm_tokens == 1500
    assert run.pause_reason == "budget spent: tokens 1500 of 1200"


def test_wall_time_budget_counts_active_time(
    store: RunStore, llm: ScriptedLLM, tmp_path: Path
) -> None:
    llm.default = Reply("Slow.", [call("list_dir", {})], delay_s=0.3)
    run_id = start(store, llm, tmp_path, max_wall_time_s=1.0)
    advance(store, run_id)
    run = store.get_run(run_id)
    assert run.status is RunStatus.PAUSED
    assert 1.0 <= run.usage.wall_time_s < 3.0
    assert "wall time" in (run.pause_reason or "")


def test_a_reply_without_tool_calls_completes_with_its_text(
    store: RunStore, llm: ScriptedLLM, tmp_path: Path
) -> None:
    llm.script = [
        Reply(
            "State first.",
            [
                call(
                    "update_state",
                    {
                        "patch": {
                            "plan": ["a", "b"],
                            "add_questions": ["why?"],
                            "add_risk_flags": ["budget_pressure"],
                        }
                    },
                )
            ],
        ),
        Reply("The answer is 42."),
    ]
    run_id = start(store, llm, tmp_path)
    advance(store, run_id)
    run = store.get_run(run_id)
    assert run.status is RunStatus.COMPLETED and run.result == "The answer is 42."
    assert run.state.plan == ["a", "b"] and run.state.risk_flags == ["budget_pressure"]
    # The state reached the model in the next turn's system prompt.
    system = llm.requests[-1]["body"]["messages"][0]["content"]
    assert '"plan": ["a", "b"]' in system


def test_several_tool_calls_in_one_reply_are_answered_in_order(
    store: RunStore, llm: ScriptedLLM, tmp_path: Path
) -> None:
    (tmp_path / "x.txt").write_text("X")
    llm.script = [
        Reply("Both.", [call("list_dir", {}), call("read_file", {"path": "x.txt"})]),
        Reply("ok"),
    ]
    run_id = start(store, llm, tmp_path)
    advance(store, run_id)
    messages = llm.requests[-1]["body"]["messages"]
    tool_msgs = [m for m in messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == ["call_0_0", "call_0_1"]
    assert tool_msgs[1]["content"] == "X"
