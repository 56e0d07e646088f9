"""`tui-agent export RUN --format md`: the whole run as a transcript a person reads, or
pastes into an issue (goal, every step with its arguments and results, approvals with who,
when and why, usage). `--format json` is `show --json`."""

from __future__ import annotations

import json
from typing import Any

from tui_agent.service.api import RunView
from tui_agent.service.views import iso

FENCE = "````"  # results may hold ``` themselves


def _block(text: str, lang: str = "") -> str:
    return f"{FENCE}{lang}\n{text.rstrip()}\n{FENCE}"


def _args(arguments: Any) -> str:
    if isinstance(arguments, str):  # not JSON: shown as the model wrote it
        return arguments
    return json.dumps(arguments, indent=2, ensure_ascii=False)


def _when(ts: float | None) -> str:
    return iso(ts) or "-"


def _step(step: dict[str, Any]) -> list[str]:
    seq, kind = step["seq"], step["kind"]
    if kind == "llm":
        head = f"### {seq}. Model reply ({step.get('tokens', 0)} tokens"
        if step.get("latency_s") is not None:
            head += f", {step['latency_s']:.2f} s"
        lines = [head + ")", ""]
        if step.get("content"):
            lines += [step["content"].rstrip(), ""]
        calls = [f"`{c.get('name')}`" for c in step.get("tool_calls") or []]
        if calls:  # their arguments are in the tool steps that follow
            lines += ["Calls " + ", ".join(calls) + ".", ""]
        return lines
    if kind == "tool":
        lines = [
            f"### {seq}. Tool `{step.get('tool')}`: {step['status']}",
            "",
            "Arguments:",
            "",
            _block(_args(step.get("arguments")), "json"),
            "",
        ]
        if step.get("result") is not None:
            lines += ["Result:", "", _block(step["result"]), ""]
        if step.get("artifact_id"):
            lines += [f"(full output kept as artifact `{step['artifact_id']}`)", ""]
        return lines
    if kind == "user":
        return [f"### {seq}. Message from {step.get('by')}", "", str(step.get("text")).rstrip(), ""]
    if kind == "compaction":
        through = step.get("through_seq")
        head = (
            f"### {seq}. Compaction: folded steps {step.get('from_seq') or 1} to {through} "
            f"into the summary of steps 1 to {through} (about "
            f"{step.get('tokens_before') or 0:,} → {step.get('tokens_after') or 0:,} tokens, "
            f"limit {step.get('limit') or 0:,})"
        )
        return [head, "", _block(str(step.get("summary") or "")), ""]
    decision = step.get("decision", kind)
    line = f"### {seq}. {str(decision).capitalize()}: `{step.get('tool')}` by {step.get('by')}"
    if step.get("reason"):
        line += f": {step['reason']}"
    return [line, ""]


def run_markdown(view: RunView, data: dict[str, Any]) -> str:
    """`data` is the run's `show --json` (one reading of the store for both formats)."""
    run = view.run
    usage, budget = data["usage"], data["budget"]
    lines = [
        f"# Run {run.id[:8]}: {run.goal.splitlines()[0][:100]}",
        "",
        f"- **Status:** {run.status.value}" + (f" ({data['reason']})" if data["reason"] else ""),
        f"- **Model:** {run.model}" + (f" at {run.base_url}" if run.base_url else ""),
        f"- **Workspace:** `{run.workspace}`",
        f"- **Started:** {data['created_at']}; **last change:** {data['updated_at']}",
        f"- **Usage:** {usage['steps']} of {budget['max_steps']} steps, "
        f"{usage['llm_tokens']:,} of {budget['max_llm_tokens']:,} tokens, "
        f"{usage['wall_time_s']:.1f} of {budget['max_wall_time_s']:g} s",
        *(
            [f"- **Context:** at most {budget['max_context_tokens']:,} tokens a request"]
            if budget.get("max_context_tokens")
            else []
        ),
        f"- **Id:** `{run.id}`",
        *(
            [f"- **Forked from:** run `{origin['run']}` at step {origin['step']}"]
            if (origin := data.get("forked_from"))
            else []
        ),
        "",
        "## Goal",
        "",
        run.goal.rstrip(),
        "",
    ]
    if run.result:
        lines += ["## Result", "", run.result.rstrip(), ""]
    if run.error:
        lines += ["## Error", "", run.error.rstrip(), ""]
    state = data["state"]
    if state.get("plan") or state.get("known_facts") or state.get("open_questions"):
        lines += ["## State", ""]
        lines += [f"{i}. {item}" for i, item in enumerate(state.get("plan") or [], 1)]
        lines += [f"- fact: {_fact(f)}" for f in state.get("known_facts") or []]
        lines += [f"- open question: {q}" for q in state.get("open_questions") or []]
        lines.append("")
    lines += ["## Steps", ""]
    for step in data["steps"]:
        lines += _step(step)
    if not data["steps"]:
        lines += ["(none yet)", ""]
    if view.approvals:
        lines += [
            "## Approvals",
            "",
            "| tool | risk | decision | by | when | why |",
            "|---|---|---|---|---|---|",
        ]
        for a in view.approvals:
            why = (a.decision_reason or "").replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| `{a.tool}` | {a.risk} | {a.status}{' (always)' if a.always else ''} | "
                f"{a.decided_by or '-'} | {_when(a.decided_at)} | {why} |"
            )
        lines.append("")
    lines += ["## History", ""]
    lines += [f"- {_when(e.created_at)} {e.kind}: {e.message}" for e in view.events]
    return "\n".join(lines).rstrip() + "\n"


def _fact(fact: Any) -> str:
    if isinstance(fact, dict):
        return f"{fact.get('key')}: {fact.get('value')}"
    return str(fact)
