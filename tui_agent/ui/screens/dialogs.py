"""Small modal questions: a deny reason, a message to a run, a confirmation, a budget
extension."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from tui_agent.domain.compaction import CONTEXT_TOO_SMALL
from tui_agent.domain.models import Budget, Usage


class DenyScreen(ModalScreen[str | None]):
    """Dismisses with the reason ('' for none), or None if the person backs out."""

    BINDINGS = [Binding("escape", "back", "Back", id="deny-back", tooltip="Do not deny")]

    def __init__(self, tool: str) -> None:
        super().__init__()
        self.tool = tool

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Deny [b]{self.tool}[/b]? The model is told, with your reason.")
            yield Input(placeholder="reason (optional), enter to deny", id="deny-reason")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_back(self) -> None:
        self.dismiss(None)


class SayScreen(ModalScreen[str | None]):
    """A follow-up or steering message: dismisses with the text, or None if the person
    backs out. An empty message is said here, and the dialog stays open."""

    BINDINGS = [Binding("escape", "back", "Back", id="say-back", tooltip="Send nothing")]

    def __init__(self, run_label: str, what_happens: str) -> None:
        super().__init__()
        self.run_label = run_label
        self.what_happens = what_happens

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="say-dialog"):
            yield Static(f"Message to run [b]{self.run_label}[/b]: {self.what_happens}")
            yield Input(placeholder="your message, enter to send", id="say-text")
            yield Static("", id="say-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def submit(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            self.query_one("#say-error", Static).update("⚠ type a message (escape: send nothing)")
            return
        self.dismiss(text)

    def action_back(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm-yes", tooltip="Yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no", tooltip="No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", variant="error", id="confirm-yes-button")
                yield Button("No (n)", id="confirm-no-button")

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes-button")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


@dataclass(frozen=True)
class BudgetChange:
    max_steps: int | None
    max_llm_tokens: int | None
    max_wall_time_s: float | None
    max_context_tokens: int | None = None


class ResumeScreen(ModalScreen[BudgetChange | None]):
    """Resume with the same budget, or a larger one (prefilled when one is spent)."""

    BINDINGS = [Binding("escape", "back", "Back", id="resume-back", tooltip="Do not resume")]

    def __init__(self, budget: Budget, usage: Usage, reason: str | None) -> None:
        super().__init__()
        self.budget = budget
        self.usage = usage
        self.reason = reason

    def compose(self) -> ComposeResult:
        b, u = self.budget, self.usage
        steps = b.max_steps * 2 if u.steps >= b.max_steps else b.max_steps
        toks = b.max_llm_tokens * 2 if u.llm_tokens >= b.max_llm_tokens else b.max_llm_tokens
        wall = b.max_wall_time_s * 2 if u.wall_time_s >= b.max_wall_time_s else b.max_wall_time_s
        with Vertical(classes="dialog", id="resume-dialog"):
            yield Static(f"Resume the run{': ' + self.reason if self.reason else ''}")
            yield Label(f"max steps (used {u.steps})")
            yield Input(str(steps), id="resume-steps", type="integer")
            yield Label(f"max tokens (used {u.llm_tokens})")
            yield Input(str(toks), id="resume-tokens", type="integer")
            yield Label(f"max wall time s (used {u.wall_time_s:.0f})")
            yield Input(f"{wall:g}", id="resume-wall", type="number")
            if b.max_context_tokens:  # a bounded run: its limit can be raised here too
                short = (self.reason or "").startswith(CONTEXT_TOO_SMALL)
                limit = b.max_context_tokens * 2 if short else b.max_context_tokens
                yield Label("max context tokens a request")
                yield Input(str(limit), id="resume-context", type="integer")
            yield Static("", id="resume-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Resume", variant="primary", id="resume-go", compact=True)
                yield Button("Back", id="resume-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#resume-steps", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#resume-go")
    def submit(self) -> None:
        """Every budget must be above what the run used: said here, the dialog stays open."""
        try:
            change = BudgetChange(
                max_steps=int(self.query_one("#resume-steps", Input).value),
                max_llm_tokens=int(self.query_one("#resume-tokens", Input).value),
                max_wall_time_s=float(self.query_one("#resume-wall", Input).value),
                max_context_tokens=(
                    int(self.query_one("#resume-context", Input).value)
                    if self.budget.max_context_tokens
                    else None
                ),
            )
        except ValueError:
            self.query_one("#resume-error", Static).update("⚠ budgets must be numbers")
            return
        u = self.usage
        for name, given, used in (
            ("max steps", change.max_steps, u.steps),
            ("max tokens", change.max_llm_tokens, u.llm_tokens),
            ("max wall time", change.max_wall_time_s, u.wall_time_s),
        ):
            if given is not None and given <= used:
                self.query_one("#resume-error", Static).update(
                    f"⚠ {name} must be more than the {used:g} already used"
                )
                return
        self.dismiss(change)

    @on(Button.Pressed, "#resume-cancel")
    def cancel(self) -> None:
        self.dismiss(None)

    def action_back(self) -> None:
        self.dismiss(None)


class CallScreen(ModalScreen[str | None]):
    """The whole call waiting for a decision (arguments, risk, the model's reason), for a
    screen too small to show it in the approval card. Its keys decide it here too."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="call-back", tooltip="Back to the run"),
        Binding("y", "decide('approve')", "Approve", id="call-approve"),
        Binding("n", "decide('deny')", "Deny", id="call-deny"),
        Binding("a", "decide('always')", "Always", id="call-always"),
    ]

    def __init__(self, title: str, body: str, *, decidable: bool) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.decidable = decidable

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="call-dialog"):
            yield Static(self.title_text, id="call-title")
            with VerticalScroll(id="call-body"):
                yield Static(self.body, markup=False)
            keys = (
                "y approve · n deny · a always · escape back" if self.decidable else "escape back"
            )
            yield Label(keys)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.decidable if action == "decide" else True

    def action_decide(self, choice: str) -> None:
        self.dismiss(choice)

    def action_back(self) -> None:
        self.dismiss(None)
