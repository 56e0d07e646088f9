"""Budget gauges: steps, tokens and active wall time, used of max, warning near the limit."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, ProgressBar

from tui_agent.domain.models import Budget, Usage

WARN_AT = 0.8


class Gauge(Horizontal):
    def __init__(self, name: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gauge_name = name

    def compose(self) -> ComposeResult:
        yield Label(self.gauge_name, classes="gauge-name")
        yield ProgressBar(total=1, show_eta=False, show_percentage=False)
        yield Label("", classes="gauge-value")

    def set_value(self, used: float, limit: float, text: str) -> None:
        ratio = used / limit if limit else 0.0
        self.query_one(ProgressBar).update(total=max(limit, 1e-9), progress=min(used, limit))
        self.query_one(".gauge-value", Label).update(text)
        self.set_class(WARN_AT <= ratio < 1.0, "-warn")
        self.set_class(ratio >= 1.0, "-spent")


class BudgetGauges(Vertical):
    def compose(self) -> ComposeResult:
        yield Gauge("steps", id="gauge-steps")
        yield Gauge("tokens", id="gauge-tokens")
        yield Gauge("wall", id="gauge-wall")

    def show(self, budget: Budget, usage: Usage) -> None:
        self.query_one("#gauge-steps", Gauge).set_value(
            usage.steps, budget.max_steps, f"{usage.steps}/{budget.max_steps}"
        )
        self.query_one("#gauge-tokens", Gauge).set_value(
            usage.llm_tokens, budget.max_llm_tokens, f"{usage.llm_tokens}/{budget.max_llm_tokens}"
        )
        self.query_one("#gauge-wall", Gauge).set_value(
            usage.wall_time_s,
            budget.max_wall_time_s,
            f"{usage.wall_time_s:.0f}/{budget.max_wall_time_s:g}s",
        )
