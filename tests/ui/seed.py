"""Deterministic databases for UI tests: fixed ids, a counting clock, the real store/journal."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from tui_agent.domain.models import (
    AgentState,
    Budget,
    Policy,
    RunSpec,
    RunStatus,
    StatePatch,
    StepStatus,
    arguments_hash,
)
from tui_agent.store.journal import StepJournal
from tui_agent.store.run_store import RunStore, open_store

T0 = 1_790_000_000.0


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Seeder:
    def __init__(self, db_path: Path | str) -> None:
        self.clock = Clock()
        self._n = 0
        self.store: RunStore = open_store(db_path, clock=self.clock, new_id=self._new_id)
        self.journal = StepJournal(self.store.db, "seed-owner", 1)

    def _new_id(self) -> str:
        self._n += 1
        return f"{self._n:04x}" + "c0ffee" * 4 + "00000000"[: 32 - 4 - 24]

    def run(self, goal: str, *, max_steps: int = 20, workspace: str = "/work/project") -> str:
        run, _ = self.store.create_run(
            RunSpec(
                goal=goal,
                workspace=workspace,
                model="demo",
                budget=Budget(max_steps=max_steps, max_llm_tokens=50_000),
                policy=Policy(),
            )
        )
        assert self.journal.claim(1, 10_000) == [run.id]
        return run.id

    def llm(
        self,
        run_id: str,
        text: str,
        calls: list[tuple[str, dict[str, object]]],
        *,
        tokens: int = 120,
        latency: float | None = None,
    ) -> int:
        payload: dict[str, object] = {
            "content": text,
            "tool_calls": [
                {"id": f"c{i}-{text[:3]}", "name": n, "arguments": json.dumps(a)}
                for i, (n, a) in enumerate(calls)
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            "model": "demo",
        }
        if latency is not None:
            payload["latency_s"] = latency
        return self.journal.record_llm_reply(run_id, payload, tokens, 1.5)

    def tool(
        self,
        run_id: str,
        llm_seq: int,
        name: str,
        args: dict[str, object],
        result: str,
        state: AgentState | None = None,
    ) -> None:
        raw = json.dumps(args)
        seq = self.journal.journal_tool_start(
            run_id, llm_seq=llm_seq, call_id=f"c0-{llm_seq}", tool=name, arguments=raw, wall=0.5
        )
        self.journal.finish_tool(
            run_id, seq, status=StepStatus.FINISHED, result=result, wall=0.5, state=state
        )

    def finish(self, run_id: str, status: RunStatus, **kw: str) -> None:
        self.journal.finish_run(run_id, status, wall=1.0, message=status.value, **kw)

    def close(self) -> None:
        self.store.close()


def _checkpoint(db_path: Path | str) -> None:
    """SQLite: the seeded rows moved from the log into the file (PostgreSQL: nothing to do)."""
    if isinstance(db_path, Path):
        with sqlite3.connect(db_path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def seed_showcase(db_path: Path | str) -> dict[str, str]:
    """A completed run with many steps, a paused run, a run waiting for approval."""
    s = Seeder(db_path)
    ids: dict[str, str] = {}

    done = s.run("Tidy the docs folder and list what changed", max_steps=40)
    plan = StatePatch(
        plan=["Survey docs/", "Fix headings", "Report"],
        add_facts=[{"key": "files", "value": 12, "source": "agent"}],
    )
    seq = s.llm(done, "I'll plan first.", [("update_state", {"patch": {"plan": []}})])
    s.tool(
        done,
        seq,
        "update_state",
        {"patch": {"plan": ["Survey docs/"]}},
        "state updated",
        state=plan.apply(AgentState()),
    )
    for i in range(8):
        seq = s.llm(done, f"Reading chapter {i}.", [("read_file", {"path": f"docs/ch{i}.md"})])
        s.tool(done, seq, "read_file", {"path": f"docs/ch{i}.md"}, f"# Chapter {i}\nText…")
    s.llm(done, "All chapters are tidy; nothing else to change.", [])
    s.finish(done, RunStatus.COMPLETED, result="All chapters are tidy; nothing else to change.")
    ids["completed"] = done

    paused = s.run("Count the lines of every file", max_steps=4)
    for i in range(2):
        seq = s.llm(paused, f"Listing part {i}.", [("list_dir", {"path": f"part{i}"})])
        s.tool(paused, seq, "list_dir", {"path": f"part{i}"}, "a.txt (10 bytes)")
    s.finish(paused, RunStatus.PAUSED, pause_reason="budget spent: steps 4 of 4")
    ids["paused"] = paused

    waiting = s.run("Write a changelog entry for the release")
    seq = s.llm(
        waiting,
        "I'll write the entry now.",
        [("write_file", {"path": "CHANGELOG.md", "content": "## 1.2.0\n- faster"})],
    )
    args = json.dumps({"path": "CHANGELOG.md", "content": "## 1.2.0\n- faster"})
    s.journal.request_approval(
        waiting,
        llm_seq=seq,
        call_id="c0-I'l",
        tool="write_file",
        arguments=args,
        args_hash=arguments_hash("write_file", json.loads(args)),
        risk="write_local",
        model_reason="I'll write the entry now.",
        wall=0.2,
        reason_text='waiting for approval: write_file(path="CHANGELOG.md", …) [write_local]',
    )
    ids["waiting"] = waiting
    s.close()
    _checkpoint(db_path)
    return ids


def seed_stats(db_path: Path | str, workspace: str = "/work/project") -> dict[str, str]:
    """Ten days of finished and paused runs (durations from seconds to hours, LLM replies
    with latencies), then a run with a write after its reads: what the statistics screen
    plots and the fork form lists. Times are T0-relative, so the plots are the same on
    every run (with the same time zone)."""
    s = Seeder(db_path)
    statuses = [
        RunStatus.COMPLETED,
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.COMPLETED,
        RunStatus.CANCELLED,
        RunStatus.COMPLETED,
        RunStatus.PAUSED,
    ]
    durations = [2.0, 4.0, 12.0, 45.0, 200.0, 700.0, 3000.0, 9000.0]
    latencies = [0.3, 0.8, 1.2, 1.7, 2.5, 4.0, 6.5, 12.0]
    for i in range(40):
        start = T0 - (i % 10) * 86400 - 3600 * (i % 4) - 60 * i
        s.clock.now = start
        run_id = s.run(f"Past job number {i}", workspace=workspace)
        for j in range(1 + i % 3):
            s.llm(run_id, f"step {j}", [], tokens=200 + 37 * i, latency=latencies[(i + j) % 8])
        s.clock.now = start + durations[i % 8]
        status = statuses[i % 7]
        if status is RunStatus.PAUSED:
            s.finish(run_id, status, pause_reason="budget spent: steps 3 of 3")
        else:
            s.finish(run_id, status, result="done" if status is RunStatus.COMPLETED else "")

    s.clock.now = T0 + 60
    run_id = s.run("Summarise the notes into NOTES.md", workspace=workspace)
    seq = s.llm(run_id, "Listing the notes.", [("list_dir", {"path": "notes"})], tokens=300)
    s.tool(run_id, seq, "list_dir", {"path": "notes"}, "a.md (10 bytes)\nb.md (12 bytes)")
    for i, name in enumerate(("a.md", "b.md", "c.md")):
        s.clock.now += 25
        seq = s.llm(
            run_id, f"Reading {name}.", [("read_file", {"path": name})], tokens=400 + 150 * i
        )
        s.tool(run_id, seq, "read_file", {"path": name}, f"notes of {name}")
    s.clock.now += 40
    content = {"path": "NOTES.md", "content": "# Notes\n- a\n- b\n- c"}
    seq = s.llm(run_id, "Writing the summary.", [("write_file", content)], tokens=900)
    s.tool(run_id, seq, "write_file", content, "wrote 22 bytes")
    s.clock.now += 15
    s.llm(run_id, "NOTES.md holds the summary.", [], tokens=1000, latency=2.2)
    s.finish(run_id, RunStatus.COMPLETED, result="NOTES.md holds the summary.")
    s.close()
    _checkpoint(db_path)
    return {"notes": run_id}
