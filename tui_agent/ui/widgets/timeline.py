"""The live step timeline: one expandable node per step, events in between, appended in place."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tui_agent.domain.models import Event, Step, StepKind, StepStatus
from tui_agent.ui.format import event_label, step_details, step_label

MAX_SHOWN = 500  # a run with 10,000 steps shows its latest ones; `show` has them all


class Timeline(Tree[str]):
    BINDINGS = [
        Binding(
            "o",
            "open_step",
            "Open step",
            tooltip="The step under the cursor in full, wrapped (a row shows one line)",
        ),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__("steps", **kwargs)  # type: ignore[arg-type]
        self.show_root = False
        self.guide_depth = 2
        self._step_nodes: dict[int, TreeNode[str]] = {}
        self._steps: dict[int, Step] = {}
        self.last_seq = 0
        self.last_event = 0

    def render_label(self, node: TreeNode[str], base_style: Style, style: Style) -> Text:
        """A row cut to the width ends in … (the tree would crop it mid-word)."""
        label = super().render_label(node, base_style, style)
        depth, parent = 1, node.parent
        while parent is not None and parent is not self.root:
            depth, parent = depth + 1, parent.parent
        room = self.scrollable_content_region.width - self.guide_depth * depth
        if room > 4 and label.cell_len > room:
            label.truncate(room, overflow="ellipsis")
        return label

    def on_resize(self) -> None:
        """After a resize the newest steps stay in view (a shrink left the top shown)."""
        self.call_after_refresh(self.scroll_end, animate=False)

    def on_focus(self) -> None:
        """Focus shows the cursor where `f` would fork (the newest step): the first arrow
        then moves from there, not merely reveal it."""
        node = self._step_nodes.get(self.last_seq)
        if self.cursor_line < 0 and node is not None:
            self.move_cursor(node, animate=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Not while a dialog covers the run (the footer beneath it must not offer it)."""
        if action == "open_step":
            return self.screen is self.app.screen and self.last_seq > 0
        return True

    def action_open_step(self) -> None:
        """Replies, arguments, results and summaries are longer than a row: read them here."""
        from tui_agent.ui.screens.dialogs import CallScreen

        seq = self.step_under_cursor()
        step = self._steps.get(seq) if seq is not None else None
        if step is None:
            return
        title = f"[b]Step {step.seq}[/b]: {step.kind.value}" + (
            f" {step.tool} \\[{step.status.value}]" if step.tool else ""
        )
        body = "\n".join(step_details(step, result_lines=None))
        self.app.push_screen(CallScreen(title, body, decidable=False))

    def reset(self) -> None:
        self.clear()
        self.cursor_line = -1  # another run: "the step under the cursor" is its newest again
        self._step_nodes.clear()
        self._steps.clear()
        self.last_seq = 0
        self.last_event = 0

    def open_seq(self) -> int:
        """Steps after this seq must be re-read (a started call may have finished)."""
        open_steps = [
            seq for seq, node in self._step_nodes.items() if node.data == StepStatus.STARTED.value
        ]
        return min(open_steps) - 1 if open_steps else self.last_seq

    def supersedes(self, kind: str, seq: int) -> bool:
        """The live text of this kind and seq is recorded already: a reply after step `seq`
        is shown, or the command of step `seq` has its result."""
        if kind == "shell":
            step = self._steps.get(seq)
            return step is not None and step.status is not StepStatus.STARTED
        return any(s > seq and st.kind is StepKind.LLM for s, st in self._steps.items())

    def step_under_cursor(self) -> int | None:
        """The seq of the step the cursor is on (or on a detail line of); on an event, the
        step shown before it; with no cursor yet, the newest step. None: no step shown."""
        node = self.cursor_node
        seq_of = {id(n): seq for seq, n in self._step_nodes.items()}
        if node is None or node is self.root:
            return self.last_seq or None
        if node.parent is not None and id(node.parent) in seq_of:
            return seq_of[id(node.parent)]
        if id(node) in seq_of:
            return seq_of[id(node)]
        rows = list(self.root.children)
        shown = rows[: rows.index(node)] if node in rows else rows
        before = [seq_of[id(n)] for n in shown if id(n) in seq_of]
        return before[-1] if before else self.last_seq or None

    def add_all(self, steps: list[Step], events: list[Event]) -> None:
        """First load: merge steps and events by time, keep only the latest steps."""
        hidden = max(0, len(steps) - MAX_SHOWN)
        if hidden:
            self.root.add_leaf(
                Text(f"… {hidden} earlier steps (tui-agent show RUN lists them all)")
            )
            cutoff = steps[hidden].created_at
            steps = steps[hidden:]
            events = [e for e in events if e.created_at >= cutoff]
        items: list[tuple[float, int, Step | Event]] = [(s.created_at, 0, s) for s in steps]
        items += [(e.created_at, 1, e) for e in events]
        for _, _, item in sorted(items, key=lambda t: (t[0], t[1])):
            if isinstance(item, Step):
                self._put_step(item)
            else:
                self._put_event(item)
        self.last_event = max([self.last_event, *[e.id for e in events]])

    def add_delta(self, steps: list[Step], events: list[Event]) -> None:
        for step in steps:
            self._put_step(step)
        for event in events:
            self._put_event(event)
        if steps or events:
            self.scroll_end(animate=False)

    def _put_step(self, step: Step) -> None:
        """Details are built when a step is expanded: a long timeline stays cheap to grow."""
        self._steps[step.seq] = step
        node = self._step_nodes.get(step.seq)
        if node is None:
            node = self.root.add(_label(step), data=step.status.value)
            self._step_nodes[step.seq] = node
        else:
            node.set_label(_label(step))
            node.data = step.status.value
            if node.is_expanded:
                self._fill(node, step)
        self.last_seq = max(self.last_seq, step.seq)

    def _fill(self, node: TreeNode[str], step: Step) -> None:
        node.remove_children()
        for line in step_details(step):
            node.add_leaf(Text(line))

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[str]) -> None:
        event.stop()
        seq = next((k for k, v in self._step_nodes.items() if v is event.node), None)
        if seq is not None and not event.node.children:
            self._fill(event.node, self._steps[seq])

    def _put_event(self, event: Event) -> None:
        if event.id <= self.last_event:
            return
        # a person ending the run is shown too (a cancel while waiting has no step of its own)
        ended_by_person = event.kind == "status" and event.message.startswith(
            ("cancelled by", "failed by")
        )
        if event.kind in ("retry", "lost", "in_doubt", "cancel", "released") or ended_by_person:
            self.root.add_leaf(Text(event_label(event)), data="event")
        self.last_event = event.id


def _label(step: Step) -> Text:
    """A person's message stands out from the model's and the tools' steps."""
    return Text(step_label(step), style="bold" if step.kind is StepKind.USER else "")
