"""The JSON shapes of the CLI contract (`show --json`, `ls --json`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tui_agent.domain.models import Run
from tui_agent.service.api import RunView


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_times(data: dict[str, Any]) -> dict[str, Any]:
    """Every `*_at` field as ISO 8601 UTC, like the run's own times (no epoch floats)."""
    return {k: iso(v) if k.endswith("_at") and v is not None else v for k, v in data.items()}


def summary_json(run: Run, reason: str | None) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status.value,
        "goal": run.goal,
        "model": run.model,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "usage": run.usage.to_dict(),
        "reason": reason,
    }


def forked_from(view: RunView) -> dict[str, Any] | None:
    """The run and step a fork was made from (kept by its `created` event, so it stays
    known after the original is pruned); None for a run that was started."""
    for event in view.events:
        if event.kind == "created" and "forked_from" in event.data:
            return {"run": event.data["forked_from"], "step": event.data.get("at")}
    return None


def run_json(view: RunView) -> dict[str, Any]:
    run = view.run
    state = {
        "goal": run.goal,
        "constraints": run.constraints,
        "budget": run.budget.to_dict(),
        **run.state.to_dict(),
    }
    return {
        "id": run.id,
        "status": run.status.value,
        "goal": run.goal,
        "workspace": run.workspace,
        "model": run.model,
        "key": run.idem_key,
        "queue": run.queue,
        "callback_url": run.callback_url,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "budget": run.budget.to_dict(),
        "policy": run.policy.to_dict(),
        "usage": run.usage.to_dict(),
        "state": state,
        "steps": [_iso_times(s.to_dict()) for s in view.steps],
        "pending_approvals": [_iso_times(view.pending.to_dict())] if view.pending else [],
        "approvals": [_iso_times(a.to_dict()) for a in view.approvals],
        "events": [_iso_times(e.to_dict()) for e in view.events],
        "forked_from": forked_from(view),
        "in_doubt": _iso_times(view.in_doubt.to_dict()) if view.in_doubt else None,
        "reason": view.reason,
        "result": run.result,
        "error": run.error,
    }
