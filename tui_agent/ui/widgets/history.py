"""The history pane: every run, newest first, paged from an indexed query (never all rows)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import ColumnKey

from tui_agent.domain.errors import TuiAgentError
from tui_agent.domain.models import STATUS_GROUPS, Run, RunStatus
from tui_agent.service.api import AgentService
from tui_agent.ui.format import age, one_line, status_cell, tokens

PAGE = 100
LIVE_ROWS = 300  # rows re-read on every change; older ones change rarely
WAITING = set(STATUS_GROUPS["waiting"])
GOAL_KEY = ColumnKey("goal")
# Column sets by the pane's width; the goal takes what the others leave. Narrow panes (an
# 80-column terminal) keep the status icon (⚑ for a run waiting for a person), goal and age.
WIDE = (("status", 11), ("goal", 0), ("age", 4), ("tok", 5))
NARROW_SET = (("status", 1), ("goal", 0), ("age", 4))
NARROW_BELOW = 44


def parse_filter(text: str) -> tuple[list[str] | None, str | None, list[str]]:
    """`status:paused words` or a bare status name ('waiting' = needs a person).

    Returns the statuses, the words (each must match the goal, in any order) and what was
    written as a status but is not one (`status:bogus`), to be said to the user."""
    statuses: list[str] = []
    words: list[str] = []
    unknown: list[str] = []
    names = {s.value for s in RunStatus}
    for token in text.split():
        prefixed = token.lower().startswith(("status:", "is:"))
        key = token.removeprefix("status:").removeprefix("is:").lower()
        if key in names:
            statuses.append(key)
        elif key in STATUS_GROUPS:
            statuses += STATUS_GROUPS[key]
        elif key == "done":
            statuses += STATUS_GROUPS["final"]
        elif prefixed:
            unknown.append(key)
        else:
            words.append(token)
    return (statuses or None), (" ".join(words) or None), unknown


class HistoryPane(Vertical):
    @dataclass
    class Selected(Message):
        """The highlighted run changed (None: no run matches the filter)."""

        run_id: str | None

    @dataclass
    class Trouble(Message):
        """The store could not be read (the app says so; the rows shown stay)."""

        error: TuiAgentError

    def __init__(self, service: AgentService, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.service = service
        self.filter_text = ""
        self._runs: dict[str, Run] = {}
        self._shown: dict[str, tuple[str, ...]] = {}  # the cell texts on screen, per run
        self._order: list[str] = []
        self._exhausted = False

    def compose(self) -> ComposeResult:
        yield Input(placeholder="words status:S", id="history-filter")
        yield Static("", id="history-filter-note")
        table: DataTable[str] = DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
        self._columns = WIDE
        self._goal_width = 40
        self._add_columns(table, WIDE, 40)
        yield table

    @staticmethod
    def _add_columns(
        table: DataTable[str], columns: tuple[tuple[str, int], ...], goal_width: int
    ) -> None:
        for key, width in columns:
            label = "" if key == "status" and width == 1 else key
            table.add_column(label, key=key, width=width or goal_width)

    def on_resize(self) -> None:
        """One layout per width, whether the app started at it or was resized to it: the
        column set follows the pane's width and the goal takes what the others leave."""
        columns = NARROW_SET if self.size.width < NARROW_BELOW else WIDE
        fixed = sum(w for _, w in columns) + 2 * len(columns) + 2  # padding, scrollbar
        goal = max(8, self.size.width - fixed)
        table = self.table
        if columns == self._columns and table.columns and table.columns[GOAL_KEY].width == goal:
            return
        keep = self.selected_id  # rebuilding the columns must not lose the selection
        self._columns = columns
        self._goal_width = goal
        table.clear(columns=True)
        self._add_columns(table, columns, goal)
        self._shown = {}
        self._safely(self.reload, select=keep)

    def _safely(self, read: Callable[..., None], **kwargs: object) -> bool:
        """Run a read for an event; a store that cannot be read is reported, not raised."""
        try:
            read(**kwargs)
        except TuiAgentError as exc:
            self.post_message(self.Trouble(exc))
            return False
        return True

    @property
    def table(self) -> DataTable[str]:
        return self.query_one("#history-table", DataTable)

    @property
    def selected_id(self) -> str | None:
        table = self.table
        if table.row_count == 0 or table.cursor_row < 0:
            return None
        return self._order[table.cursor_row] if table.cursor_row < len(self._order) else None

    def _cells(self, run: Run) -> tuple[str, ...]:
        now = self.service.now()
        waiting = run.status.value in WAITING
        values = {
            "status": status_cell(run.status, flag=waiting, short=self._columns is NARROW_SET),
            "goal": one_line(run.goal, self._goal_width),  # cut with … to the column
            "age": age(now, run.created_at),
            "tok": tokens(run.usage.llm_tokens),
        }
        return tuple(values[key] for key, _ in self._columns)

    def _query(self, before: tuple[float, str] | None, limit: int) -> list[Run]:
        statuses, text, _ = parse_filter(self.filter_text)
        return self.service.list_runs(statuses=statuses, text=text, limit=limit, before=before)

    def reload(self, select: str | None = None) -> None:
        """Rebuild from the first page (on start, on a new filter, when new runs appear).

        The selected run stays selected, however deep in the history: pages are loaded
        until it is on screen (a run the filter hides leaves the cursor on the top row)."""
        keep = select or self.selected_id
        runs = self._query(None, max(PAGE, min(len(self._order), LIVE_ROWS)))
        table = self.table
        table.clear()
        self._runs = {r.id: r for r in runs}
        self._order = [r.id for r in runs]
        self._shown = {}
        self._exhausted = len(runs) < PAGE
        for run in runs:
            self._shown[run.id] = cells = self._cells(run)
            table.add_row(*cells, key=run.id)
        while keep and keep not in self._runs and not self._exhausted:
            self.load_more()
        if keep and keep in self._runs:
            table.move_cursor(row=self._order.index(keep), scroll=True)
        self.set_class(not runs, "-empty")

    def reload_safely(self) -> bool:
        """`reload`, a store that cannot be read reported (as Trouble), not raised."""
        return self._safely(self.reload)

    def refresh_live(self) -> None:
        """Re-read the top rows; touch only cells whose text changed, rebuild for new runs."""
        limit = max(PAGE, min(len(self._order), LIVE_ROWS))
        runs = self._query(None, limit)
        ids = [r.id for r in runs]
        if ids != self._order[: len(ids)] or (len(ids) < limit and len(self._order) > len(ids)):
            self.reload()  # new runs, or runs deleted (pruned) from under the rows shown
            return
        table = self.table
        for run in runs:
            self._runs[run.id] = run
            cells = self._cells(run)
            shown = self._shown.get(run.id)
            if cells == shown:
                continue
            keys = [key for key, _ in self._columns]
            for index, (key, value) in enumerate(zip(keys, cells, strict=True)):
                if shown is None or shown[index] != value:
                    table.update_cell(run.id, key, value)
            self._shown[run.id] = cells

    def load_more(self) -> None:
        if self._exhausted or not self._order:
            return
        last = self._runs[self._order[-1]]
        runs = self._query((last.created_at, last.id), PAGE)
        self._exhausted = len(runs) < PAGE
        for run in runs:
            if run.id in self._runs:
                continue
            self._runs[run.id] = run
            self._order.append(run.id)
            self._shown[run.id] = cells = self._cells(run)
            self.table.add_row(*cells, key=run.id)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value != self.selected_id:
            return  # stale: the cursor moved on (a rebuild highlights the top row first)
        if event.cursor_row >= len(self._order) - 20:
            self._safely(self.load_more)
        if event.row_key.value is not None:
            self.post_message(self.Selected(event.row_key.value))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.filter_text = event.value
        _, _, unknown = parse_filter(event.value)
        names = ", ".join(s.value for s in RunStatus)
        note = self.query_one("#history-filter-note", Static)
        note.update(
            f"{', '.join(unknown)}: not a status (one of {names}, waiting, final)"
            if unknown
            else ""
        )
        self.set_class(bool(unknown), "-filter-note")
        if not self._safely(self.reload):
            return
        if not self._order:
            self.post_message(self.Selected(None))  # nothing matches: the detail pane clears

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.table.focus()

    def open_filter(self) -> None:
        self.add_class("-filtering")
        self.query_one("#history-filter", Input).focus()

    def close_filter(self) -> None:
        inp = self.query_one("#history-filter", Input)
        if inp.value:
            inp.value = ""
        self.remove_class("-filtering")
        self.table.focus()

    @property
    def filtering(self) -> bool:
        return self.has_class("-filtering")
