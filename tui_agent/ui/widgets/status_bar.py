"""The top line: the supervisor's state, the database and how many runs wait for a person."""

from __future__ import annotations

from textual.widgets import Static

from tui_agent.service.api import SupervisorState
from tui_agent.ui.format import size


class StatusBar(Static):
    def show_state(
        self, state: SupervisorState | None, db_path: str, db_bytes: int, waiting: int
    ) -> None:
        if state is None:
            sup = "supervisor: checking…"
        elif state.running:
            held = sum(len(e.get("runs", [])) for e in state.executors)
            sup = f"supervisor: running (pid {state.pid}, {held} active)"
        else:
            sup = "supervisor: not running"
        self.set_class(state is not None and not state.running, "-down")
        flag = f" │ ⚑ {waiting} waiting" if waiting else ""
        self.update(f" tui-agent │ {sup} │ db: {db_path} ({size(db_bytes)}){flag}")
