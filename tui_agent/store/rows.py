"""Row mappings to domain values; the only place that knows column names map to fields.

Plain Python (no SQLAlchemy), so the read path can map `sqlite3.Row`s too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
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

# A run's columns follow its domain fields (`domain.models.Run`, the one definition): each
# scalar field is the column of its name; usage is three counters; budget, policy and state
# are JSON blobs. The history reads the summary columns only, never the blobs, so listing
# stays cheap at 100k runs.
_COMPOSITE = ("status", "budget", "policy", "usage", "state")
_SCALARS = tuple(f.name for f in fields(Run) if f.name not in _COMPOSITE)
USAGE_NAMES = ("usage_steps", "usage_tokens", "usage_wall_s")
BLOB_NAMES = ("budget_json", "policy_json", "state_json")
SUMMARY_NAMES = ("status", *_SCALARS, *USAGE_NAMES)


# Value -> member by dict: `StepKind(value)` goes through Enum's metaclass call, which
# showed up when a resume maps 10,000 steps.
_KINDS = {k.value: k for k in StepKind}
_STEP_STATUSES = {s.value: s for s in StepStatus}


def _loads(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text and text != "{}" else {}


def run_from_row(row: Mapping[str, Any]) -> Run:
    """A run from a full row or a summary row (whose blobs are absent: defaults)."""
    scalars = {name: row[name] for name in _SCALARS}
    scalars["cancel_requested"] = bool(scalars["cancel_requested"])  # SQLite keeps 0/1
    return Run(
        status=RunStatus(row["status"]),
        budget=Budget.from_dict(_loads(row.get("budget_json"))),
        policy=Policy.from_json(row.get("policy_json")),  # never raises: see `problem`
        usage=Usage(row["usage_steps"], row["usage_tokens"], row["usage_wall_s"]),
        state=AgentState.from_dict(_loads(row.get("state_json"))),
        **scalars,
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
