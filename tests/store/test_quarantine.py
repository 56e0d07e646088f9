"""The rules of quarantine and of a run that cannot go on, on both engines and in-process
(the real-process proofs are in tests/supervisor/test_cannot_go_on.py): an executor's death
is counted per run and step from the events alone; the third in a row at one step sets the
run aside; a recorded step, a person's decision or a stop end the series."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui_agent.domain.errors import InvalidTransition
from tui_agent.domain.models import (
    QUARANTINED,
    Budget,
    Policy,
    RunSpec,
    RunStatus,
)
from tui_agent.domain.reason import run_reason
from tui_agent.engine.preflight import run_obstacle
from tui_agent.store.journal import StepJournal
from tui_agent.store.leases import LeaseStore
from tui_agent.store.run_store import RunStore, open_store

both = pytest.mark.both_stores


@pytest.fixture
def store(store_target: Path | str) -> Iterator[RunStore]:
    s = open_store(store_target)
    yield s
    s.close()


def start(store: RunStore, workspace: Path | str = "/tmp", **kw: object) -> str:
    base: dict[str, object] = {
        "goal": "g",
        "workspace": str(workspace),
        "model": "demo",
        "budget": Budget(),
        "policy": Policy(),
    }
    base.update(kw)
    return store.create_run(RunSpec(**base))[0].id  # type: ignore[arg-type]


class Deaths:
    """Executors that take runs and die (as the supervisor records it: `release_runs_of`)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.leases = LeaseStore(store.db)
        self.pid = 1000

    def executor(self) -> StepJournal:
        self.pid += 1
        return StepJournal(self.store.db, f"owner-{self.pid}", self.pid)

    def take_and_die(self, *run_ids: str, counts: bool = True) -> StepJournal:
        journal = self.executor()
        assert sorted(journal.claim(10, 60)) == sorted(run_ids)
        self.leases.release_runs_of(journal.pid, "exited with code 70", counts=counts)
        return journal


def reason(store: RunStore, run_id: str) -> str | None:
    return run_reason(store.get_run(run_id), now=store.now())


@both
def test_the_third_death_in_a_row_at_one_step_quarantines_the_run(store: RunStore) -> None:
    run_id = start(store)
    deaths = Deaths(store)
    deaths.take_and_die(run_id)
    deaths.take_and_die(run_id)
    lost = [e for e in store.events(run_id) if e.kind == "lost"]
    assert [e.data for e in lost] == [{"step": 1, "deaths": 1}, {"step": 1, "deaths": 2}]
    assert "death 2 in a row at step 1" in lost[-1].message
    assert store.get_run(run_id).status is RunStatus.RUNNING  # recovered, not yet set aside
    deaths.take_and_die(run_id)
    run = store.get_run(run_id)
    assert run.status is RunStatus.NEEDS_ATTENTION and run.quarantined
    assert run.owner is None and run.lost_at is None
    text = reason(store, run_id)
    assert text is not None and text.startswith(
        f"{QUARANTINED} its executor died 3 times in a row at step 1 (asking the model)"
    )
    assert f"tui-agent resume {run_id[:8]}" in text
    last = store.events(run_id)[-1]
    assert (last.kind, last.message, last.data["status"]) == ("status", text, "needs_attention")
    # Set aside: no executor takes it any more.
    assert Deaths(store).executor().claim(10, 60) == []


@both
def test_a_quarantine_names_the_call_it_died_in_over_the_call_in_doubt(store: RunStore) -> None:
    run_id = start(store)
    deaths = Deaths(store)
    first = deaths.executor()
    assert first.claim(10, 60) == [run_id]
    first.record_llm_reply(run_id, {"content": "", "tool_calls": []}, 5, 0.0)
    first.journal_tool_start(
        run_id, llm_seq=1, call_id="c", tool="read_file", arguments='{"path": "big"}', wall=0.0
    )
    deaths.leases.release_runs_of(first.pid, "exited with code -9")
    deaths.take_and_die(run_id)
    deaths.take_and_die(run_id)
    run = store.get_run(run_id)
    assert run.quarantined
    in_doubt = store.in_doubt_step(run_id)
    assert in_doubt is not None and in_doubt.seq == 2
    text = run_reason(run, now=store.now(), in_doubt=in_doubt)
    assert text == run.pause_reason
    assert 'at step 2 (read_file(path="big"))' in (text or "")


@both
def test_a_recorded_step_or_a_stop_between_deaths_ends_or_keeps_the_series(
    store: RunStore,
) -> None:
    run_id = start(store)
    deaths = Deaths(store)
    deaths.take_and_die(run_id)
    deaths.take_and_die(run_id, counts=False)  # stopped by the supervisor: not its doing
    lost = [e.data for e in store.events(run_id) if e.kind == "lost"]
    assert lost == [{"step": 1, "deaths": 1}, {"step": 1, "deaths": 1}]
    journal = deaths.executor()
    assert journal.claim(10, 60) == [run_id]
    journal.record_llm_reply(run_id, {"content": "", "tool_calls": []}, 5, 0.0)
    deaths.leases.release_runs_of(journal.pid, "exited with code 70")
    deaths.take_and_die(run_id)
    lost = [e.data for e in store.events(run_id) if e.kind == "lost"]
    assert lost[-2:] == [{"step": 2, "deaths": 1}, {"step": 2, "deaths": 2}]
    assert store.get_run(run_id).status is RunStatus.RUNNING


@both
def test_a_quarantined_run_is_resumed_by_a_person_and_counted_afresh(store: RunStore) -> None:
    run_id = start(store)
    deaths = Deaths(store)
    for _ in range(3):
        deaths.take_and_die(run_id)
    assert store.get_run(run_id).quarantined
    resumed = store.resume(run_id)
    assert resumed.status is RunStatus.QUEUED and resumed.pause_reason is None
    deaths.take_and_die(run_id)
    assert store.get_run(run_id).status is RunStatus.RUNNING  # a new series: death 1
    assert [e.data for e in store.events(run_id) if e.kind == "lost"][-1]["deaths"] == 1


@both
def test_resume_refuses_a_call_in_doubt_but_cancel_fails_a_quarantined_run(
    store: RunStore,
) -> None:
    in_doubt = start(store)
    journal = Deaths(store).executor()
    journal.claim(10, 60)
    text = "call in doubt: run_shell(...) (step 2) was interrupted; choose retry, skip or fail"
    journal.finish_run(
        in_doubt, RunStatus.NEEDS_ATTENTION, wall=0.0, message=text, pause_reason=text
    )
    with pytest.raises(InvalidTransition, match="resolve"):
        store.resume(in_doubt)

    quarantined = start(store)
    deaths = Deaths(store)
    for _ in range(3):
        deaths.take_and_die(quarantined)
    failed = store.cancel(quarantined, by="tester")
    assert failed.status is RunStatus.FAILED and failed.error == "quarantined run failed by tester"


@both
def test_an_executor_holds_one_run_on_its_last_try_at_a_time(store: RunStore) -> None:
    """Two runs shared an executor that died twice: neither is known to be the culprit, so
    each gets its last try with no other such run beside it."""
    a, b = start(store), start(store)
    deaths = Deaths(store)
    deaths.take_and_die(a, b)
    deaths.take_and_die(a, b)
    one = deaths.executor()
    (first,) = one.claim(10, 60)
    assert one.claim(10, 60, working={first}) == []  # not beside it
    other = deaths.executor()
    assert other.claim(10, 60) == [b if first == a else a]  # another executor may take it
    fresh = start(store)
    assert one.claim(10, 60, working={first}) == [fresh]  # ordinary runs still come
    # Once it recorded a step its deaths no longer count: the executor is free again.
    one.record_llm_reply(first, {"content": "", "tool_calls": []}, 5, 0.0)
    assert not one._last_try


@both
def test_an_unreadable_policy_never_breaks_a_read_and_keeps_the_run_from_going_on(
    store: RunStore, tmp_path: Path
) -> None:
    run_id = start(store, tmp_path)
    with store.db.raw_write() as cur:
        cur.execute("UPDATE runs SET policy_json = ? WHERE id = ?", ("{oops", run_id))
    run = store.get_run(run_id)  # no exception: the problem is part of the value
    assert run.policy.problem == "not valid JSON"
    assert run.policy.needs_approval("read_file", "read_only")  # the strictest, not a guess
    obstacle = run_obstacle(run)
    assert obstacle is not None and "recorded policy cannot be read (not valid JSON)" in obstacle


def test_a_recorded_policy_is_read_strictly() -> None:
    good = Policy(approval_risks=("external_action",), approval_timeout_s=5, sandbox="none")
    assert Policy.from_json(json.dumps(good.to_dict())) == good
    assert Policy.from_json(None) == Policy() == Policy.from_json("{}")  # older runs: defaults
    for text, problem in (
        ("[]", "not an object"),
        ('{"approval_risks": "write_local"}', "approval_risks"),
        ('{"approval_risks": ["everything"]}', "approval_risks"),
        ('{"always_allow": [1]}', "always_allow"),
        ('{"approval_timeout_s": -1}', "approval_timeout_s"),
        ('{"approval_timeout_s": true}', "approval_timeout_s"),
        ('{"sandbox": "jail"}', "sandbox 'jail'"),
    ):
        assert problem in (Policy.from_json(text).problem or ""), text


def test_a_run_cannot_go_on_without_its_workspace_or_a_way_to_its_model(tmp_path: Path) -> None:
    from tui_agent.domain.models import AgentState, Run, Usage

    def run(**kw: object) -> Run:
        fields: dict[str, object] = {
            "id": "r" * 32,
            "status": RunStatus.PAUSED,
            "goal": "g",
            "workspace": str(tmp_path),
            "model": "gpt-4o-mini",
            "base_url": None,
            "budget": Budget(),
            "policy": Policy(),
            "usage": Usage(),
            "state": AgentState(),
            "created_at": 0.0,
            "updated_at": 0.0,
        }
        fields.update(kw)
        return Run(**fields)  # type: ignore[arg-type]

    assert run_obstacle(run()) is None  # no environment given: not asked
    assert run_obstacle(run(model="demo"), env={}) is None
    assert run_obstacle(run(base_url="http://127.0.0.1:8080/v1"), env={}) is None
    assert run_obstacle(run(), env={"OPENAI_API_KEY": "k"}) is None
    no_key = run_obstacle(run(), env={})
    assert no_key is not None and "neither OPENAI_API_KEY nor OPENAI_BASE_URL" in no_key
    bad_url = run_obstacle(run(base_url="ftp://user:secret@host"), env={})
    assert bad_url is not None and "not an http(s) URL" in bad_url and "secret" not in bad_url
    gone = tmp_path / "gone"
    missing = run_obstacle(run(workspace=str(gone)))
    assert missing == (
        f"workspace {gone} no longer exists; recreate it and resume, or fork the run with "
        "--workspace DIR"
    )
    assert run_obstacle(run(workspace=str(gone)), workspace=False) is None
    (tmp_path / "file").write_text("x")
    not_dir = run_obstacle(run(workspace=str(tmp_path / "file")))
    assert not_dir is not None and "is no longer a directory" in not_dir
