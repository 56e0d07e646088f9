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
    """The exact message list for the next LLM call, from recorded steps only."""
    state = json.dumps(run.state.to_dict(), ensure_ascii=False)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT.format(workspace=run.workspace, state=state)},
        {"role": "user", "content": run.goal},
    ]
    for step in steps:
        if step.kind is StepKind.LLM:
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
    return messages


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
