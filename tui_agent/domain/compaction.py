"""How a compaction's summary reads: written by the engine (engine/context.py), read back by
scripted models (the demo, the tests' server) that count the turns of a conversation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tui_agent.domain.models import Step

HEADER = (
    "Earlier work, compacted by tui-agent: steps {first} to {last} "
    "({replies} replies, {calls} tool calls)."
)
_HEADER_RE = re.compile(r"compacted by tui-agent: steps \d+ to \d+ \((\d+) replies")
REPLY_LINE = "- step {seq}, the model: "
_REPLY_RE = re.compile(r"^- step \d+, the model: (.*)$")
_TOOL_RE = re.compile(r"^- step \d+, (\w+)\((.*)\) → (\w+): (.*)$")
# Below this a request cannot hold the system prompt, the tools' descriptions (about 500
# tokens), the goal and a compaction's summary.
MIN_CONTEXT_TOKENS = 1000
MAX_CONTEXT_TOKENS = 10**8  # the CLI's ceiling too
# How the pause reason of a run whose limit is too small starts (the worker writes it; a
# resume and the TUI's resume dialog recognise it).
CONTEXT_TOO_SMALL = "the next request needs about"
NEWLINE = " | "  # a folded text's line breaks, so each step keeps one line


@dataclass
class Folded:
    """What a request's summary stands for: its replies, their texts and the tools' results
    (in order; a line break shown as NEWLINE is one again)."""

    replies: int = 0
    texts: list[str] = field(default_factory=list)
    results: list[tuple[str, str, str]] = field(default_factory=list)  # (tool, args, result)


def folded(messages: list[dict[str, Any]]) -> Folded:
    """The summary in the request's system message (an empty Folded: none)."""
    text = str(messages[0].get("content") or "") if messages else ""
    header = _HEADER_RE.search(text)
    if header is None:
        return Folded()
    found = Folded(replies=int(header.group(1)))
    for line in text[header.end() :].splitlines():
        if reply := _REPLY_RE.match(line):
            found.texts.append(reply.group(1))
        elif tool := _TOOL_RE.match(line):
            name, args, _status, result = tool.groups()
            found.results.append((name, args, result.replace(NEWLINE, "\n")))
    return found


def compaction_line(step: Step) -> str:
    """What a compaction did, in a line: the steps folded and the request's size."""
    p = step.payload
    through = p.get("through_seq", "?")
    first = p.get("from_seq", 1)
    # The steps new to this summary, then what the summary covers (it carries the one
    # before it: its header counts all of them).
    return (
        f"folded steps {first} to {through} into the summary of steps 1 to {through}: about "
        f"{p.get('tokens_before', 0):,} → {p.get('tokens_after', 0):,} tokens "
        f"(limit {p.get('limit', 0):,})"
    )
