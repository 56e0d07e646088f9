"""The offline `demo` model: deterministic, free, and it shows every part of the app.

It plans (update_state), lists and reads the workspace, asks to write one file (which waits
for your approval) and finishes. Its reply depends only on the conversation, so a resumed
run continues exactly where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tui_agent.domain.models import ToolCall
from tui_agent.llm.base import LLMReply

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
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], timeout_s: float
    ) -> LLMReply:
        if self.delay_s > 0:
            time.sleep(min(self.delay_s, timeout_s))
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        results = [m.get("content") or "" for m in messages if m.get("role") == "tool"]
        goal = next((m["content"] for m in messages if m.get("role") == "user"), "")
        content, calls = self._script(turn, results, goal)
        prompt = sum(_tokens(json.dumps(m)) for m in messages)
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
        self, turn: int, results: list[str], goal: str
    ) -> tuple[str | None, list[ToolCall]]:
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
        listing = results[1] if len(results) > 1 else ""
        files = [
            line.split(" (")[0]
            for line in listing.splitlines()
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
            body = (
                f"# Demo summary\n\nGoal: {goal}\n\nThe workspace holds {len(files)} file(s)"
                + (f"; the first is `{files[0]}`" if files else "")
                + ".\n\nWritten by the tui-agent demo model after your approval.\n"
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
                                "value": "written" if last.startswith("wrote") else "not written",
                                "source": "agent",
                            }
                        ],
                    }
                },
            )
        write_result = results[-2] if len(results) >= 2 else last
        if write_result.startswith("wrote"):
            return f"Done. I looked at the workspace and wrote {SUMMARY_FILE}.", []
        return f"Done. I looked at the workspace; the summary was not written ({write_result}).", []
