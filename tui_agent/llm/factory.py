"""Pick the model adapter for a run; imports `openai` only for runs that need it."""

from __future__ import annotations

import os

from tui_agent.llm.base import LLMClient
from tui_agent.llm.demo import DEMO_MODEL, DemoClient


def default_model() -> str:
    """`TUI_AGENT_MODEL`, else `demo` when neither an API key nor a base URL is set."""
    explicit = os.environ.get("TUI_AGENT_MODEL")
    if explicit:
        return explicit
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        return "gpt-4o-mini"
    return DEMO_MODEL


def make_client(model: str, base_url: str | None) -> LLMClient:
    if model == DEMO_MODEL:
        return DemoClient()
    from tui_agent.llm.openai_client import OpenAIClient

    return OpenAIClient(model, base_url)
