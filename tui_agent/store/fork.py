"""A new run from step N of another: its recorded steps 1..N (artifacts with them) and its
state as of step N, in one transaction. The original is only read. Approvals are never
copied: a risky call after N must be approved again in the new run."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

from tui_agent.domain.errors import BadInput
from tui_agent.domain.models import (
    UNCONFINED_FLAG,
    AgentState,
    Budget,
    Run,
    RunSpec,
    RunStatus,
    StatePatch,
    Step,
    StepKind,
    StepStatus,
)
from tui_agent.store.rows import step_from_row
from tui_agent.store.starts import insert_run_txn
from tui_agent.store.txn import INSERT_STEP, add_event_txn, load_run_txn


def state_as_of(
    steps: list[Step], artifacts: dict[str, dict[str, Any]], flags: list[str]
) -> AgentState:
    """The agent state after `steps`, rebuilt as the run built it: each finished
    `update_state` call's patch, each stored artifact, in step order."""
    state = AgentState(risk_flags=list(flags))
    for step in steps:
        if step.kind is not StepKind.TOOL or step.status is not StepStatus.FINISHED:
            continue
        if step.tool == "update_state":
            args = step.parsed_arguments()
            with contextlib.suppress(KeyError, TypeError, ValueError):  # refused there too
                state = StatePatch.parse(args["patch"]).apply(state)
        if step.artifact_id and step.artifact_id in artifacts:
            state.artifacts.append(artifacts[step.artifact_id])
    return state


def check_fork_point_txn(cur: Any, source: Run, at: int) -> None:
    """BadInput, saying where one can fork instead, unless step `at` of `source` is one to
    fork from: a recorded step with no tool call still open at or before it."""
    last = source.next_seq - 1
    if not 1 <= at <= last:
        raise BadInput(
            f"run {source.id[:8]} has steps 1 to {last}; fork at one of them"
            if last
            else f"run {source.id[:8]} has no recorded step yet to fork from"
        )
    open_seq = cur.execute(
        "SELECT min(seq) AS seq FROM steps WHERE run_id = ? AND seq <= ? AND status = ?",
        (source.id, at, StepStatus.STARTED.value),
    ).fetchone()["seq"]
    kind = cur.execute(
        "SELECT kind FROM steps WHERE run_id = ? AND seq = ?", (source.id, at)
    ).fetchone()
    if kind is not None and kind["kind"] == StepKind.APPROVAL.value:
        earlier = cur.execute(
            "SELECT max(seq) AS seq FROM steps WHERE run_id = ? AND seq < ? AND kind <> ?",
            (source.id, at, StepKind.APPROVAL.value),
        ).fetchone()["seq"]
        raise BadInput(
            f"step {at} of run {source.id[:8]} is a decision, and decisions are never copied; "
            f"fork at step {earlier or 1} (its call is asked again) or after the call it decided"
        )
    if open_seq is not None:
        raise BadInput(
            f"step {open_seq} of run {source.id[:8]} is a tool call with no recorded "
            f"outcome; fork at step {open_seq - 1} or once it has one"
        )


def check_fork_budget(steps: list[Step], budget: Budget, at: int) -> list[Step]:
    """The copied steps that count against the fork's budget; BadInput when that budget is
    spent before the fork's first step of its own (it would pause at once, saying so)."""
    counted = [s for s in steps if s.seq <= at and s.kind in (StepKind.LLM, StepKind.TOOL)]
    tokens = sum(s.tokens for s in steps if s.seq <= at)
    if len(counted) >= budget.max_steps:
        raise BadInput(
            f"the fork starts with the {len(counted)} budget steps it copies, and a budget of "
            f"{budget.max_steps} steps leaves none for it; give it more than {len(counted)} "
            "steps (--max-steps; in the app, fork from an earlier step)"
        )
    if tokens >= budget.max_llm_tokens:
        raise BadInput(
            f"the fork starts with the {tokens} tokens it copies, and a budget of "
            f"{budget.max_llm_tokens} tokens leaves none for it; give it more than {tokens} "
            "tokens (--max-tokens; in the app, fork from an earlier step)"
        )
    return counted


def fork_point(reader: Any, source_id: str, at: int) -> Run:
    """The run to fork, read only, once `check_fork_point_txn` accepts step `at` of it (the
    TUI's fork form asks this before anything is written)."""
    with reader.snapshot() as cur:
        source = reader.get_run(source_id)  # the same snapshot: nested reads share it
        check_fork_point_txn(cur, source, at)
        return source


def fork_run(db: Any, source_id: str, at: int, spec: RunSpec, new_id: str) -> tuple[Run, Run]:
    """(the new run, the original as read) — the new run queued with steps 1..`at`."""
    now = float(db.clock())
    with db.raw_write() as cur:
        source = load_run_txn(cur, source_id)
        check_fork_point_txn(cur, source, at)
        rows = cur.execute(
            "SELECT * FROM steps WHERE run_id = ? AND seq <= ? ORDER BY seq", (source_id, at)
        ).fetchall()
        steps = [step_from_row(r) for r in rows]
        renamed: dict[str, str] = {}
        summaries: dict[str, dict[str, Any]] = {}
        for art in cur.execute(
            "SELECT * FROM artifacts WHERE run_id = ? AND seq <= ? ORDER BY seq",
            (source_id, at),
        ).fetchall():
            new_art = uuid.uuid4().hex
            renamed[art["id"]] = new_art
            content = bytes(art["content"])
            cur.execute(
                "INSERT INTO artifacts (id, run_id, seq, size, summary, content, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (new_art, new_id, art["seq"], art["size"], art["summary"], content, now),
            )
            summaries[art["id"]] = {
                "artifact_id": new_art,
                "type": "tool_result",
                "summary": art["summary"],
                "bytes": len(content),
            }
        flags = [UNCONFINED_FLAG] if spec.policy.sandbox == "none" else []
        state = state_as_of(steps, summaries, flags)
        insert_run_txn(cur, spec, new_id, now, state.to_dict())
        cur.executemany(
            INSERT_STEP,
            [
                (
                    new_id,
                    s.seq,
                    s.kind.value,
                    s.status.value,
                    s.tool,
                    s.call_id,
                    s.arguments,
                    s.result,
                    renamed.get(s.artifact_id or "", s.artifact_id),
                    s.llm_seq,
                    json.dumps(s.payload),
                    s.tokens,
                    s.created_at,
                    s.finished_at,
                )
                for s in steps
            ],
        )
        counted = check_fork_budget(steps, spec.budget, at)
        cur.execute(
            "UPDATE runs SET usage_steps = ?, usage_tokens = ?, next_seq = ? WHERE id = ?",
            (len(counted), sum(s.tokens for s in steps), at + 1, new_id),
        )
        add_event_txn(
            cur,
            new_id,
            "created",
            f"forked from run {source_id[:8]} at step {at} with model {spec.model}",
            now,
            {"forked_from": source_id, "at": at},
            becomes=RunStatus.QUEUED,
        )
        return load_run_txn(cur, new_id), source
