"""The statistics screen (`g`): people would rather look than read. Four plots of what the
store aggregates (`AgentService.stats_series`): the selected run's steps and tokens over
time, final runs' durations, LLM latency, and runs per day by status. The figures are read
in a thread worker (a large store takes a moment) and drawn again at each resize, so the
day labels fit the width."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.markup import escape
from textual import work
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Grid, Vertical
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from tui_agent.domain.errors import TuiAgentError
from tui_agent.service.api import AgentService, Histogram, StatsSeries
from tui_agent.ui.format import tokens

DAYS = 14
PLOTS = ("run", "durations", "latency", "per-day")
# How runs per day are stacked, each in its theme colour: the final statuses, then every
# other one (queued, running, waiting, paused) as "live".
FINAL_COLORS = {"completed": "success", "failed": "error", "cancelled": "run-idle"}
KEY_NAMES = {"completed": "done"}  # as the history pane says it
LIVE_COLOR = "primary"
BAR_WIDTH = 0.5  # of a bar's slot: plotext's own 0.8 leaves no gap once a slot is 4 columns
SLOT_COLUMNS = 3  # the narrowest a day's bar may be: fewer days are shown, never merged bars


def span_label(seconds: float) -> str:
    """A bucket's bound, as short as a bar's label must be: 500ms, 5s, 15m, 4h, 1d."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def bucket_labels(histogram: Histogram) -> list[str]:
    """`≤5s`-style labels per bucket, the last `>1d` (values above every bound)."""
    labels = [f"≤{span_label(b)}" for b in histogram.bounds]
    return [*labels, f">{span_label(histogram.bounds[-1])}"]


def filled(counts: tuple[int, ...]) -> slice:
    """The buckets from the first with a count to the last: empty ones at either end only
    narrow the bars that matter."""
    used = [i for i, n in enumerate(counts) if n]
    return slice(used[0], used[-1] + 1) if used else slice(0, len(counts))


def count_ticks(top: int, most: int) -> list[int]:
    """Whole-number ticks from 0 to at least `top` (a count has no halves), 1, 2 or 5 times
    a power of ten apart, at most `most` intervals."""
    steps = (m * 10**e for e in range(16) for m in (1, 2, 5))
    step = next(step for step in steps if -(-top // step) <= max(1, most))
    return list(range(0, max(1, -(-top // step)) * step + 1, step))


def spaced(labels: list[str], room: int) -> list[int]:
    """Which bars keep their label in `room` columns: every k-th, so that no two touch.
    (Left to itself plotext drops touching labels in an order that changes from one run
    to the next.)"""
    slot = max(1.0, room / max(1, len(labels)))
    widest = max((len(label) for label in labels), default=0) + 1
    return list(range(0, len(labels), max(1, int(-(-widest // slot)))))


def day_labels(day_starts: tuple[float, ...], room: int) -> list[str]:
    """Month-day under each bar when there is room for it, else the day of the month."""
    form = "%m-%d" if room >= len(day_starts) * 6 else "%d"
    return [time.strftime(form, time.localtime(start)) for start in day_starts]


class FittedPlot(PlotextPlot):
    """A plot drawn anew at each render, for the size it has then: its axes' ticks and the
    bar labels that fit depend on it (and a caption taking a second line changes it)."""

    @dataclass
    class Resized(Message):
        """The plot has a new size: the captions and the days that fit follow it."""

        plot: FittedPlot

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.draw: Callable[[FittedPlot], None] | None = None

    def on_resize(self) -> None:
        self.post_message(self.Resized(self))

    def render(self) -> RenderResult:
        self.plt.clear_figure()
        if self.draw is not None:
            self.draw(self)
        return super().render()


class StatsScreen(Screen[None]):
    """Opened over the main screen; `escape` goes back to it."""

    BINDINGS = [
        Binding("escape", "close", "Back", id="stats-close", tooltip="Back to the runs"),
        Binding("r", "reload", "Reload", id="stats-reload", tooltip="Read the figures again"),
    ]

    @dataclass
    class Loaded(Message):
        """The figures were read (or could not be, with `error`)."""

        series: StatsSeries | None
        error: str | None

    def __init__(self, service: AgentService, run_id: str | None) -> None:
        super().__init__()
        self._service = service
        self._run_id = run_id
        self._series: StatsSeries | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"[b]Statistics[/b] · the last {DAYS} days · reading…", id="stats-title")
        # Each plot under a caption that is its title and legend, in the plot's colours
        # (plotext's own legend covers the bars it explains).
        with Grid(id="stats-grid"):
            for name in PLOTS:
                with Vertical(classes="stats-cell"):
                    yield Static("", id=f"stats-{name}-caption", classes="stats-caption")
                    yield FittedPlot(id=f"stats-{name}")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        self.query_one("#stats-grid").loading = True
        self._load()

    def action_close(self) -> None:
        self.dismiss(None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="stats")
    def _load(self) -> None:
        try:
            self.post_message(
                self.Loaded(self._service.stats_series(self._run_id, days=DAYS), None)
            )
        except TuiAgentError as exc:
            self.post_message(self.Loaded(None, str(exc)))
        except Exception as exc:  # a bug must still say something, never vanish
            self.post_message(self.Loaded(None, f"internal error: {exc}"))

    def on_stats_screen_loaded(self, message: Loaded) -> None:
        self.query_one("#stats-grid").loading = False
        title = self.query_one("#stats-title", Static)
        if message.series is None:
            title.update(f"[b]Statistics[/b] · ⚠ {escape(message.error or '')}")
            return
        self._series = message.series
        runs = sum(sum(counts) for counts in message.series.runs_per_day.values())
        title.update(
            f"[b]Statistics[/b] · the last {DAYS} days · {_count(runs, 'run')} · "
            "[b]r[/b] reload · [b]escape[/b] back"
        )
        self._show()

    def on_fitted_plot_resized(self, message: FittedPlot.Resized) -> None:
        # after the layout (a terminal resized, a caption taking a second line): the
        # captions and the days shown fit the plots' new size
        if message.plot.id == "stats-per-day":
            self._show()

    def _color(self, variable: str) -> tuple[int, int, int]:
        """A theme variable as plotext takes colours."""
        value = self.app.theme_variables.get(variable) or self.app.get_css_variables()[variable]
        return Color.parse(value).rgb

    def _show(self) -> None:
        """Each plot's caption, and how to draw it (at its next render, for its size then)."""
        series = self._series
        if series is None:
            return
        durations, latency = series.run_duration_s, series.llm_latency_s
        if self.query_one("#stats-per-day").size.width == 0:
            return  # not laid out yet (or covered while loading): its resize shows them
        if series.run_id is None:
            self._caption("run", "[b]No run selected[/b]: select one to see its steps and tokens")
        elif series.run_gone:
            self._caption("run", f"[b]Run {series.run_id[:8]}[/b] is gone (pruned or deleted)")
        elif len(series.run_points) < 2:
            self._caption("run", f"[b]Run {series.run_id[:8]}[/b]: no step yet")
        else:
            legend = "[$primary]━ steps[/] [$warning]━ tokens[/] (right)"
            self._caption("run", f"[b]Run {series.run_id[:8]}[/b]", legend)
        self._caption(
            "durations",
            "[b]Run durations[/b]",
            f"[$secondary]█[/] {_count(sum(durations.counts), 'final run')}",
        )
        replies = _count(sum(latency.counts), "reply", "replies")
        self._caption("latency", "[b]LLM latency[/b]", f"[$accent]█[/] {replies}")
        days = self._days_shown(series)
        keys = [f"[${color}]█[/] {KEY_NAMES.get(name, name)}" for name, _, color, _ in days[1]]
        self._caption(
            "per-day",
            "[b]Runs per day[/b]"
            + (
                f" (the last {len(days[0])} of {DAYS} days)" if days[0] != series.day_starts else ""
            ),
            "  ".join(keys),
        )
        drawings: dict[str, Callable[[FittedPlot], None]] = {
            "run": lambda plot: self._draw_run(plot, series),
            "durations": lambda plot: self._draw_histogram(plot, durations, "secondary"),
            "latency": lambda plot: self._draw_histogram(plot, latency, "accent"),
            "per-day": lambda plot: self._draw_days(plot, series),
        }
        for name, draw in drawings.items():
            plot = self.query_one(f"#stats-{name}", FittedPlot)
            plot.draw = draw
            plot.refresh()

    def _caption(self, name: str, title: str, legend: str = "") -> None:
        """A plot's title and legend (markup): on one line if they fit, else the legend on
        a second."""
        caption = self.query_one(f"#stats-{name}-caption", Static)
        line = f"{title}  {legend}" if legend else title
        fits = Content.from_markup(line).cell_length <= caption.content_size.width
        caption.update(line if fits or not legend else f"{title}\n{legend}")

    def _days_shown(
        self, series: StatsSeries
    ) -> tuple[tuple[float, ...], list[tuple[str, list[str], str, list[int]]]]:
        """The newest days that fit the plot's width, and what is stacked on each: (name,
        its statuses, its colour, its count per day) for the groups with a run."""
        width = self.query_one("#stats-per-day").size.width
        days = max(1, min(len(series.day_starts), (width - 8) // SLOT_COLUMNS))
        first = len(series.day_starts) - days
        live = [s for s in series.runs_per_day if s not in FINAL_COLORS]
        groups = [(name, [name], color) for name, color in FINAL_COLORS.items()]
        stacks = []
        for name, statuses, color in [*groups, ("live", live, LIVE_COLOR)]:
            counts = [
                sum(series.runs_per_day[s][i] for s in statuses if s in series.runs_per_day)
                for i in range(first, len(series.day_starts))
            ]
            if any(counts):
                stacks.append((name, statuses, color, counts))
        return series.day_starts[first:], stacks

    def _counts_axis(
        self,
        plot: FittedPlot,
        top: int,
        side: str = "left",
        shown: Callable[[int], str] = str,
        *,
        below: int = 3,
    ) -> None:
        """A y axis of whole numbers from 0, a row or more between two of them. `below`:
        the rows that are not the canvas (its frame, the x axis's labels and title)."""
        ticks = count_ticks(top, (plot.size.height - below - 1) // 2)
        plot.plt.ylim(0, ticks[-1], yside=side)
        plot.plt.yticks(ticks, [shown(t) for t in ticks], yside=side)

    def _bar_labels(self, plot: FittedPlot, labels: list[str]) -> None:
        """Bar labels that fit the plot's width (plotext puts bar i at x = i + 1)."""
        shown = spaced(labels, plot.size.width - 8)
        plot.plt.xticks([i + 1 for i in shown], [labels[i] for i in shown])

    def _draw_run(self, plot: FittedPlot, series: StatsSeries) -> None:
        points = series.run_points
        if len(points) < 2:
            return
        scale, unit = (60.0, "minutes") if points[-1][0] > 180 else (1.0, "seconds")
        x = [p[0] / scale for p in points]
        steps, spent = [p[1] for p in points], [p[2] for p in points]
        plot.plt.plot(x, steps, color=self._color("primary"))
        plot.plt.plot(x, spent, yside="right", color=self._color("warning"))
        self._counts_axis(plot, steps[-1], below=4)
        self._counts_axis(plot, spent[-1], "right", tokens, below=4)
        ticks = count_ticks(math.ceil(x[-1]), plot.size.width // 10)
        plot.plt.xlim(0, ticks[-1])
        plot.plt.xticks(ticks, [str(t) for t in ticks])
        plot.plt.xlabel(f"{unit} since it was created")

    def _draw_histogram(self, plot: FittedPlot, histogram: Histogram, color: str) -> None:
        shown = filled(histogram.counts)
        labels, counts = bucket_labels(histogram)[shown], list(histogram.counts[shown])
        plot.plt.bar(labels, counts, color=self._color(color), width=BAR_WIDTH)
        self._counts_axis(plot, max(counts))
        self._bar_labels(plot, labels)

    def _draw_days(self, plot: FittedPlot, series: StatsSeries) -> None:
        days, stacks = self._days_shown(series)
        labels = day_labels(days, plot.size.width - 8)
        if stacks:
            colors = [self._color(color) for _, _, color, _ in stacks]
            counts = [counts for _, _, _, counts in stacks]
            plot.plt.stacked_bar(labels, counts, color=colors, width=BAR_WIDTH)
        else:
            plot.plt.bar(labels, [0] * len(days), width=BAR_WIDTH)
        totals = [sum(day) for day in zip(*(c for _, _, _, c in stacks), strict=True)]
        self._counts_axis(plot, max(totals, default=0))
        self._bar_labels(plot, labels)


def _count(n: int, one: str, many: str | None = None) -> str:
    """`1 final run`, `2 final runs`."""
    return f"{n} {one if n == 1 else (many or one + 's')}"
