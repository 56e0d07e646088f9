"""Plain-text formatting shared by the widgets (no Textual here: easy to test)."""

from __future__ import annotations

import json
from typing import Any

from tui_agent.domain.compaction import compaction_line
from tui_agent.domain.models import Event, RunStatus, Step, StepKind
from tui_agent.domain.reason import describe_call

STATUS_ICONS = {
    RunStatus.QUEUED: "○",
    RunStatus.RUNNING: "▶",
    RunStatus.WAITING_APPROVAL: "?",
    RunStatus.NEEDS_ATTENTION: "!",
    RunStatus.PAUSED: "‖",
    RunStatus.COMPLETED: "✓",
    RunStatus.FAILED: "✗",
    RunStatus.CANCELLED: "⊘",
}


STATUS_SHORT = {
    RunStatus.QUEUED: "queued",
    RunStatus.RUNNING: "running",
    RunStatus.WAITING_APPROVAL: "approve?",
    RunStatus.NEEDS_ATTENTION: "attention",
    RunStatus.PAUSED: "paused",
    RunStatus.COMPLETED: "done",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
}


def status_cell(status: RunStatus, *, flag: bool = False, short: bool = False) -> str:
    """`✓ done`; a run waiting for a person is flagged ⚑ instead of its icon; `short`: the
    icon alone (narrow history panes)."""
    icon = "⚑" if flag else STATUS_ICONS[status]
    return icon if short else f"{icon} {STATUS_SHORT[status]}"


def age(now: float, ts: float) -> str:
    """At most four characters: 45s, 12m, 3h, 71d, 2y."""
    delta = max(0, int(now - ts))
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit}"
    return f"{delta}s"


def tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n // 1000}k"
    return str(n)


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def one_line(text: str | None, limit: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def step_label(step: Step) -> str:
    """The timeline's one-line summary of a step."""
    if step.kind is StepKind.LLM:
        calls = [c["name"] for c in step.payload.get("tool_calls", [])]
        text = one_line(step.payload.get("content"), 60) or ("(calls a tool)" if calls else "")
        arrow = f" → {', '.join(calls)}" if calls else ""
        return f"#{step.seq:<3} llm  {text}{arrow}  ({step.tokens} tok)"
    if step.kind is StepKind.TOOL:
        # the outcome first: a cut row must never hide that a call was denied or failed
        call = describe_call(step.tool, step.arguments, 48)
        return f"#{step.seq:<3} tool [{step.status.value}] {call}"
    payload = step.payload
    if step.kind is StepKind.USER:
        return f"#{step.seq:<3} you  says: {one_line(payload.get('text'), 70)}"
    if step.kind is StepKind.COMPACTION:
        return f"#{step.seq:<3} ctx  {compaction_line(step)}"
    who = payload.get("by", "?")
    why = f": {payload['reason']}" if payload.get("reason") else ""
    always = " (always, for the rest of the run)" if payload.get("always") else ""
    decision = payload.get("decision", "decided")
    # Numbered like every step, but a decision is not a budget step (replies and calls are):
    # said first, so a narrow row cuts the reason, not the explanation.
    return f"#{step.seq:<3} you  (no budget step) {decision} {step.tool}{always} by {who}{why}"


def step_details(step: Step, result_lines: int | None = 20) -> list[str]:
    """The lines shown when a step is expanded (a tool's result cut to `result_lines`;
    None: whole, for the step's own screen)."""
    lines: list[str] = []
    if step.kind is StepKind.LLM:
        if step.payload.get("content"):
            lines += str(step.payload["content"]).splitlines() or [""]
        for c in step.payload.get("tool_calls", []):
            lines.append(f"call {c['name']}({c['arguments']})")
        usage = step.payload.get("usage") or {}
        lines.append(
            f"tokens: {usage.get('prompt_tokens', 0)} in, {usage.get('completion_tokens', 0)} out"
        )
    elif step.kind is StepKind.TOOL:
        lines.append("arguments: " + _pretty(step.parsed_arguments()))
        if step.result is not None:
            result = step.result.splitlines() or [""]
            shown = result if result_lines is None else result[:result_lines]
            lines += ["result:"] + [f"  {line}" for line in shown]
            if len(result) > len(shown):
                lines.append(f"  … {len(result) - len(shown)} more lines (o shows them all)")
        if step.artifact_id:
            lines.append(f"artifact: {step.artifact_id}")
    elif step.kind is StepKind.USER:
        lines += str(step.payload.get("text") or "").splitlines() or [""]
        lines.append(f"from {step.payload.get('by', '?')} (no budget step)")
    elif step.kind is StepKind.COMPACTION:
        lines += str(step.payload.get("summary") or "").splitlines()
        lines.append("(no budget step: written by tui-agent, no request to the model)")
    else:
        lines.append("arguments: " + _pretty(step.parsed_arguments()))
    return lines


def event_label(event: Event) -> str:
    icon = {
        "retry": "↻",
        "lost": "⚠",
        "in_doubt": "⚠",
        "cancel": "⊘",
        "released": "↺",
        "status": "⊘",
    }.get(event.kind, "•")
    return f"{icon} {event.message}"


def pretty_arguments(arguments: str) -> str:
    """A call's JSON arguments indented for reading (as written when it is not JSON)."""
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments


def _pretty(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
