"""The run pane: header with reason, budget gauges, the approval request, timeline and state."""

from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from tui_agent.domain.models import Approval, Run, Step
from tui_agent.domain.reason import describe_call
from tui_agent.service.api import LiveOutput, RunDelta
from tui_agent.ui.format import STATUS_ICONS, one_line
from tui_agent.ui.sizes import NARROW, SHORT
from tui_agent.ui.widgets.gauges import BudgetGauges
from tui_agent.ui.widgets.timeline import Timeline


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def _artifact_line(artifact: dict[str, object]) -> str:
    """A written file by its path, a stored large result by its id and summary."""
    if artifact.get("type") == "file":
        return f" ▤ {_escape(str(artifact.get('path')))} ({artifact.get('bytes')} bytes)"
    return f" ▣ {artifact.get('artifact_id')} {_escape(str(artifact.get('summary', '')))}"


class RunPane(Vertical):
    # The run on screen, its reason, pending approval and call in doubt (re-cut on resize).
    _shown: tuple[Run, str | None, Approval | None, Step | None] | None = None
    _live: LiveOutput | None = None  # the live text on screen (re-cut on resize)
    _origin = ""  # "fork of RUN@STEP" for a fork, from its `created` event

    def compose(self) -> ComposeResult:
        yield Static("No run selected. Press [b]s[/b] to start one.", id="run-header")
        yield BudgetGauges(id="run-gauges")
        yield Static("", id="run-request")
        with Horizontal(id="run-body"):
            with Vertical(id="run-steps"):
                yield Timeline(id="run-timeline")
                yield Static("", id="run-live")
            with VerticalScroll(id="run-state-box"):
                yield Static("", id="run-state")

    @property
    def shown_run(self) -> Run | None:
        """The run on screen as last read (None when the pane is empty)."""
        return self._shown[0] if self._shown is not None else None

    def show_empty(self, text: str | None = None) -> None:
        self.add_class("-empty")
        self.query_one("#run-header", Static).update(
            text
            or "No runs yet. Press [b]s[/b] to start one (the offline demo model needs no key)."
        )
        self.query_one(Timeline).reset()
        self._shown = None
        self._request(None, None)
        self.show_live(None)

    def show_delta(self, delta: RunDelta, *, first: bool) -> None:
        self.remove_class("-empty")
        run = delta.run
        timeline = self.query_one(Timeline)
        if first:
            timeline.reset()
            timeline.add_all(delta.steps, delta.events)
            self._origin = next(
                (
                    f"fork of {str(e.data['forked_from'])[:8]}@{e.data.get('at')}"
                    for e in delta.events
                    if e.kind == "created" and "forked_from" in e.data
                ),
                "",
            )
            timeline.scroll_end(animate=False)
        else:
            timeline.add_delta(delta.steps, delta.events)
        self._shown = (run, delta.reason, delta.pending, delta.in_doubt)
        self._header(run, delta.reason)
        self.query_one(BudgetGauges).show(run.budget, run.usage)
        self._request(delta.pending, delta.in_doubt)
        self._state(run)
        for status in ("waiting_approval", "needs_attention", "paused", "failed", "completed"):
            self.set_class(run.status.value == status, f"-{status.replace('_', '-')}")

    def on_resize(self) -> None:
        """What is cut to fit is cut again for the new size (and ends in …)."""
        if self._shown is not None:
            run, reason, pending, in_doubt = self._shown
            self._header(run, reason)
            self._request(pending, in_doubt)
        self.show_live(self._live)

    def show_live(self, live: LiveOutput | None) -> None:
        """The step under way as it comes: "▌ writing…" and the reply's tail, or a running
        command's last lines. Hidden when the run is not running or the step is recorded."""
        box = self.query_one("#run-live", Static)
        run = self.shown_run
        if (
            live is None
            or run is None
            or run.status.value != "running"
            or self.query_one(Timeline).supersedes(live.kind, live.seq)
        ):
            self._live = None
            if box.display:
                box.update("")
                box.display = False
            return
        self._live = live
        width = max(10, (box.size.width or self.size.width or 40) - 2)
        lines = 1 if self.app.size.height < SHORT else 3
        if live.kind == "shell":
            head = "[b]▌ running…[/b] output so far"
            tail = [one_line(line, width) for line in live.text.splitlines()[-lines:]]
        else:
            head = "[b]▌ writing…[/b]"
            flat = " ".join(live.text.split())
            room = width * lines
            flat = flat if len(flat) <= room else "…" + flat[-(room - 1) :]
            tail = [flat[i : i + width] for i in range(0, len(flat), width)] or [""]
        box.update("\n".join([head, *(_escape(line) for line in tail)]))
        box.display = True

    def _header(self, run: Run, reason: str | None) -> None:
        icon = STATUS_ICONS[run.status]
        status = f"{icon} [b]{run.status.value}[/b]  ·  {run.id[:8]}  ·  model {_escape(run.model)}"
        origin = self._origin
        if origin:  # a fork says so: its goal may read like its original's
            status += f"  ·  {origin}"
        # by the pane's own width too: a help panel or a narrow window squeezes it
        compact = (
            self.app.size.height < SHORT or self.app.size.width < NARROW or 0 < self.size.width < 70
        )
        width = max(20, (self.size.width or self.app.size.width // 2) - 2)
        if not compact:
            # the goal keeps to one line, so the reason below it is never pushed out of view
            goal = one_line(run.goal, width)
            lines = [f"[b]{_escape(goal)}[/b]", f"{status}  ·  {_escape(run.workspace)}"]
            if reason:
                lines.append(f"[i]{_escape(reason)}[/i]")
            if run.result:
                lines.append(f"result: {_escape(run.result)}")
            self.query_one("#run-header", Static).update("\n".join(lines))
            return
        # Three lines at most, each cut to the width with …: the goal; status, id, model and
        # the workspace's tail; why it is not moving, else its result.
        plain = f"{icon} {run.status.value}  ·  {run.id[:8]}  ·  model {run.model}  ·  "
        plain += f"{origin}  ·  " if origin else ""
        room = width - len(plain)
        where = (
            run.workspace
            if len(run.workspace) <= room
            else "…" + run.workspace[-max(1, room - 1) :]
        )
        lines = [
            f"[b]{_escape(one_line(run.goal, width))}[/b]",
            f"{status}  ·  {_escape(where)}" if room > 8 else status,
        ]
        last = reason or (f"result: {run.result}" if run.result else "")
        if last:
            lines.append(f"[i]{_escape(one_line(last, width))}[/i]")
        self.query_one("#run-header", Static).update("\n".join(lines))

    def _request(self, pending: Approval | None, in_doubt: Step | None) -> None:
        box = self.query_one("#run-request", Static)
        if pending is not None:
            try:
                args = json.dumps(json.loads(pending.arguments), ensure_ascii=False)
            except ValueError:
                args = pending.arguments
            reason = pending.model_reason or "(the model gave no reason)"
            # A short terminal gets one line of each, so the newest steps stay in view.
            short = self.app.size.height < SHORT
            limit = max(20, (self.size.width or self.app.size.width // 2) - 8) if short else 400
            # the whole call is one key away (v): the card never runs past its box
            prefix = "model's reason: "
            args = one_line(args, limit)
            reason = one_line(reason, max(10, min(limit, 160) - (len(prefix) if short else 0)))
            box.update(
                f"[b]Approval needed[/b]: {pending.tool}  \\[{pending.risk}]\n"
                f"{_escape(args)}\n"
                f"{prefix}{_escape(reason)}\n"
                "[b]y[/b] approve   [b]n[/b] deny   [b]a[/b] always   [b]v[/b] view all"
            )
            box.display = True
        elif in_doubt is not None:
            box.update(
                f"[b]Call in doubt[/b]: {_escape(describe_call(in_doubt.tool, in_doubt.arguments))}"
                f" (step {in_doubt.seq})\nIt was interrupted; whether it took effect is unknown.\n"
                "[b]t[/b] retry it   [b]k[/b] skip it (the model is told)   "
                "[b]c[/b] cancel (fails the run)"
            )
            box.display = True
        else:
            box.update("")
            box.display = False

    def _state(self, run: Run) -> None:
        st = run.state
        out: list[str] = ["[b]Plan[/b]"]
        out += [f" {i}. {_escape(p)}" for i, p in enumerate(st.plan, 1)] or [" (none yet)"]
        out.append("[b]Facts[/b]")
        facts = [
            f" • {_escape(str(f.get('key') + ': ' if f.get('key') else ''))}"
            f"{_escape(str(f.get('value')))}"
            for f in st.known_facts
        ]
        out += facts or [" (none)"]
        out.append("[b]Open questions[/b]")
        out += [f" ? {_escape(q)}" for q in st.open_questions] or [" (none)"]
        out.append("[b]Artifacts[/b]")
        out += [_artifact_line(a) for a in st.artifacts] or [" (none)"]
        if st.risk_flags:
            out.append("[b]Risk flags[/b] " + ", ".join(st.risk_flags))
        self.query_one("#run-state", Static).update("\n".join(out))
