"""The model seam: what the engine needs from any chat model with function calling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tui_agent.domain.models import ToolCall


@dataclass(frozen=True)
class LLMReply:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    model: str = ""
    finish_reason: str | None = None

    def to_payload(self) -> dict[str, Any]:
        """What the journal stores: enough to rebuild the assistant message exactly."""
        return {
            "content": self.content,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
            },
            "model": self.model,
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> LLMReply:
        usage = data.get("usage") or {}
        return cls(
            content=data.get("content"),
            tool_calls=[
                ToolCall(c["id"], c["name"], c["arguments"]) for c in data.get("tool_calls", [])
            ],
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            total_tokens=usage.get("total_tokens", 0),
            model=data.get("model", ""),
            finish_reason=data.get("finish_reason"),
        )


class TransientLLMError(Exception):
    """Worth retrying: connection, timeout, 429, 5xx. `retry_after` honours the server."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentLLMError(Exception):
    """Retrying will not help (400, 401, unknown model): the run fails with this message."""


# Called with the reply's text so far while it streams (for the live view, never recorded).
OnText = Callable[[str], None]


class LLMClient(Protocol):
    """One chat completion with tools. Implementations raise the two errors above.

    Given `on_text`, a client that can stream calls it with the text so far as it arrives;
    the reply returned is the same as without it (only a finished reply is returned)."""

    label: str

    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        timeout_s: float,
        on_text: OnText | None = None,
    ) -> LLMReply: ...
