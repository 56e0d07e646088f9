"""The offline `demo` model: deterministic, free, and it shows every part of the app.

It plans (update_state), lists and reads the workspace, asks to write one file (which waits
for your approval) and finishes. A message of yours (`say`) is noted as a fact of the agent
state first, then the script goes on (a completed run answers it and completes again). Its
reply depends only on the conversation, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tui_agent.domain.compaction import folded
from tui_agent.domain.models import ToolCall
from tui_agent.llm.base import LLMReply, OnText

DEMO_MODEL = "demo"
SUMMARY_FILE = "tui-agent-demo-summary.md"


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class DemoClient:
    label = "demo (offline)"

    def __init__(self, delay_s: float | None = None) -> None:
        if delay_s is None:
            delay_s = float(os.environ.get("TUI_AGENT_DEMO_DELAY", "0.6"))
        self.delay_s = delay_s

    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        timeout_s: float,
        on_text: OnText | None = None,
    ) -> LLMReply:
        streamed = on_text is not None and self.delay_s > 0
        if self.delay_s > 0:
            # Streaming, half the delay is "thinking", then it writes word by word.
            time.sleep(min(self.delay_s / 2 if streamed else self.delay_s, timeout_s))
        goal = next((m["content"] for m in messages if m.get("role") == "user"), "")
        said = _said(messages)
        new = _trailing_users(messages)[-len(said) :] if said else []
        if new:
            # Numbered after those already noted in the state (a compaction may have folded
            # the earlier messages out of the conversation, never out of the facts).
            system = str(messages[0].get("content") or "") if messages else ""
            noted = system.count('"key": "message ')
            content, calls = _note(new, noted + len(new))
        else:
            # The script's own turns: the replies noting a message are not among them.
            script = [m for m in messages if not _noting(m)]
            # Turns folded into a compaction's summary count too (bounded context).
            earlier = folded(messages)
            notes = sum(1 for text in earlier.texts if text.startswith(NOTED))
            turn = earlier.replies - notes + sum(1 for m in script if m.get("role") == "assistant")
            results = [r for _, args, r in earlier.results if NOTE_FACT not in args]
            results += [m.get("content") or "" for m in script if m.get("role") == "tool"]
            system = str(messages[0].get("content") or "") if messages else ""
            content, calls = self._script(
                turn,
                results,
                goal,
                system,
                _result_of("list_dir", earlier, script),
                _result_of("write_file", earlier, script),
            )
            if not calls and said:
                content = f"{content} You said: “{_short(said[-1])}” (noted in the facts)."
        if streamed and content and on_text is not None:
            _stream_words(content, self.delay_s / 10, on_text)
        # Counted as a server does: the tools' descriptions are part of the prompt.
        prompt = sum(_tokens(json.dumps(m)) for m in messages) + _tokens(json.dumps(tools))
        completion = _tokens((content or "") + json.dumps([c.arguments for c in calls]))
        return LLMReply(
            content=content,
            tool_calls=calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            model=DEMO_MODEL,
            finish_reason="tool_calls" if calls else "stop",
        )

    def _script(
        self,
        turn: int,
        results: list[str],
        goal: str,
        state: str = "",
        listing: str | None = "",
        written: str | None = None,
    ) -> tuple[str | None, list[ToolCall]]:
        """`listing` and `written`: the results of list_dir and write_file as the
        conversation still shows them (None: not made, or folded away and their summary
        line dropped too)."""

        def call(name: str, args: dict[str, Any]) -> list[ToolCall]:
            return [ToolCall(id=f"demo_{turn}", name=name, arguments=json.dumps(args))]

        if turn == 0:
            plan = [
                "List the workspace",
                "Read the first file found",
                f"Write a short summary to {SUMMARY_FILE} (asks for your approval)",
                "Report back",
            ]
            return "I'll start by writing down a plan.", call(
                "update_state",
                {
                    "patch": {
                        "plan": plan,
                        "add_facts": [{"key": "goal", "value": goal, "source": "user"}],
                        "add_questions": ["Is the summary file wanted?"],
                    }
                },
            )
        if turn == 1:
            return "Let me look at the workspace.", call("list_dir", {"path": "."})
        # A listing a compaction's summary kept is cut at its excerpt's end ("…"): its last
        # line is partial, and the count is a lower bound.
        cut = (listing or "").endswith("…")
        lines = (listing or "").splitlines()[: -1 if cut else None]
        files = [
            line.split(" (")[0]
            for line in lines
            if line
            and not line.endswith("/")
            and " (" in line
            and not line.startswith(SUMMARY_FILE)
        ]
        if turn == 2:
            if files:
                return f"Reading {files[0]}.", call(
                    "read_file", {"path": files[0], "offset": 0, "limit": 2000}
                )
            return "The workspace has no files to read.", call(
                "update_state", {"patch": {"add_facts": ["The workspace has no files"]}}
            )
        if turn == 3:
            found = (
                f"The workspace holds {'at least ' if cut else ''}{len(files)} file(s)"
                + (f"; the first is `{files[0]}`" if files else "")
                if listing is not None
                else "The workspace's listing was compacted away before this was written"
            )
            body = (
                f"# Demo summary\n\nGoal: {goal}\n\n{found}"
                ".\n\nWritten by the tui-agent demo model.\n"
            )
            return (
                f"I'd like to save a short summary as {SUMMARY_FILE}.",
                call("write_file", {"path": SUMMARY_FILE, "content": body}),
            )
        last = results[-1] if results else ""
        if turn == 4:
            return None, call(
                "update_state",
                {
                    "patch": {
                        "resolve_questions": ["Is the summary file wanted?"],
                        "add_facts": [
                            {
                                "key": "summary",
                                "value": "written"
                                if (written or last).startswith("wrote")
                                else "not written",
                                "source": "agent",
                            }
                        ],
                    }
                },
            )
        if (written or "").startswith("wrote") or WRITTEN in state:
            return f"Done. I looked at the workspace and wrote {SUMMARY_FILE}.", []
        if written is None:
            return "Done. I looked at the workspace.", []
        return f"Done. I looked at the workspace; the summary was not written ({written}).", []


NOTE_ID = "demo_note_"
NOTED = "Noted:"
WRITTEN = '"key": "summary", "value": "written"'  # the fact, in the system message's state
NOTE_FACT = '"key": "message '  # in the arguments of a call noting a message


def _stream_words(content: str, pause: float, on_text: OnText) -> None:
    """Hand out the reply a word every `pause` seconds, as a streaming server would."""
    words = content.split(" ")
    for n in range(1, len(words) + 1):
        time.sleep(pause)
        on_text(" ".join(words[:n]))


def _said(messages: list[dict[str, Any]]) -> list[str]:
    """The person's messages after the goal (the first user message is the goal)."""
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    return users[1:]


def _short(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _trailing_users(messages: list[dict[str, Any]]) -> list[str]:
    """The user messages at the end of the conversation (not answered yet)."""
    found: list[str] = []
    for m in reversed(messages):
        if m.get("role") != "user":
            break
        found.insert(0, str(m.get("content") or ""))
    return found


def _note(texts: list[str], count: int) -> tuple[str, list[ToolCall]]:
    """Acknowledge new messages and keep them as facts, so the state shows what was asked
    (`count`: the person's messages so far, which numbers them)."""
    first = count - len(texts) + 1
    facts = [
        {"key": f"message {n}", "value": text, "source": "user"}
        for n, text in enumerate(texts, first)
    ]
    patch = {"patch": {"add_facts": facts}}
    call = ToolCall(id=f"{NOTE_ID}{count}", name="update_state", arguments=json.dumps(patch))
    return f"{NOTED} “{_short(texts[-1])}”. I'll keep it in mind.", [call]


def _noting(message: dict[str, Any]) -> bool:
    """A reply noting a message, or its call's result."""
    if message.get("role") == "tool":
        return str(message.get("tool_call_id") or "").startswith(NOTE_ID)
    calls = message.get("tool_calls") or []
    return bool(calls) and all(str(c.get("id", "")).startswith(NOTE_ID) for c in calls)


def _result_of(tool: str, earlier: Any, script: list[dict[str, Any]]) -> str | None:
    """The newest result of a call of `tool`: from the conversation (the tool message
    answering it) or from a compaction's summary; None when neither shows one."""
    found: str | None = None
    for name, _args, result in earlier.results:
        if name == tool:
            found = str(result)
    asked = {
        call.get("id")
        for m in script
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or []
        if (call.get("function") or {}).get("name") == tool
    }
    for m in script:
        if m.get("role") == "tool" and m.get("tool_call_id") in asked:
            found = str(m.get("content") or "")
    return found
