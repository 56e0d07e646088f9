"""Chat Completions through the `openai` package: OpenAI and every compatible local server.

The client is built with max_retries=0: the engine retries with tenacity so that every
attempt is visible and recorded. The API key is read from the environment here and nowhere
else; it is never stored or logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx2  # openai's own HTTP layer: a stream cut while it is read raises its errors
import openai
from openai import Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tui_agent.domain.models import ToolCall
from tui_agent.llm.base import LLMReply, OnText, PermanentLLMError, TransientLLMError


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


class _NoStream(Exception):
    """The server refused `stream=True` (a 400 that says so): ask it plainly."""


@contextlib.contextmanager
def _llm_errors(timeout_s: float) -> Iterator[None]:
    """The SDK's and the transport's errors as the engine's two kinds (a stream cut half
    way is transient: asked again, nothing of it recorded)."""
    try:
        yield
    except (openai.APITimeoutError, httpx2.TimeoutException):
        raise TransientLLMError(f"timed out after {timeout_s:g}s") from None
    except openai.APIConnectionError as exc:
        raise TransientLLMError(f"connection error: {exc.__cause__ or exc}") from None
    except httpx2.HTTPError as exc:
        raise TransientLLMError(f"connection error: the reply was cut off ({exc})") from None
    except openai.APIStatusError as exc:
        message = f"HTTP {exc.status_code}: {_server_message(exc)}"
        if exc.status_code == 429 or exc.status_code >= 500 or exc.status_code == 408:
            raise TransientLLMError(message, _retry_after(exc)) from None
        raise PermanentLLMError(message) from None
    except openai.OpenAIError as exc:
        raise TransientLLMError(f"malformed reply: {exc}") from None
    except ValueError as exc:  # a 200 whose body is not JSON (a proxy's error page)
        raise TransientLLMError(f"malformed reply: not JSON ({exc})") from None


class OpenAIClient:
    def __init__(self, model: str, base_url: str | None = None) -> None:
        self.model = model
        self.label = model
        api_key = os.environ.get("OPENAI_API_KEY") or "not-needed"
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, http_client=shared_http_client()
        )
        # False once the server has shown it does not stream: later replies are asked plainly.
        self.streams = True

    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        timeout_s: float,
        on_text: OnText | None = None,
    ) -> LLMReply:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if tools:
            body["tools"] = tools
        if on_text is not None and self.streams:
            try:
                return self._streamed(body, timeout_s, on_text)
            except _NoStream:
                self.streams = False
        with _llm_errors(timeout_s):
            # The same request `chat.completions.create` sends, without its per-message type
            # walk: our messages are already plain JSON, and for a long run (thousands of
            # messages) that walk costs seconds of CPU before the request leaves.
            response = self._client.post(
                "/chat/completions",
                body=body,
                cast_to=ChatCompletion,
                options={"timeout": timeout_s},
            )
        return _to_reply(response, self.model)

    def _streamed(self, body: dict[str, Any], timeout_s: float, on_text: OnText) -> LLMReply:
        """Ask with `stream=True` and assemble the chunks into the reply a plain request
        returns; a server that answers with one JSON body instead is taken at its word."""
        deadline = time.monotonic() + timeout_s
        streaming = {**body, "stream": True, "stream_options": {"include_usage": True}}
        with _llm_errors(timeout_s):
            try:
                stream = self._client.post(
                    "/chat/completions",
                    body=streaming,
                    cast_to=ChatCompletion,
                    options={"timeout": timeout_s},
                    stream=True,
                    stream_cls=Stream[ChatCompletionChunk],
                )
            except openai.APIStatusError as exc:
                if exc.status_code == 400 and "stream" in _server_message(exc).lower():
                    raise _NoStream from None
                raise
            with stream:
                kind = stream.response.headers.get("content-type", "")
                if "text/event-stream" not in kind:
                    data = json.loads(stream.response.read())
                    if not isinstance(data, dict):
                        raise ValueError("not a JSON object")
                    reply = _to_reply(ChatCompletion.construct(**data), self.model)
                    self.streams = False  # (a proxy's error page says nothing of that)
                    return reply
                return _assembled(stream, self.model, on_text, deadline, timeout_s)


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


def _assembled(
    chunks: Iterable[Any], model: str, on_text: OnText, deadline: float, timeout_s: float
) -> LLMReply:
    """The streamed chunks as one reply: content and tool-call deltas joined, the usage of
    the final chunk (0 when the server sends none). A stream that ends before a
    `finish_reason` was cut off: transient, asked again."""
    content: str | None = None
    calls: dict[int, dict[str, str]] = {}
    usage: Any = None
    finish: str | None = None
    for chunk in chunks:
        if time.monotonic() > deadline:
            raise TransientLLMError(f"timed out after {timeout_s:g}s")
        usage = getattr(chunk, "usage", None) or usage
        model = getattr(chunk, "model", None) or model
        for choice in getattr(chunk, "choices", None) or []:
            if (getattr(choice, "index", 0) or 0) != 0:
                continue
            finish = getattr(choice, "finish_reason", None) or finish
            delta = getattr(choice, "delta", None)
            if delta is None:
                continue
            text = getattr(delta, "content", None)
            if isinstance(text, str) and text:
                content = (content or "") + text
            for call in getattr(delta, "tool_calls", None) or []:
                index = getattr(call, "index", None)
                entry = calls.setdefault(
                    index if isinstance(index, int) else len(calls),
                    {"id": "", "name": "", "arguments": ""},
                )
                entry["id"] = entry["id"] or str(getattr(call, "id", None) or "")
                function = getattr(call, "function", None)
                entry["name"] = entry["name"] or str(getattr(function, "name", None) or "")
                entry["arguments"] += str(getattr(function, "arguments", None) or "")
        if content is not None:
            on_text(content)  # (the publisher drops what comes too fast)
    if finish is None:
        raise TransientLLMError("connection error: the reply was cut off before its end")
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    total = int(getattr(usage, "total_tokens", 0) or (prompt + completion))
    return LLMReply(
        content=content,
        tool_calls=[
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"])
            for i, c in ((i, calls[i]) for i in sorted(calls))
        ],
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        model=model,
        finish_reason=finish,
    )
