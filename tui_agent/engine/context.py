"""Bounded context: how big the next request is, and what to fold when it is too big.

A request's size is what the server said the last one took (its prompt and its answer, from
the reported usage) plus an estimate of what was added since (tool results, messages); only
when no reply has been measured yet is the whole request estimated. Estimates are the usual
four characters a token.

A compaction folds the oldest turns of the current window into a summary written here, from
the recorded steps: it asks the model nothing, so it costs no request, cannot fail, and a
crash before it commits simply folds the same turns again. The summary keeps what each
folded step did and found; the agent state (plan, facts, open questions, artifact ids) is
kept whole in every request's system message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tui_agent.domain.compaction import HEADER, NEWLINE, REPLY_LINE
from tui_agent.domain.models import AgentState, Run, Step, StepKind, StepStatus
from tui_agent.engine.conversation import build_messages, newest_compaction, unheard_messages

CHARS_PER_TOKEN = 4
SYSTEM_TOKENS = "system_tokens"  # a reply's payload: the estimated system message it was sent
KEEP_SHARE = 0.5  # the newest turns kept as they were: at most this share of the limit
SUMMARY_SHARE = 0.25  # the summary: at most this share of the limit
EXCERPT = 160  # characters of a step's text kept in the summary
KEPT = "Kept from the agent state (whole in the system message above):"
MAX_FACTS = 20  # the newest facts listed in the summary (all are in the agent state)


def estimate_tokens(data: Any) -> int:
    """Tokens of a message list (or anything JSON), estimated from its characters."""
    return len(json.dumps(data, ensure_ascii=False)) // CHARS_PER_TOKEN + 1


def request_tokens(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], window: list[Step]
) -> int:
    """The next request's size: the newest measured reply's prompt and answer, plus the
    estimated messages after it; all estimated when nothing was measured."""
    # Only a reply after the newest compaction measured a request like the next one.
    compaction = newest_compaction(window)
    floor = compaction.seq if compaction is not None else 0
    replies = [s for s in window if s.kind is StepKind.LLM and s.seq > floor]
    payload = replies[-1].payload if replies else {}
    usage = payload.get("usage") or {}
    measured = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    if not measured:
        return estimate_tokens(messages) + estimate_tokens(tools)
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    # The system message holds the agent state, which may have grown since (update_state).
    grown = estimate_tokens(messages[0]) - int(payload.get(SYSTEM_TOKENS) or 0)
    return measured + max(0, grown) + estimate_tokens(messages[last + 1 :])


@dataclass(frozen=True)
class Compaction:
    """What to record: the summary and the last seq it folds in."""

    through_seq: int
    payload: dict[str, Any]


def plan_compaction(
    run: Run, window: list[Step], tools: list[dict[str, Any]], limit: int
) -> Compaction | None:
    """Fold the older turns, keeping the newest ones that fit in KEEP_SHARE of what
    `limit` leaves free. A turn starts at a model reply (its calls and their results follow
    it), so a cut never separates a call from its result. Never folded: the newest turn
    (the result the model just asked for) and a person's message the model has not
    answered yet. None: nothing else is left to fold (the run then pauses)."""
    previous = newest_compaction(window)
    # The turns since the previous compaction's cut, those it kept included: the newest
    # of them may come before that compaction's own step, and is still never folded.
    floor = int(previous.payload.get("through_seq", previous.seq)) if previous else 0
    starts = [s.seq for s in window if s.kind is StepKind.LLM and s.seq > floor]
    # What every request holds (the system message with the state, the goal, the tools)
    # is not the turns' to share: the kept turns and the summary share what is left.
    free = max(0, limit - estimate_tokens(build_messages(run, [])) - estimate_tokens(tools))
    room = int(free * KEEP_SHARE)
    kept_from = starts[-1] if starts else (window[-1].seq + 1 if window else 1)
    for start in reversed(starts[:-1]):
        kept = [s for s in window if s.seq >= start]
        if estimate_tokens(build_messages(run, kept)[2:]) > room:
            break
        kept_from = start
    if starts and kept_from == starts[0] and len(starts) > 1:
        kept_from = starts[1]  # all since the last compaction fits: fold its oldest turn
    through = kept_from - 1
    unheard = [m.seq for m in unheard_messages(window)]
    if unheard:
        through = min(through, unheard[0] - 1)  # the model reads it as it was said
    folded = [s for s in window if s.seq <= through and s.kind is not StepKind.COMPACTION]
    if not folded:
        return None
    payload = _payload(run.state, previous, folded, through, int(free * SUMMARY_SHARE))
    after = build_messages(run, [s for s in window if s.seq > through])
    payload["tokens_after"] = (
        estimate_tokens(after) + estimate_tokens(tools) + len(payload["summary"]) // CHARS_PER_TOKEN
    )
    return Compaction(through, payload)


def _payload(
    state: AgentState,
    previous: Step | None,
    folded: list[Step],
    through: int,
    summary_tokens: int,
) -> dict[str, Any]:
    """The summary: the header, a line per folded step (the previous summary's first), the
    oldest lines dropped when they exceed `summary_tokens`, and the agent state in short
    (plan, facts, open questions, artifact ids: never dropped; the system message holds
    it whole)."""
    before = previous.payload if previous is not None else {}
    replies = int(before.get("replies", 0)) + sum(s.kind is StepKind.LLM for s in folded)
    calls = int(before.get("tool_calls", 0)) + sum(s.kind is StepKind.TOOL for s in folded)
    lines = list(before.get("lines", [])) + [line for s in folded if (line := _line(s))]
    header = HEADER.format(first=1, last=through, replies=replies, calls=calls)
    kept, kept_lines = _kept(state)
    room = summary_tokens * CHARS_PER_TOKEN - len(header) - sum(map(len, kept_lines)) - 40
    dropped = 0
    while lines and sum(len(x) + 1 for x in lines) > max(0, room):
        lines.pop(0)
        dropped += 1
    total = int(before.get("dropped", 0)) + dropped
    shown = [f"- … {total} earlier line(s) dropped to stay within the limit"] if total else []
    return {
        "summary": "\n".join([header, "What was done and found:", *shown, *lines, *kept_lines]),
        "state": kept,
        "through_seq": through,
        "from_seq": folded[0].seq if folded else through,  # the steps new to this summary
        "replies": replies,
        "tool_calls": calls,
        "lines": lines,
        "dropped": total,
    }


def _kept(state: AgentState) -> tuple[dict[str, Any], list[str]]:
    """The agent state as the summary keeps it: the plan, the facts (each cut to a line),
    the open questions and the artifacts' ids (or paths)."""
    facts = [_fact(f) for f in state.known_facts][-MAX_FACTS:]
    artifacts = [str(a.get("artifact_id") or a.get("path") or "?") for a in state.artifacts]
    kept = {
        "plan": list(state.plan),
        "facts": facts,
        "open_questions": list(state.open_questions),
        "artifacts": artifacts,
    }
    lines = [KEPT]
    for name, values in kept.items():
        text = "; ".join(_excerpt(v, 200) for v in values) if values else "(none)"
        lines.append(f"- {name.replace('_', ' ')}: {text}")
    return kept, lines


def _fact(fact: Any) -> str:
    if isinstance(fact, dict):
        return _excerpt(f"{fact.get('key', '')}: {fact.get('value', '')}".strip(": "), 120)
    return _excerpt(fact, 120)


def _excerpt(text: object, size: int = EXCERPT) -> str:
    """One line: newlines shown as ' | ' (a listing stays readable, and parseable)."""
    flat = NEWLINE.join(line.strip() for line in str(text or "").splitlines() if line.strip())
    return flat if len(flat) <= size else flat[: size - 1] + "…"


def _line(step: Step) -> str | None:
    if step.kind is StepKind.LLM:
        calls = [c["name"] for c in step.payload.get("tool_calls", [])]
        said = _excerpt(step.payload.get("content"))
        asked = f" (calls {', '.join(calls)})" if calls else ""
        return REPLY_LINE.format(seq=step.seq) + f"{said or '(no text)'}{asked}"
    if step.kind is StepKind.TOOL:
        args = _excerpt(step.arguments, 80)
        outcome = step.status.value if step.status is not StepStatus.FINISHED else "ok"
        return f"- step {step.seq}, {step.tool}({args}) → {outcome}: {_excerpt(step.result)}"
    if step.kind is StepKind.USER:
        return f"- step {step.seq}, the person said: {_excerpt(step.payload.get('text'), 400)}"
    if step.kind is StepKind.APPROVAL:
        decision = step.payload.get("decision", "decided")
        return f"- step {step.seq}, the person {decision} {step.tool}"
    return None
