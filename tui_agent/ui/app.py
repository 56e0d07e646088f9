"""The Textual app: a client of the service layer. It never executes a step, and quitting
it never stops a run. Changes made by the supervisor arrive through the service's change
feed (no blind polling); its cheap change token, compared each second, is the safety net."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.command import CommandPalette
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.theme import Theme
from textual.widgets import Footer

from tui_agent import failpoints
from tui_agent.domain.compaction import CONTEXT_TOO_SMALL
from tui_agent.domain.errors import TuiAgentError, UnknownRun
from tui_agent.domain.models import STATUS_GROUPS, RunStatus
from tui_agent.domain.reason import message_fate
from tui_agent.files import write_atomically
from tui_agent.service.api import AgentService, SupervisorState
from tui_agent.ui.format import pretty_arguments
from tui_agent.ui.gc_policy import settle_after_first_frame
from tui_agent.ui.paths import stylesheets
from tui_agent.ui.screens.dialogs import (
    BudgetChange,
    CallScreen,
    ConfirmScreen,
    DenyScreen,
    ResumeScreen,
    SayScreen,
)
from tui_agent.ui.screens.fork_form import ForkScreen
from tui_agent.ui.screens.start_form import StartRunScreen
from tui_agent.ui.sizes import CROWDED_FOOTER, NARROW, SHORT, STACKED
from tui_agent.ui.widgets.history import HistoryPane
from tui_agent.ui.widgets.run_pane import RunPane
from tui_agent.ui.widgets.status_bar import StatusBar
from tui_agent.ui.widgets.timeline import Timeline

LIVE_EVERY_S = 0.1  # the live text is re-read at most this often

THEME = Theme(
    name="tui-agent",
    primary="#5fafd7",
    secondary="#87afaf",
    accent="#ffaf5f",
    warning="#ffd75f",
    error="#ff5f5f",
    success="#87d787",
    dark=True,
    variables={"run-waiting": "#ffaf5f", "run-idle": "#808080"},
)

# How often the header checks the supervisor (and restarts one that runs need): < 2 s.
SUPERVISOR_CHECK_S = 0.8


class MainArea(Horizontal):
    """History and run side by side. It is resized with the terminal every time (the app's
    own resize handler is not called for later resizes), so it sets the layout classes."""

    def on_resize(self) -> None:
        app = self.app
        if isinstance(app, AgentApp):
            app.apply_size_classes()


class AgentApp(App[None]):
    CSS_PATH = stylesheets()
    TITLE = "tui-agent"

    BINDINGS = [
        Binding("s", "start", "Start", id="start", tooltip="Start a new run"),
        Binding("y", "approve", "Approve", id="approve", tooltip="Approve the pending call"),
        Binding("n", "deny", "Deny", id="deny", tooltip="Deny the pending call (with a reason)"),
        Binding(
            "a",
            "always",
            "Always",
            id="always",
            tooltip="Approve and always allow this tool for the rest of the run",
        ),
        Binding(
            "t",
            "retry_call",
            "Retry call",
            id="retry-call",
            tooltip="Run the interrupted call again",
        ),
        Binding(
            "k",
            "skip_call",
            "Skip call",
            id="skip-call",
            tooltip="Skip the interrupted call; the model is told its outcome is unknown",
        ),
        Binding(
            "v",
            "view_call",
            "View",
            id="view-call",
            tooltip="Show the whole call waiting for a decision (arguments, model's reason)",
        ),
        Binding(
            "m",
            "say",
            "Message",
            id="say",
            tooltip="Send the selected run a message: a completed run continues with it, "
            "a running one sees it at its next model call",
        ),
        # The same key off the footer, where a waiting call's decision keys fill it.
        Binding("m", "say_unlisted", "Message", id="say-unlisted", show=False),
        Binding("c", "cancel_run", "Cancel", id="cancel", tooltip="Cancel the selected run"),
        Binding(
            "r",
            "resume",
            "Resume",
            id="resume",
            tooltip="Resume a paused or failed run (larger budget if one is spent)",
        ),
        Binding(
            "f",
            "fork",
            "Fork",
            id="fork",
            tooltip="Fork the selected run from the step under the cursor (a form shows "
            "the calls it would be asked again)",
        ),
        Binding(
            "g",
            "stats",
            "Stats",
            id="stats",
            tooltip="Plots: steps and tokens over time, run durations, LLM latency, runs per day",
        ),
        Binding("slash", "filter", "Filter", id="filter", tooltip="Filter the history"),
        Binding(
            "escape",
            "clear_filter",
            "Clear filter",
            id="clear-filter",
            tooltip="Clear the filter and show every run",
        ),
        Binding("q", "quit", "Quit", id="quit", tooltip="Quit the app; runs go on"),
    ]

    # Every key of the main screen: none of them acts while a dialog is open.
    _main_actions = frozenset(b.action for b in BINDINGS if isinstance(b, Binding))

    selected: reactive[str | None] = reactive(None, bindings=True)
    """The run shown in the run pane."""
    run_status: reactive[str | None] = reactive(None, bindings=True)
    run_resumable: bool = False  # set with run_status (a quarantined run is resumable too)
    """The selected run's status: decides which keys apply."""

    def __init__(
        self,
        service: AgentService,
        *,
        ui_state_path: Path | None = None,
        default_workspace: str | None = None,
        default_model: str = "demo",
        start_supervisor: bool = True,
        live: bool = True,
    ) -> None:
        super().__init__()
        self.register_theme(THEME)
        # Set without the watcher: assigning `theme` re-parses every stylesheet once the app
        # runs (~15 % of a cold start); nothing is parsed yet, so the variables suffice.
        self.set_reactive(AgentApp.theme, THEME.name)
        self.stylesheet.set_variables(self.get_css_variables())
        self.update_classes(
            {f"-theme-{THEME.name}": True, "-dark-mode": THEME.dark, "-light-mode": not THEME.dark},
            update=False,
        )
        self.service = service
        self.ui_state_path = ui_state_path
        self.default_workspace = default_workspace or os.getcwd()
        self.default_model = default_model
        self.start_supervisor = start_supervisor
        self.live = live
        self.supervisor: SupervisorState | None = None
        self._fingerprint: tuple[int, ...] = ()
        self._pending_tool: str | None = None
        self._supervisor_backoff_s = 0.0
        self._supervisor_retry_at = 0.0
        self._supervisor_said: str | None = None  # the last start failure, said once
        self._config_stamp: tuple[int, int] | None = None  # config.toml at that failure
        self._store_problem: str | None = None  # set while the store cannot be read
        self._status_bar: StatusBar | None = None
        self._live_read_at = 0.0  # when the live text was last read
        self._live_due = False  # a read is scheduled

    def compose(self) -> ComposeResult:
        self._status_bar = StatusBar(id="status-bar")
        yield self._status_bar
        with MainArea(id="main"):
            yield HistoryPane(self.service, id="history")
            yield RunPane(id="run-pane")
        yield Footer(compact=True)  # every key that applies fits 80 columns

    # ---- start-up ------------------------------------------------------------------------

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return {"run-waiting": "#ffaf5f", "run-idle": "#808080"}

    def on_mount(self) -> None:
        history = self.query_one(HistoryPane)
        history.reload(select=self._restore_selection())
        history.table.focus()
        if history.selected_id:
            self.selected = history.selected_id
        else:
            self.query_one(RunPane).show_empty()
        self._poll_supervisor()
        if self.live:
            self._fingerprint = self.service.change_token()
        # The first frame comes first; then what only later keys and commits need.
        self.call_after_refresh(self._after_first_frame)

    def _after_first_frame(self) -> None:
        if self._torn_down():
            return
        failpoints.hit("ui.first_frame")  # tests: a crash in the app must exit non-zero
        if self.start_supervisor:
            self._ensure_supervisor()
        self._warm_up()
        if self.live:
            self._watch_database()
            self._watch_live()
            self.set_interval(1.0, self._safety_tick)
            self.set_interval(SUPERVISOR_CHECK_S, self._poll_supervisor)

    def apply_size_classes(self) -> None:
        """Layout classes by size, the same whether the app started at a size or was resized
        to it: -narrow (history pane and header shrink), -stacked (the agent state goes under
        the timeline), -short (the approval request and header are compact)."""
        self.set_class(self.size.width < NARROW, "-narrow")
        self.set_class(self.size.width < STACKED, "-stacked")
        self.set_class(self.size.height < SHORT, "-short")
        # Below NARROW the keys of a waiting run fill the footer: the palette's hint gives
        # way to them (ctrl+p still opens it, and it lists every key).
        for footer in self.query(Footer):
            footer.show_command_palette = self.size.width >= NARROW
        self.refresh_bindings()  # (which keys the footer lists depends on the width too)

    @work(thread=True, exit_on_error=False, group="warm-up")
    def _warm_up(self) -> None:
        try:
            with contextlib.suppress(TuiAgentError):  # the first write says what is wrong
                self.service.warm_up()
        finally:
            # After the warm-up's imports (so they are frozen too), whatever it raised: the
            # collector must never stay off for the life of the app.
            settle_after_first_frame()

    @work(thread=True, exit_on_error=False, group="supervisor")
    def _ensure_supervisor(self) -> None:
        try:
            self.service.ensure_supervisor()
            self._supervisor_backoff_s = 0.0
            self._supervisor_said = None
        except TuiAgentError as exc:
            # A supervisor that cannot start is not retried every 0.8 s, but at once when
            # config.toml is edited (the usual fix); its reason is said once, not per try.
            self._supervisor_backoff_s = min(60.0, max(2.0, self._supervisor_backoff_s * 2))
            self._supervisor_retry_at = time.monotonic() + self._supervisor_backoff_s
            self._config_stamp = self.service.config_stamp()
            if str(exc) != self._supervisor_said:
                self._supervisor_said = str(exc)
                self.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
        self.call_from_thread(self._poll_supervisor)

    def _torn_down(self) -> bool:
        """Timers and worker callbacks can still fire while the app tears its screen down."""
        return self._status_bar is None or not self._status_bar.is_attached

    def _poll_supervisor(self) -> None:
        """The header tells the truth; and a supervisor that died or idled out while runs
        need execution is started again (within 2 s of that)."""
        if self._torn_down():
            return
        try:
            self.supervisor = self.service.supervisor_state()
            self._update_status_bar()
        except TuiAgentError as exc:
            self._store_trouble(exc)
            return
        if (
            self.start_supervisor
            and self.live
            and not self.supervisor.running
            and self.service.needs_execution()
            and not any(w.is_running for w in self.workers if w.group == "supervisor")
            and (
                time.monotonic() >= self._supervisor_retry_at
                or self.service.config_stamp() != self._config_stamp
            )
        ):
            self._ensure_supervisor()

    def _update_status_bar(self) -> None:
        assert self._status_bar is not None  # composed before any timer or worker runs
        self._status_bar.show_state(
            self.supervisor,
            self.service.store_label(),
            self.service.database_size(),
            self.service.count_waiting(),
        )
        if self._store_problem is not None:
            self._store_problem = None
            self.notify("the store can be read again", severity="information")

    def _store_trouble(self, exc: TuiAgentError) -> None:
        """The store cannot be read now (a PostgreSQL server down, a locked file): said once
        and shown in the status bar until a read works again; nothing here stops."""
        problem = str(exc)
        if self._store_problem is None:
            self.notify(problem, severity="error")
        self._store_problem = problem
        if self._status_bar is not None:
            self._status_bar.show_state(
                self.supervisor, self.service.store_label(), 0, 0, problem=problem
            )

    # ---- live updates ----------------------------------------------------------------

    @work(exclusive=True, group="db-watch", exit_on_error=False)
    async def _watch_database(self) -> None:
        """Re-read on every wake of the service's change feed (coalesced commits)."""
        async for _ in self.service.changes():
            self.refresh_live()

    @work(exclusive=True, group="live-watch", exit_on_error=False)
    async def _watch_live(self) -> None:
        """The selected run's step under way, re-read as it comes (at most 10 times a
        second: a wake inside that shows what came at the next one)."""
        async for _ in self.service.live_changes():
            wait = self._live_read_at + LIVE_EVERY_S - time.monotonic()
            if wait > 0:
                if not self._live_due:
                    self._live_due = True
                    self.set_timer(wait, self._show_live)
                continue
            self._show_live()

    def _show_live(self) -> None:
        self._live_due = False
        if self._torn_down():
            return
        self._live_read_at = time.monotonic()
        live = None
        if self.selected and self.run_status == RunStatus.RUNNING.value:
            live = self.service.live_output(self.selected)
        self.query_one(RunPane).show_live(live)

    def _safety_tick(self) -> None:
        """Where file events do not arrive (network filesystems), a stat still notices."""
        if self._torn_down():
            return
        fingerprint = self.service.change_token()
        if fingerprint != self._fingerprint or self._store_problem is not None:
            self.refresh_live()  # (while the store is down: until a read works again)
            return
        try:
            self.query_one(HistoryPane).refresh_live()  # ages and time-based reasons move
        except TuiAgentError as exc:
            self._store_trouble(exc)

    def refresh_live(self) -> None:
        """Re-read only what changed: the top of the history and the selected run's tail."""
        if self._torn_down():
            return
        self._fingerprint = self.service.change_token()
        try:
            self.query_one(HistoryPane).refresh_live()
            if self.selected:
                self._show_run(first=False)
        except UnknownRun:
            self._selected_gone()
            return
        except TuiAgentError as exc:
            self._store_trouble(exc)
            return
        try:
            # the header is re-read with the reasons, so the two never disagree on screen
            self.supervisor = self.service.supervisor_state()
            self._update_status_bar()
        except TuiAgentError as exc:
            self._store_trouble(exc)

    def _show_run(self, *, first: bool) -> None:
        if not self.selected:
            return
        pane = self.query_one(RunPane)
        timeline = pane.query_one("#run-timeline")
        if first:
            delta = self.service.run_delta(self.selected, 0, 0)
        else:
            delta = self.service.run_delta(self.selected, timeline.open_seq(), timeline.last_event)  # type: ignore[attr-defined]
        pane.show_delta(delta, first=first)
        self.run_resumable = delta.run.resumable
        self.run_status = delta.run.status.value
        self._pending_tool = delta.pending.tool if delta.pending else None
        if self.live:
            self._show_live()  # a step recorded ends its live text; another run has its own

    # ---- selection and remembered state --------------------------------------------------

    def on_history_pane_selected(self, message: HistoryPane.Selected) -> None:
        if message.run_id is None:  # the filter matches no run: show nothing stale
            self.selected = None
            self.run_resumable = False
            self.run_status = None
            self._pending_tool = None
            self.query_one(RunPane).show_empty(
                "No run matches the filter. [b]escape[/b] clears it."
            )
        elif message.run_id != self.selected:
            self.selected = message.run_id

    def on_history_pane_trouble(self, message: HistoryPane.Trouble) -> None:
        self._store_trouble(message.error)

    def watch_selected(self, run_id: str | None) -> None:
        if run_id is None:
            return
        try:
            self._show_run(first=True)
        except UnknownRun:
            self._selected_gone()
            return
        except TuiAgentError as exc:
            self._store_trouble(exc)
        self._save_selection(run_id)

    def _selected_gone(self) -> None:
        """The selected run was deleted (pruned) by another process: not a store outage.
        Said once; the history is rebuilt without it and its cursor picks a run that is."""
        gone, self.selected = self.selected, None
        self.run_resumable = False
        self.run_status = None
        self._pending_tool = None
        if gone:
            self.notify(f"run {gone[:8]} no longer exists (pruned)", severity="information")
        pane = self.query_one(HistoryPane)
        if pane.reload_safely() and pane.selected_id is None:
            self.query_one(RunPane).show_empty("No runs.")

    def _restore_selection(self) -> str | None:
        if self.ui_state_path is None:
            return None
        try:
            return str(json.loads(self.ui_state_path.read_text())["selected_run"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save_selection(self, run_id: str) -> None:
        if self.ui_state_path is None:
            return
        with contextlib.suppress(OSError):  # remembering the selection is a nicety
            write_atomically(self.ui_state_path, json.dumps({"selected_run": run_id}).encode())

    # ---- which keys apply --------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        stack = self.screen_stack
        over_main = len(stack) == 1 or (len(stack) == 2 and isinstance(stack[-1], CommandPalette))
        if not over_main and action in self._main_actions:
            return False  # a dialog is open (the palette over it too): its keys, not the main's
        status = self.run_status
        if action in ("approve", "deny", "always"):
            return status == "waiting_approval"
        if action == "view_call":
            return status in STATUS_GROUPS["waiting"]
        if action in ("retry_call", "skip_call"):
            return status == "needs_attention"
        if action in ("say", "say_unlisted"):
            if status is None or status in ("failed", "cancelled"):
                return False
            crowded = status == "waiting_approval" and self.size.width < CROWDED_FOOTER
            return crowded == (action == "say_unlisted")  # one of the two, never both
        if action == "cancel_run":
            return status is not None and status not in STATUS_GROUPS["final"]
        if action == "resume":
            return status is not None and self.run_resumable
        if action == "fork":
            return status is not None  # any selected run: the form says where it can fork
        if action == "clear_filter":
            panes = self.query(HistoryPane)
            return bool(panes) and panes.first().filtering
        return True

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.action in ("quit", "clear_filter"):
                continue
            if self.check_action(binding.action, ()):
                yield SystemCommand(
                    binding.description,
                    binding.tooltip,
                    lambda a=binding.action: self.run_action(a),
                )

    # ---- actions -------------------------------------------------------------------------

    @dataclass
    class ActionFinished(Message):
        """A service call made for a key press has returned (it ran in a worker thread)."""

        done: str | None
        error: str | None

    @work(thread=True, exit_on_error=False, group="actions")
    def _act(self, done: str, call: Callable[..., object], *args: object, **kwargs: object) -> None:
        """Writes wait for the database lock (up to busy_timeout_s) off the event loop, so
        the screen keeps answering keys; a refused action is a notification, never a crash."""
        try:
            call(*args, **kwargs)
        except TuiAgentError as exc:
            self.post_message(self.ActionFinished(None, str(exc)))
            return
        except Exception as exc:  # a bug must still say something, never vanish
            self.post_message(self.ActionFinished(None, f"internal error: {exc}"))
            return
        self.post_message(self.ActionFinished(done, None))

    def on_agent_app_action_finished(self, message: ActionFinished) -> None:
        if message.error is not None:
            self.notify(message.error, severity="error", timeout=6)
        elif message.done:
            self.notify(message.done, timeout=3)  # short: a toast covers the state panel
        self.refresh_live()

    def action_start(self) -> None:
        def submit(request):  # type: ignore[no-untyped-def]  (called in the form's worker)
            try:
                run, _ = self.service.start_run(request)
            except TuiAgentError as exc:
                return f"error: {exc}"
            return run.id

        def started(run_id: str | None) -> None:
            if run_id:
                self.query_one(HistoryPane).reload(select=run_id)
                self.selected = run_id
                self.notify(f"started run {run_id[:8]}")

        self.push_screen(
            StartRunScreen(submit, workspace=self.default_workspace, model=self.default_model),
            started,
        )

    def action_approve(self) -> None:
        if self.selected:
            self._act("approved", self.service.approve, self.selected)

    def action_always(self) -> None:
        if self.selected:
            self._act(
                "approved; this tool is always allowed for the rest of the run",
                self.service.approve,
                self.selected,
                always=True,
            )

    def action_deny(self) -> None:
        run_id = self.selected
        if not run_id:
            return

        def decided(reason: str | None) -> None:
            if reason is not None:
                self._act("denied", self.service.deny, run_id, reason=reason)

        self.push_screen(DenyScreen(self._pending_tool or "the call"), decided)

    def action_say(self) -> None:
        run_id, status = self.selected, self.run_status
        if not run_id or status is None:
            return
        what = message_fate(RunStatus(status))

        def said(text: str | None) -> None:
            if text:
                self._act(f"message sent: {what}", self.service.say, run_id, text)

        self.push_screen(SayScreen(run_id[:8], what), said)

    action_say_unlisted = action_say

    def action_cancel_run(self) -> None:
        run_id = self.selected
        if not run_id:
            return
        question = f"Cancel run {run_id[:8]}?"
        if self.run_status == "needs_attention" and not self.run_resumable:
            question += " The call in doubt is not run again and the run fails."
        elif self.run_status == "needs_attention":
            question += " It is quarantined: it fails and is not tried again."

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._act(f"cancel requested for {run_id[:8]}", self.service.cancel, run_id)

        self.push_screen(ConfirmScreen(question), confirmed)

    def action_resume(self) -> None:
        run_id = self.selected
        if not run_id:
            return
        run = self.service.get_run(run_id)
        reason = self.service.reason(run)
        spent = ("budget spent", CONTEXT_TOO_SMALL)
        if run.status.value == "paused" and reason and reason.startswith(spent):

            def chosen(change: BudgetChange | None) -> None:
                if change is not None:
                    self._act(
                        "resumed with a larger budget",
                        self.service.resume,
                        run_id,
                        max_steps=change.max_steps,
                        max_llm_tokens=change.max_llm_tokens,
                        max_wall_time_s=change.max_wall_time_s,
                        max_context_tokens=change.max_context_tokens,
                    )

            self.push_screen(ResumeScreen(run.budget, run.usage, reason), chosen)
        else:
            self._act("resumed", self.service.resume, run_id)

    def action_retry_call(self) -> None:
        if self.selected:
            self._act("retrying the interrupted call", self.service.resolve, self.selected, "retry")

    def action_skip_call(self) -> None:
        if self.selected:
            self._act(
                "skipped; the model is told the outcome is unknown",
                self.service.resolve,
                self.selected,
                "skip",
            )

    def action_view_call(self) -> None:
        run_id = self.selected
        if not run_id:
            return
        view = self.service.run_view(run_id)
        if view.pending is not None:
            p = view.pending
            title = f"[b]Approval needed[/b]: {p.tool}  \\[{p.risk}]"
            body = (
                f"arguments:\n{pretty_arguments(p.arguments)}\n\n"
                f"model's reason:\n{p.model_reason or '(none given)'}"
            )
            decidable = True
        elif view.in_doubt is not None:
            d = view.in_doubt
            title = f"[b]Call in doubt[/b]: {d.tool} (step {d.seq})"
            body = f"arguments:\n{pretty_arguments(d.arguments or '')}"
            decidable = False
        else:
            return

        def decided(choice: str | None) -> None:
            actions = {
                "approve": self.action_approve,
                "deny": self.action_deny,
                "always": self.action_always,
            }
            if choice in actions:
                actions[choice]()

        self.push_screen(CallScreen(title, body, decidable=decidable), decided)

    def action_fork(self) -> None:
        run_id = self.selected
        run = self.query_one(RunPane).shown_run
        if not run_id or run is None or run.id != run_id:
            return
        at = self.query_one(Timeline).step_under_cursor()
        if at is None:
            self.notify(f"run {run_id[:8]} has no recorded step yet to fork from", timeout=4)
            return

        def forked(new_id: str | None) -> None:
            if new_id:
                self.query_one(HistoryPane).reload(select=new_id)
                self.selected = new_id
                self.notify(f"forked run {run_id[:8]} as {new_id[:8]}")

        self.push_screen(ForkScreen(self.service, run_id, at, run.goal), forked)

    def action_stats(self) -> None:
        # textual-plotext is imported on first use: the first frame must not wait for it
        from tui_agent.ui.screens.stats import StatsScreen

        self.push_screen(StatsScreen(self.service, self.selected))

    def action_filter(self) -> None:
        self.query_one(HistoryPane).open_filter()
        self.refresh_bindings()  # the footer now offers escape

    def action_clear_filter(self) -> None:
        self.query_one(HistoryPane).close_filter()
        self.refresh_bindings()
