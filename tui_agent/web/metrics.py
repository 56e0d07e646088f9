"""`/metrics` in Prometheus' text format, computed from the store at each scrape (so it
is true across restarts, and two servers on one shared store say the same)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector


class StoreCollector(Collector):
    def __init__(self, figures: Callable[[], dict[str, Any]]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self.figures()
        runs = GaugeMetricFamily(
            "tui_agent_runs_total", "Runs in the store, by status.", labels=["status"]
        )
        for status, count in sorted(f["runs"].items()):
            runs.add_metric([status], count)
        yield runs
        buckets = [(_le(bound), count) for bound, count in f["duration_buckets"]]
        buckets.append(("+Inf", f["duration_count"]))
        yield HistogramMetricFamily(
            "tui_agent_run_duration_seconds",
            "Time from start to the final status, of finished runs.",
            buckets=buckets,
            sum_value=f["duration_sum"],
        )
        steps = CounterMetricFamily("tui_agent_steps", "Recorded steps, by kind.", labels=["kind"])
        for kind, count in sorted(f["steps"].items()):
            steps.add_metric([kind], count)
        yield steps
        yield CounterMetricFamily(
            "tui_agent_llm_tokens", "Tokens the model servers reported.", value=f["llm_tokens"]
        )
        yield CounterMetricFamily(
            "tui_agent_llm_retries", "Model requests retried.", value=f["retries"]
        )
        yield GaugeMetricFamily(
            "tui_agent_approvals_pending",
            "Tool calls waiting for a person's decision.",
            value=f["approvals_pending"],
        )
        callbacks = GaugeMetricFamily(
            "tui_agent_callbacks", "Callback deliveries, by status.", labels=["status"]
        )
        for status in ("pending", "delivered", "failed"):
            callbacks.add_metric([status], f["callbacks"].get(status, 0))
        yield callbacks


def _le(bound: float) -> str:
    return f"{bound:g}" if bound != int(bound) else f"{bound:.1f}"


def metrics_text(figures: Callable[[], dict[str, Any]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(figures))
    return generate_latest(registry)
