"""The start form: goal first; `enter` in the goal starts with the defaults, `escape` closes."""

from __future__ import annotations

from collections.abc import Callable

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from tui_agent.service.api import StartRequest

Submit = Callable[[StartRequest], str | None]


class StartRunScreen(ModalScreen[str | None]):
    """Dismisses with the new run's id, or None when closed. Errors stay in the form."""

    BINDINGS = [Binding("escape", "close", "Close", id="start-close", tooltip="Close the form")]

    def __init__(self, submit: Submit, *, workspace: str, model: str) -> None:
        super().__init__()
        self._submit = submit
        self._workspace = workspace
        self._model = model

    def compose(self) -> ComposeResult:
        # One row per field: the whole form, its buttons included, fits an 80x24 terminal.
        with Vertical(id="start-dialog"):
            yield Static("[b]Start a run[/b]", id="start-title")
            if self._model == "demo":
                yield Static(
                    "The offline [b]demo[/b] model needs no key. It works in its own scratch "
                    f"folder, {escape(self._workspace)}, so your files stay untouched.",
                    id="start-demo-note",
                )
            with Horizontal(classes="start-row"):
                yield Label("Goal", classes="start-label")
                yield Input(placeholder="what should the agent do?", id="start-goal")
            with Horizontal(classes="start-row"):
                yield Label("Workspace", classes="start-label")
                yield Input(self._workspace, id="start-workspace")
            with Horizontal(classes="start-row"):
                yield Label("Model", classes="start-label")
                yield Input(self._model, id="start-model")
            with Horizontal(classes="start-row", id="start-budgets"):
                yield Label("Budgets", classes="start-label")
                yield Input(placeholder="max steps", id="start-max-steps", type="integer")
                yield Input(placeholder="max tokens", id="start-max-tokens", type="integer")
                yield Input(placeholder="max wall s", id="start-max-wall", type="number")
            with Horizontal(classes="start-row", id="start-auto"):
                yield Label("Auto-approve", classes="start-label")
                yield Checkbox("write_local", id="start-auto-write")
                yield Checkbox("external_action", id="start-auto-external")
            yield Static("", id="start-error")
            with Horizontal(id="start-buttons"):
                yield Button("Start", variant="primary", id="start-go", compact=True)
                yield Button("Cancel", id="start-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#start-goal", Input).focus()

    def _value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value.strip()

    def _number(self, widget_id: str, kind: type[int] | type[float]) -> int | float | None:
        text = self._value(widget_id)
        return kind(text) if text else None

    def request(self) -> StartRequest:
        auto = tuple(
            risk
            for risk, wid in (
                ("write_local", "start-auto-write"),
                ("external_action", "start-auto-external"),
            )
            if self.query_one(f"#{wid}", Checkbox).value
        )
        return StartRequest(
            goal=self._value("start-goal"),
            workspace=self._value("start-workspace") or None,
            model=self._value("start-model") or None,
            max_steps=self._number("start-max-steps", int),  # type: ignore[arg-type]
            max_llm_tokens=self._number("start-max-tokens", int),  # type: ignore[arg-type]
            max_wall_time_s=self._number("start-max-wall", float),
            auto_approve=auto,
        )

    @on(Input.Submitted)
    @on(Button.Pressed, "#start-go")
    def start(self) -> None:
        try:
            request = self.request()
        except ValueError:
            self._error("budgets must be numbers")
            return
        for label, value in (
            ("max steps", request.max_steps),
            ("max tokens", request.max_llm_tokens),
            ("max wall s", request.max_wall_time_s),
        ):
            if value is not None and value <= 0:  # said in the form's words, not the CLI's
                self._error(f"{label} must be greater than 0")
                return
        self.query_one("#start-go", Button).disabled = True
        self._error("")
        self._submit_in_background(request)

    @work(thread=True, exit_on_error=False, group="start")
    def _submit_in_background(self, request: StartRequest) -> None:
        """Creating the run writes to the database: never on the event loop."""
        try:
            result = self._submit(request)
        except Exception as exc:  # never leave the Start button disabled for good
            result = f"error: {exc}"
        self.app.call_from_thread(self._submitted, result)

    def _submitted(self, result: str | None) -> None:
        self.query_one("#start-go", Button).disabled = False
        if result is not None and result.startswith("error:"):
            self._error(result.removeprefix("error:").strip())
            return
        self.dismiss(result)

    def _error(self, text: str) -> None:
        self.query_one("#start-error", Static).update(f"⚠ {text}" if text else "")

    @on(Button.Pressed, "#start-cancel")
    def action_close(self) -> None:
        self.dismiss(None)
