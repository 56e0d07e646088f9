"""The fork form: a new run from step N of the selected one. Approvals are never copied, so
before anything is written it lists the risky calls recorded after step N that the new run
would have to have approved again (`will_ask_again`); changing N lists them anew."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from tui_agent.domain.errors import TuiAgentError
from tui_agent.domain.reason import describe_call
from tui_agent.service.api import AgentService, StartRequest
from tui_agent.ui.format import one_line


def asked_again_lines(calls: list[dict[str, Any]]) -> str:
    """One line per call in `will_ask_again`: its step, risk and call (markup; a narrow
    form cuts the arguments, never the risk)."""
    if not calls:
        return "[i]none: no risky call was recorded after this step[/i]"
    return "\n".join(
        f"step {c['seq']:<4} \\[{c['risk']}]  "
        + escape(describe_call(c["tool"], json.dumps(c["arguments"]), 200))
        for c in calls
    )


class ForkScreen(ModalScreen[str | None]):
    """Dismisses with the new run's id, or None when closed. Errors stay in the form."""

    BINDINGS = [Binding("escape", "close", "Close", id="fork-close", tooltip="Close the form")]

    @dataclass
    class PreviewLoaded(Message):
        """`will_ask_again` for step `at` was read (or refused, with `error`)."""

        at: int
        calls: list[dict[str, Any]]
        error: str | None

    @dataclass
    class Forked(Message):
        """The fork was written (`run_id`) or refused (`error`)."""

        run_id: str | None
        error: str | None

    def __init__(self, service: AgentService, run_id: str, at: int, goal: str) -> None:
        super().__init__()
        self._service = service
        self._run_id = run_id
        self._at = at
        self._goal = goal
        self._previewed: int | None = None  # the step whose list is on screen

    def compose(self) -> ComposeResult:
        with Vertical(id="fork-dialog"):
            yield Static(
                f"[b]Fork run {self._run_id[:8]}[/b]: a new run starts from its steps 1 to N",
                id="fork-title",
            )
            with Horizontal(classes="fork-row"):
                yield Label("From step", classes="fork-label")
                yield Input(str(self._at), id="fork-step", type="integer")
            with Horizontal(classes="fork-row"):
                yield Label("New goal", classes="fork-label")
                yield Input(placeholder=one_line(self._goal, 200), id="fork-goal")
            yield Static(
                "Asked again (approvals are not copied): tool, arguments, risk", id="fork-heading"
            )
            with VerticalScroll(id="fork-again"):
                yield Static("reading the steps…", id="fork-again-list")
            yield Static("", id="fork-error")
            with Horizontal(id="fork-buttons"):
                yield Button("Fork", variant="primary", id="fork-go", compact=True, disabled=True)
                yield Button("Cancel", id="fork-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#fork-step", Input).focus()  # what the form is about; goal: tab
        self._preview(self._at)

    def _step(self) -> int | None:
        text = self.query_one("#fork-step", Input).value.strip()
        return int(text) if text.isdigit() else None

    @on(Input.Changed, "#fork-step")
    def step_changed(self) -> None:
        self._previewed = None
        self.query_one("#fork-go", Button).disabled = True
        at = self._step()
        if at is None or at < 1:
            self._show_error("the step must be a whole number, 1 or more")
            return
        self._show_error("")
        self._preview(at)

    @work(thread=True, exclusive=True, exit_on_error=False, group="fork-preview")
    def _preview(self, at: int) -> None:
        """A read of every step after N: off the event loop, the newest ask wins."""
        try:
            calls, error = self._service.fork_preview(self._run_id, at), None
        except TuiAgentError as exc:
            calls, error = [], str(exc)
        except Exception as exc:  # a bug must still say something, never vanish
            calls, error = [], f"internal error: {exc}"
        self.post_message(self.PreviewLoaded(at, calls, error))

    def on_fork_screen_preview_loaded(self, message: PreviewLoaded) -> None:
        if message.at != self._step():
            return  # the step was changed since: its own preview is on the way
        if message.error is not None:
            self.query_one("#fork-again-list", Static).update("")
            self._show_error(message.error)
            return
        self.query_one("#fork-again-list", Static).update(asked_again_lines(message.calls))
        self._show_error("")
        self._previewed = message.at
        self.query_one("#fork-go", Button).disabled = False

    @on(Input.Submitted)
    @on(Button.Pressed, "#fork-go")
    def fork(self) -> None:
        """Only once the calls asked again for this very step are on screen."""
        at = self._step()
        if at is None or at != self._previewed:
            return
        self.query_one("#fork-go", Button).disabled = True
        self._fork_in_background(at, self.query_one("#fork-goal", Input).value.strip())

    @work(thread=True, exit_on_error=False, group="fork")
    def _fork_in_background(self, at: int, goal: str) -> None:
        """Creating the run writes to the database: never on the event loop."""
        try:
            run, _ = self._service.fork(self._run_id, at, StartRequest(goal=goal))
        except TuiAgentError as exc:
            self.post_message(self.Forked(None, str(exc)))
        except Exception as exc:  # never leave the Fork button disabled for good
            self.post_message(self.Forked(None, f"internal error: {exc}"))
        else:
            self.post_message(self.Forked(run.id, None))

    def on_fork_screen_forked(self, message: Forked) -> None:
        if message.run_id is None:
            self.query_one("#fork-go", Button).disabled = False
            self._show_error(message.error or "")
            return
        self.dismiss(message.run_id)

    def _show_error(self, text: str) -> None:
        self.query_one("#fork-error", Static).update(f"⚠ {escape(text)}" if text else "")

    @on(Button.Pressed, "#fork-cancel")
    def action_close(self) -> None:
        self.dismiss(None)
