"""Domain values for tests that need a run without a store (one definition of its defaults)."""

from __future__ import annotations

from typing import Any

from tui_agent.domain.models import AgentState, Budget, Policy, Run, RunStatus, Usage


def a_run(status: RunStatus = RunStatus.RUNNING, **fields: Any) -> Run:
    """A run with plain defaults; `fields` override any of them."""
    values: dict[str, Any] = dict(
        id="r",
        status=status,
        goal="the goal",
        workspace="/",
        model="demo",
        base_url=None,
        budget=Budget(),
        policy=Policy(),
        usage=Usage(),
        state=AgentState(),
        created_at=0.0,
        updated_at=0.0,
    )
    values.update(fields)
    return Run(**values)
