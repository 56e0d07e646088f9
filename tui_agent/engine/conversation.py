"""Rebuilding the model's conversation from the journal alone (promise 2: no second bill)."""

from __future__ import annotations

import json
from typing import Any

from tui_agent.domain.models import (
    TOOL_DONE_STATUSES,
    Run,
    Step,
    StepKind,
    ToolCall,
)
from tui_agent.llm.base import LLMReply

SYSTEM_PROMPT = """You are tui-agent, an autonomous agent working in the directory {workspace}.
Work towards the user's goal using the tools. Keep your agent state current with
update_state (plan, facts, open questions). Risky tools may wait for a person's approval;
a denied call comes back with the person's reason: adapt and go on. When the goal is done,
reply with a short final answer and no tool call.

Current agent state:
{state}"""


def build_messages(run: Run, steps: list[Step]) -> list[dict[str, Any]]:
    """The exact message list for the next LLM call, from recorded steps only.

    A person's message (a `user` step) goes where the model first saw it: before the first
    reply whose request held it (see `seen_through`), never between a reply's tool calls
    and their results; one that no reply saw yet goes last."""
    state = json.dumps(run.state.to_dict(), ensure_ascii=False)
    system = SYSTEM_PROMPT.format(workspace=run.workspace, state=state)
    compaction = newest_compaction(steps)
    if compaction is not None:
        # Older turns live on as the summary; the request starts after its cut.
        system += "\n\n" + str(compaction.payload.get("summary") or "")
        through = int(compaction.payload.get("through_seq") or 0)
        steps = [s for s in steps if s.seq > through]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": run.goal},
    ]
    unseen: list[Step] = []
    for step in steps:
        if step.kind is StepKind.USER:
            unseen.append(step)
        elif step.kind is StepKind.LLM:
            seen = seen_through(step)
            messages += [_user_message(s) for s in unseen if s.seq <= seen]
            unseen = [s for s in unseen if s.seq > seen]
            reply = LLMReply.from_payload(step.payload)
            message: dict[str, Any] = {"role": "assistant", "content": reply.content}
            if reply.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in reply.tool_calls
                ]
            messages.append(message)
        elif step.kind is StepKind.TOOL and step.status in TOOL_DONE_STATUSES:
            messages.append(
                {"role": "tool", "tool_call_id": step.call_id, "content": step.result or ""}
            )
    return messages + [_user_message(s) for s in unseen]


def newest_compaction(steps: list[Step]) -> Step | None:
    for step in reversed(steps):
        if step.kind is StepKind.COMPACTION:
            return step
    return None


def _user_message(step: Step) -> dict[str, Any]:
    return {"role": "user", "content": str(step.payload.get("text") or "")}


def seen_through(reply: Step) -> int:
    """The last seq the request of this recorded reply was built from: a message added
    while the model was answering has a smaller seq than the reply, yet was not seen.
    (Replies recorded before messages existed saw every step before them.)"""
    seen = reply.payload.get("seen_seq")
    return int(seen) if isinstance(seen, int) else reply.seq - 1


def unheard_messages(steps: list[Step]) -> list[Step]:
    """A person's messages that no recorded reply has seen yet: the model must be asked
    (a run whose last reply made no call is not complete while there is one)."""
    found = last_reply(steps)
    seen = seen_through(found[0]) if found is not None else 0
    return [s for s in steps if s.kind is StepKind.USER and s.seq > seen]


def last_reply(steps: list[Step]) -> tuple[Step, LLMReply] | None:
    for step in reversed(steps):
        if step.kind is StepKind.LLM:
            return step, LLMReply.from_payload(step.payload)
    return None


def unanswered_calls(steps: list[Step]) -> tuple[int, str, list[ToolCall]] | None:
    """(llm_seq, model's text, calls still without a finished tool step) of the last reply."""
    found = last_reply(steps)
    if found is None:
        return None
    step, reply = found
    answered = {
        s.call_id
        for s in steps
        if s.kind is StepKind.TOOL and s.llm_seq == step.seq and s.status in TOOL_DONE_STATUSES
    }
    pending = [c for c in reply.tool_calls if c.id not in answered]
    return step.seq, reply.content or "", pending
