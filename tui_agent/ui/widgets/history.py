"""The history pane: every run, newest first, paged from an indexed query (never all rows)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input
from textual.widgets.data_table import ColumnKey

from tui_agent.domain.models import Run, RunStatus
from tui_agent.service.api import AgentService
from tui_agent.ui.format import age, one_line, status_cell, tokens

PAGE = 100
LIVE_ROWS = 300  # rows re-read on every change; older ones change rarely
WAITING = {"waiting_approval", "needs_attention"}
GOAL_KEY = ColumnKey("goal")
COLUMNS = ("flag", "status", "goal", "age", "tok")


def parse_filter(text: str) -> tuple[list[str] | None, str | None]:
    """`status:paused words` or a bare status name ('waiting' = needs a person)."""
    statuses: list[str] = []
    words: list[str] = []
    names = {s.value for s in RunStatus}
    for token in text.split():
        key = token.removeprefix("status:").removeprefix("is:").lower()
        if key in names:
            statuses.append(key)
        elif key == "waiting":
            statuses += sorted(WAITING)
        elif key in ("final", "done"):
            statuses += ["completed", "failed", "cancelled"]
        else:
            words.append(token)
    return (statuses or None), (" ".join(words) or None)


class HistoryPane(Vertical):
    @dataclass
    class Selected(Message):
        """The highlighted run changed."""

        run_id: str

    def __init__(self, service: AgentService, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.service = service
        self.filter_text = ""
        self._runs: dict[str, Run] = {}
        self._shown: dict[str, tuple[str, ...]] = {}  # the cell texts on screen, per run
        self._order: list[str] = []
        self._exhausted = False

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: words, status:paused, waiting", id="history-filter")
        table: DataTable[str] = DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
        self._add_columns(table, 40)
        yield table

    @staticmethod
    def _add_columns(table: DataTable[str], goal_width: int) -> None:
        table.add_column("", key="flag", width=1)
        table.add_column("status", key="status", width=11)
        table.add_column("goal", key="goal", width=goal_width)
        table.add_column("age", key="age", width=4)
        table.add_column("tok", key="tok", width=5)

    def on_resize(self) -> None:
        """The goal takes whatever width the fixed columns leave."""
        fixed = 1 + 11 + 4 + 5 + 2 * 5 + 2  # cells, their padding, the scrollbar
        goal = max(8, self.size.width - fixed)
        table = self.table
        if table.columns and table.columns[GOAL_KEY].width == goal:
            return
        keep = self.selected_id  # rebuilding the columns must not lose the selection
        table.clear(columns=True)
        self._add_columns(table, goal)
        self.reload(select=keep)

    @property
    def table(self) -> DataTable[str]:
        return self.query_one("#history-table", DataTable)

    @property
    def selected_id(self) -> str | None:
        table = self.table
        if table.row_count == 0 or table.cursor_row < 0:
            return None
        return self._order[table.cursor_row] if table.cursor_row < len(self._order) else None

    def _cells(self, run: Run) -> tuple[str, str, str, str, str]:
        now = self.service.now()
        flag = "⚑" if run.status.value in WAITING else ""
        return (
            flag,
            status_cell(run.status),
            one_line(run.goal, 200),
            age(now, run.created_at),
            tokens(run.usage.llm_tokens),
        )

    def _query(self, before: tuple[float, str] | None, limit: int) -> list[Run]:
        statuses, text = parse_filter(self.filter_text)
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

    def refresh_live(self) -> None:
        """Re-read the top rows; touch only cells whose text changed, rebuild for new runs."""
        runs = self._query(None, max(PAGE, min(len(self._order), LIVE_ROWS)))
        if any(r.id not in self._runs for r in runs):
            self.reload()
            return
        table = self.table
        for run in runs:
            self._runs[run.id] = run
            cells = self._cells(run)
            shown = self._shown.get(run.id)
            if cells == shown:
                continue
            for index, (key, value) in enumerate(zip(COLUMNS, cells, strict=True)):
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
            self.load_more()
        if event.row_key.value is not None:
            self.post_message(self.Selected(event.row_key.value))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.filter_text = event.value
        self.reload()

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
