"""Row mappings to domain values; the only place that knows column names map to fields.

Plain Python (no SQLAlchemy), so the read path can map `sqlite3.Row`s too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tui_agent.domain.models import (
    AgentState,
    Approval,
    Budget,
    Event,
    Policy,
    Run,
    RunStatus,
    Step,
    StepKind,
    StepStatus,
    Usage,
)

# Columns the history needs: never the JSON blobs, so listing stays cheap at 100k runs.
SUMMARY_NAMES = (
    "id",
    "status",
    "goal",
    "workspace",
    "model",
    "base_url",
    "usage_steps",
    "usage_tokens",
    "usage_wall_s",
    "result",
    "error",
    "pause_reason",
    "cancel_requested",
    "owner",
    "owner_pid",
    "lease_until",
    "lost_at",
    "retry_attempt",
    "retry_max",
    "retry_at",
    "retry_error",
    "next_seq",
    "revision",
    "waiting_tool",
    "created_at",
    "updated_at",
    "idem_key",
    "queue",
    "epoch",
    "owner_node",
)


# Value -> member by dict: `StepKind(value)` goes through Enum's metaclass call, which
# showed up when a resume maps 10,000 steps.
_KINDS = {k.value: k for k in StepKind}
_STEP_STATUSES = {s.value: s for s in StepStatus}


def _loads(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text and text != "{}" else {}


def run_from_row(row: Mapping[str, Any]) -> Run:
    return Run(
        id=row["id"],
        status=RunStatus(row["status"]),
        goal=row["goal"],
        workspace=row["workspace"],
        model=row["model"],
        base_url=row["base_url"],
        budget=Budget.from_dict(_loads(row.get("budget_json"))),
        policy=Policy.from_dict(_loads(row.get("policy_json"))),
        usage=Usage(row["usage_steps"], row["usage_tokens"], row["usage_wall_s"]),
        state=AgentState.from_dict(_loads(row.get("state_json"))),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        idem_key=row["idem_key"],
        result=row["result"],
        error=row["error"],
        pause_reason=row["pause_reason"],
        cancel_requested=bool(row["cancel_requested"]),
        owner=row["owner"],
        owner_pid=row["owner_pid"],
        lease_until=row["lease_until"],
        lost_at=row["lost_at"],
        retry_attempt=row["retry_attempt"],
        retry_max=row["retry_max"],
        retry_at=row["retry_at"],
        retry_error=row["retry_error"],
        next_seq=row["next_seq"],
        revision=row["revision"],
        waiting_tool=row["waiting_tool"],
        queue=row["queue"],
        epoch=row["epoch"],
        owner_node=row["owner_node"],
    )


def step_from_row(row: Mapping[str, Any]) -> Step:
    return Step(
        run_id=row["run_id"],
        seq=row["seq"],
        kind=_KINDS[row["kind"]],
        status=_STEP_STATUSES[row["status"]],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        tool=row["tool"],
        call_id=row["call_id"],
        arguments=row["arguments"],
        result=row["result"],
        artifact_id=row["artifact_id"],
        llm_seq=row["llm_seq"],
        payload=_loads(row["payload_json"]),
        tokens=row["tokens"],
    )


def approval_from_row(row: Mapping[str, Any]) -> Approval:
    return Approval(
        id=row["id"],
        run_id=row["run_id"],
        llm_seq=row["llm_seq"],
        call_id=row["call_id"],
        tool=row["tool"],
        arguments=row["arguments"],
        args_hash=row["args_hash"],
        risk=row["risk"],
        model_reason=row["model_reason"],
        status=row["status"],
        created_at=row["created_at"],
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        decision_reason=row["decision_reason"],
        always=bool(row["always"]),
    )


def event_from_row(row: Mapping[str, Any]) -> Event:
    return Event(
        id=row["id"],
        run_id=row["run_id"],
        kind=row["kind"],
        message=row["message"],
        created_at=row["created_at"],
        data=_loads(row["data_json"]),
    )
