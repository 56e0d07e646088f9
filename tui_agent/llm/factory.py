"""Pick the model adapter for a run; imports `openai` only for runs that need it."""

from __future__ import annotations

import os
import threading

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


class ClientPool:
    """One client per (model, base URL) for all the runs of an executor.

    Runs share clients (thread-safe) instead of building one each; all of them share one
    HTTP transport and SSL context (`openai_client.shared_http_client`).
    """

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str | None], LLMClient] = {}
        self._lock = threading.Lock()

    def get(self, model: str, base_url: str | None) -> LLMClient:
        key = (model, base_url)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = make_client(model, base_url)
            return client
