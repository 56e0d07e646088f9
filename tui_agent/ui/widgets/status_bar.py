"""The top line: the supervisor's state, the database and how many runs wait for a person."""

from __future__ import annotations

from textual.widgets import Static

from tui_agent.service.api import SupervisorState
from tui_agent.ui.format import size


class StatusBar(Static):
    _last: tuple[SupervisorState | None, str, int, int, str | None] | None = None

    def on_resize(self) -> None:
        if self._last is not None:
            self.show_state(*self._last)  # the path's room changed

    def show_state(
        self,
        state: SupervisorState | None,
        store: str,
        db_bytes: int,
        waiting: int,
        problem: str | None = None,
    ) -> None:
        """`problem`: the store cannot be read now (said instead of stale figures)."""
        self._last = (state, store, db_bytes, waiting, problem)
        if problem is not None:
            self.set_class(True, "-down")
            self.update(f" ✗ {problem} (retrying; what is shown may be out of date)")
            return
        if state is None:
            sup = "supervisor: checking…"
        elif state.running and state.serves not in (None, store):
            sup = f"supervisor: serves another store (pid {state.pid}: {state.serves})"
        elif state.running:
            held = sum(len(e.get("runs", [])) for e in state.executors)
            sup = f"supervisor: running (pid {state.pid}, {held} active)"
        elif state.problem:
            sup = "supervisor: cannot start (retrying)"
        else:
            sup = "supervisor: not running"
        ours = state is not None and state.running and state.serves in (None, store)
        self.set_class(state is not None and not ours, "-down")
        flag = f" │ ⚑ {waiting} waiting" if waiting else ""
        width = self.size.width or 120
        name = " tui-agent │" if width >= 100 else ""
        head = f"{name} {sup}{flag} │ db {size(db_bytes)}"
        # The path goes last and gives way first: its start is cut, never the figures.
        room = width - len(head) - 2
        if room >= 12:
            head += " " + (store if len(store) <= room else "…" + store[-(room - 1) :])
        self.update(head)
