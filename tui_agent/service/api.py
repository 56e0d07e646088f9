"""Values and the protocol the UI depends on (no SQL, no Textual, no openai here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tui_agent.domain.models import Approval, Event, Run, Step
from tui_agent.live import LiveOutput

__all__ = ["LiveOutput"]  # re-exported: the UI knows live text only through the service


@dataclass(frozen=True)
class StartRequest:
    goal: str
    workspace: str | None = None
    model: str | None = None
    max_steps: int | None = None
    max_llm_tokens: int | None = None
    max_wall_time_s: float | None = None
    auto_approve: tuple[str, ...] = ()
    key: str | None = None
    max_context_tokens: int | None = None
    sandbox: str | None = None
    queue: str | None = None
    callback_url: str | None = None


@dataclass(frozen=True)
class RunView:
    """Everything shown about one run, read in one go from the store."""

    run: Run
    steps: list[Step]
    events: list[Event]
    pending: Approval | None
    approvals: list[Approval]
    in_doubt: Step | None
    reason: str | None


@dataclass(frozen=True)
class RunDelta:
    """What changed in a run since the UI last looked (steps after a seq, events after an id).

    `steps` also re-sends any step still open at `after_seq` or later, since a tool call
    journaled as started is updated in place when it finishes.
    """

    run: Run
    steps: list[Step]
    events: list[Event]
    pending: Approval | None
    in_doubt: Step | None
    reason: str | None


@dataclass(frozen=True)
class SupervisorState:
    running: bool
    pid: int | None
    executors: list[dict[str, Any]] = field(default_factory=list)
    other_machines: list[dict[str, Any]] = field(default_factory=list)  # a shared store
    serves: str | None = None  # the store it serves (another one than ours: not ours)
    problem: str | None = None  # not running: why the last start of one failed


@dataclass(frozen=True)
class Histogram:
    """Counts per bucket: `counts[i]` of values at most `bounds[i]` (and above the one
    before); one count more than bounds, for the values above the last."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class StatsSeries:
    """What the statistics screen plots, aggregated by the store (never a row per run)."""

    run_id: str | None
    run_points: tuple[tuple[float, int, int], ...]
    """The selected run: (seconds since it was created, budget steps so far, tokens so far)."""
    run_duration_s: Histogram
    """Final runs created in the window, by how long they took."""
    llm_latency_s: Histogram
    """LLM replies of the window's newest runs, by how long the model took."""
    day_starts: tuple[float, ...]
    """Each day's first second (local time), oldest first."""
    runs_per_day: dict[str, tuple[int, ...]]
    """Status → runs created on each of those days."""
    run_gone: bool = False
    """`run_id` is no longer in the store (pruned or deleted since it was selected)."""


class AgentService(Protocol):
    def now(self) -> float: ...

    def warm_up(self) -> None:
        """Load what writes need, so the first decision after start-up does not wait."""
        ...

    def start_run(self, request: StartRequest) -> tuple[Run, bool]: ...

    def start_run_view(self, request: StartRequest) -> tuple[RunView, bool]:
        """`start_run`, answered with the run's view (a new run's as it was committed)."""
        ...

    def resolve_ref(self, ref: str) -> str: ...

    def list_runs(
        self,
        *,
        statuses: list[str] | None = None,
        text: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[Run]: ...

    def reason(self, run: Run) -> str | None: ...

    def run_view(self, run_id: str) -> RunView: ...

    def get_run(self, run_id: str) -> Run: ...

    def steps_since(self, run_id: str, after_seq: int) -> list[Step]: ...

    def run_delta(self, run_id: str, after_seq: int, after_event: int) -> RunDelta: ...

    def database_size(self) -> int: ...

    def store_label(self) -> str:
        """Where the runs are kept (shown in the status bar; never a password)."""
        ...

    def changes(self) -> AsyncIterator[None]:
        """Wakes each time another process may have changed the store (no blind polling)."""
        ...

    def change_token(self) -> tuple[int, ...]:
        """A cheap fingerprint of the store, compared now and then as a safety net."""
        ...

    def live_output(self, run_id: str) -> LiveOutput | None:
        """The step under way as it comes (the model's reply so far, or a running command's
        output tail), never recorded; None when there is none here (a shared store's
        executors on other machines write none)."""
        ...

    def live_changes(self) -> AsyncIterator[None]:
        """Wakes (coalesced) each time some run's live text may have changed."""
        ...

    def events_since(self, run_id: str, after_id: int) -> list[Event]: ...

    def run_marks(self, run_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """A fingerprint per run (revision, status, newest event): one query for many
        followers, so only the runs that changed are read again."""
        ...

    def stats(self, since_days: float | None = None) -> dict[str, Any]:
        """The store's figures, as `stats --json` prints them (of the last days, if given)."""
        ...

    def stats_series(self, run_id: str | None = None, *, days: int = 14) -> StatsSeries:
        """The distributions the statistics screen plots, over the last `days` days, with
        `run_id`'s steps and tokens over time if given."""
        ...

    def metric_figures(self) -> dict[str, Any]:
        """The figures `/metrics` exposes, computed from the store at each ask."""
        ...

    def api_token(self) -> str:
        """The HTTP API's bearer token (made 0600 in the home on first use)."""
        ...

    def approve(self, run_id: str, *, always: bool = False) -> Approval: ...

    def deny(self, run_id: str, *, reason: str | None = None) -> Approval: ...

    def cancel(self, run_id: str) -> Run: ...

    def resume(
        self,
        run_id: str,
        *,
        max_steps: int | None = None,
        max_llm_tokens: int | None = None,
        max_wall_time_s: float | None = None,
        max_context_tokens: int | None = None,
    ) -> Run: ...

    def resolve(self, run_id: str, choice: str) -> Run: ...

    def say(self, run_id: str, text: str) -> tuple[Run, int]:
        """A person's message as a step: a completed run continues with it, one under way
        sees it at its next model call. Returns the run and the step's seq."""
        ...

    def fork(self, run_id: str, at: int, request: StartRequest) -> tuple[Run, list[dict[str, Any]]]:
        """A new queued run from steps 1..`at` of `run_id`, and `will_ask_again`: the risky
        calls recorded after `at` (`seq`, `tool`, `arguments`, `risk`) it must have approved
        again. Empty or None fields of `request` keep the original's."""
        ...

    def fork_preview(
        self, run_id: str, at: int, request: StartRequest | None = None
    ) -> list[dict[str, Any]]:
        """The `will_ask_again` that `fork` would return, writing nothing (and refusing a
        step `fork` would refuse, in the same words)."""
        ...

    def supervisor_state(self) -> SupervisorState: ...

    def ensure_supervisor(self) -> int: ...

    def config_stamp(self) -> tuple[int, int] | None:
        """Changes when config.toml is edited (None without one)."""
        ...

    def count_waiting(self) -> int: ...

    def demo_workspace(self) -> Path:
        """The demo model's own scratch folder (created on first use)."""
        ...

    def needs_execution(self) -> bool:
        """Some run wants an executor now: with no supervisor alive, one must be started."""
        ...
