"""Chat Completions through the `openai` package: OpenAI and every compatible local server.

The client is built with max_retries=0: the engine retries with tenacity so that every
attempt is visible and recorded. The API key is read from the environment here and nowhere
else; it is never stored or logged.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from tui_agent.domain.models import ToolCall
from tui_agent.llm.base import LLMReply, PermanentLLMError, TransientLLMError


def _retry_after(exc: openai.APIStatusError) -> float | None:
    header = exc.response.headers.get("retry-after") if exc.response is not None else None
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return exc.message


_http_lock = threading.Lock()
_http_client: openai.DefaultHttpxClient | None = None


def shared_http_client() -> openai.DefaultHttpxClient:
    """One connection pool (and one SSL context) for every model client of the process.

    Building it loads the HTTP transport and the CA bundle (~0.15 s): a standby executor
    calls this while it waits, so a promoted one asks the model without paying for it.
    Each `openai.OpenAI` still resolves its own base URL; only the transport is shared.
    """
    global _http_client
    with _http_lock:
        if _http_client is None:
            _http_client = openai.DefaultHttpxClient()
        return _http_client


class OpenAIClient:
    def __init__(self, model: str, base_url: str | None = None) -> None:
        self.model = model
        self.label = model
        api_key = os.environ.get("OPENAI_API_KEY") or "not-needed"
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, http_client=shared_http_client()
        )

    def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], timeout_s: float
    ) -> LLMReply:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if tools:
            body["tools"] = tools
        try:
            # The same request `chat.completions.create` sends, without its per-message type
            # walk: our messages are already plain JSON, and for a long run (thousands of
            # messages) that walk costs seconds of CPU before the request leaves.
            response = self._client.post(
                "/chat/completions",
                body=body,
                cast_to=ChatCompletion,
                options={"timeout": timeout_s},
            )
        except openai.APITimeoutError:
            raise TransientLLMError(f"timed out after {timeout_s:g}s") from None
        except openai.APIConnectionError as exc:
            raise TransientLLMError(f"connection error: {exc.__cause__ or exc}") from None
        except openai.APIStatusError as exc:
            message = f"HTTP {exc.status_code}: {_server_message(exc)}"
            if exc.status_code == 429 or exc.status_code >= 500 or exc.status_code == 408:
                raise TransientLLMError(message, _retry_after(exc)) from None
            raise PermanentLLMError(message) from None
        except openai.OpenAIError as exc:
            raise TransientLLMError(f"malformed reply: {exc}") from None
        except ValueError as exc:  # a 200 whose body is not JSON (a proxy's error page)
            raise TransientLLMError(f"malformed reply: not JSON ({exc})") from None
        return _to_reply(response, self.model)


def _to_reply(response: Any, model: str) -> LLMReply:
    choices = getattr(response, "choices", None) or []
    if not choices:
        raise TransientLLMError("malformed reply: no choices")
    # The SDK builds the reply without validating it: any field may be missing or odd.
    message = getattr(choices[0], "message", None)
    if message is None:
        raise TransientLLMError("malformed reply: a choice without a message")
    calls: list[ToolCall] = []
    for index, call in enumerate(getattr(message, "tool_calls", None) or []):
        function = getattr(call, "function", None)
        name = getattr(function, "name", None) or ""
        arguments = getattr(function, "arguments", None)
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments) if arguments is not None else ""
        call_id = getattr(call, "id", None) or f"call_{index}"
        calls.append(ToolCall(id=str(call_id), name=str(name), arguments=arguments))
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        content = json.dumps(content)
    usage = getattr(response, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    total = int(getattr(usage, "total_tokens", 0) or (prompt + completion))
    return LLMReply(
        content=content,
        tool_calls=calls,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        model=getattr(response, "model", None) or model,
        finish_reason=getattr(choices[0], "finish_reason", None),
    )
