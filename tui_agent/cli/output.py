"""How the commands print: JSON or one line of text, runs' statuses, steps as lines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tui_agent.cli.exit_codes import EXIT_OK
from tui_agent.domain.compaction import compaction_line
from tui_agent.domain.models import Step
from tui_agent.domain.reason import describe_call


def print_json(data: Any) -> None:
    """What `--json` prints: indented, non-ASCII kept as is (goals are often not English)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_result(args: argparse.Namespace, data: Any, text: str) -> None:
    """`data` as JSON when the command was given `--json`, else the line(s) of `text`."""
    if getattr(args, "json", False):
        print_json(data)
    else:
        sys.stdout.write(text + "\n")


def short_age(now: float, ts: float) -> str:
    """`3d`, `5h`, `12m`, `40s`: how long ago, in the width `ls` leaves for it."""
    delta = max(0, int(now - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit}"
    return f"{delta}s"


def status_line(status: str, reason: str | None) -> str:
    """`queued: waiting for …`, never `waiting_approval: waiting for approval: …`."""
    if not reason:
        return status
    if reason.startswith(status.replace("_", " ").split(" ")[0]):
        return reason
    return f"{status}: {reason}"


def cut(text: str, limit: int) -> str:
    """At most `limit` characters, an ellipsis saying when some were left off."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def step_line(step: Step) -> str:
    """One line per step, for `show` and `run --wait`."""
    d = step.to_dict()
    if d["kind"] == "llm":
        calls = ", ".join(c["name"] for c in d.get("tool_calls") or [])
        text = (d.get("content") or "").replace("\n", " ")
        body = text[:70] + ("…" if len(text) > 70 else "") or ("(calls a tool)" if calls else "")
        return (
            f"#{step.seq:<4} llm   {body}"
            + (f" → {calls}" if calls else "")
            + f"  [{step.tokens} tok]"
        )
    if d["kind"] == "tool":
        result = (step.result or "").replace("\n", " ")
        return (
            f"#{step.seq:<4} tool  [{step.status.value}] "
            f"{describe_call(step.tool, step.arguments, 50)} {cut(result, 50)}"
        )
    p = step.payload
    if d["kind"] == "user":
        return f"#{step.seq:<4} you   {cut(' '.join(str(d.get('text')).split()), 70)}"
    if d["kind"] == "compaction":
        return f"#{step.seq:<4} ctx   {compaction_line(step)}"
    # A person's decision (the TUI's "you" row); numbered like every step, no budget step.
    decision = f"{p.get('decision', 'decided')} {step.tool} by {p.get('by')}"
    return f"#{step.seq:<4} you   {decision}" + (f": {p['reason']}" if p.get("reason") else "")


def print_decided(args: argparse.Namespace, approval: Any) -> int:
    """What `approve` and `deny` print: the decision and the call it was about."""
    print_result(
        args,
        approval.to_dict(),
        f"{approval.status} {describe_call(approval.tool, approval.arguments, 60)}",
    )
    return EXIT_OK


def print_changed(service: Any, args: argparse.Namespace, run: Any) -> int:
    """What `cancel`, `resume` and `resolve` print: the run as it now stands."""
    from tui_agent.service.views import run_json

    if args.json:
        print_json(run_json(service.run_view(run.id)))
    else:
        reason = service.reason(run)
        sys.stdout.write(f"{run.id[:8]} {status_line(run.status.value, reason)}\n")
    return EXIT_OK
