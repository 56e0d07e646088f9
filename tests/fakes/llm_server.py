"""A real OpenAI-compatible HTTP server for tests: scripted replies and injected faults.

The reply depends on the conversation's turn (the number of assistant messages in the
request), so a resumed run gets the same answer for the same turn, and the server can count
how often each turn was requested (promise 2: a recorded reply is never requested again).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tui_agent.domain.compaction import folded


@dataclass
class Fault:
    status: int = 500
    retry_after: float | None = None
    delay_s: float = 0.0  # sleep before answering (a timeout when > the client's)
    body: str | None = None  # raw body to send instead of an error object
    message: str = "injected fault"
    # A streamed reply cut off (the connection closed) after this many content chunks.
    cut_after_chunks: int | None = None


@dataclass
class Reply:
    content: str | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, dict or raw str)
    usage: dict[str, int] | None = None  # None: computed; {} : omitted from the reply
    delay_s: float = 0.0


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # hundreds of runs connect at once in the benchmarks
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client killed mid-request (that is the point of the crash tests) is no error."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def call(name: str, args: Any) -> tuple[str, Any]:
    return (name, args)


class ScriptedLLM:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.script: list[Reply | Callable[[list[dict[str, Any]]], Reply]] = []
        self.default = Reply(content="All done.")
        self.faults: dict[int, list[Fault]] = {}
        self.random_faults: tuple[float, int] | None = None
        self.requests: list[dict[str, Any]] = []
        self.turns: Counter[int] = Counter()
        self.latency_s = 0.0
        # Streaming (a request with "stream": true): the pause before each chunk; a 400
        # that says streaming is unsupported; or a plain JSON body all the same.
        self.chunk_delay_s = 0.0
        self.refuse_stream = False
        self.ignore_stream = False
        # time.monotonic() when each turn's first content chunk was sent (benchmarks).
        self.first_chunk_at: dict[int, float] = {}
        # Called with each request's messages and turn before it is answered (the
        # multi-machine harness checks there that no recorded reply is asked for again).
        self.on_request: Callable[[list[dict[str, Any]], int], None] | None = None
        self._lock = threading.Lock()
        self._server = _Server((host, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, turn: int, *faults: Fault) -> None:
        self.faults.setdefault(turn, []).extend(faults)

    def requests_for(self, turn: int) -> int:
        with self._lock:
            return self.turns[turn]

    # ---- serving ---------------------------------------------------------------------

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes, float]:
        messages = body.get("messages", [])
        # Replies folded into a compaction's summary are turns of the conversation too.
        turn = folded(messages).replies + sum(1 for m in messages if m.get("role") == "assistant")
        if self.on_request is not None:
            self.on_request(messages, turn)
        with self._lock:
            self.requests.append({"turn": turn, "body": body, "at": time.time()})
            self.turns[turn] += 1
            pending = self.faults.get(turn)
            fault = pending.pop(0) if pending else None
        if fault is not None and fault.cut_after_chunks is None:
            if fault.body is not None:
                return 200, {}, fault.body.encode(), fault.delay_s
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            payload = {"error": {"message": fault.message, "type": "test", "code": None}}
            return fault.status, headers, json.dumps(payload).encode(), fault.delay_s
        reply = self.script[turn] if turn < len(self.script) else self.default
        if callable(reply):  # a reply computed from the conversation so far
            reply = reply(messages)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{turn}_{i}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
                for i, (name, args) in enumerate(reply.calls)
            ]
        prompt = sum(len(json.dumps(m)) for m in messages) // 4
        completion = 10 + len(reply.content or "") // 4
        data: dict[str, Any] = {
            "id": f"chatcmpl-{turn}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if reply.calls else "stop",
                }
            ],
        }
        if reply.usage is None:
            data["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        elif reply.usage:
            data["usage"] = reply.usage
        if body.get("stream") and not self.ignore_stream:
            if self.refuse_stream:
                error = {"error": {"message": "stream is not supported", "type": "test"}}
                return 400, {}, json.dumps(error).encode(), 0.0
            cut = fault.cut_after_chunks if fault is not None else None
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _stream_events(data, turn, reply.content, usage, cut)
            return 200, {"X-Stream": "1"}, events, reply.delay_s + self.latency_s  # type: ignore[return-value]
        return 200, {}, json.dumps(data).encode(), reply.delay_s + self.latency_s

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle holds the body
            # for the client's delayed ACK and every reused connection waits 40 ms.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                status, headers, payload, delay = owner._answer(body)
                if delay:
                    time.sleep(delay)
                if headers.pop("X-Stream", None):
                    self._stream(payload)  # type: ignore[arg-type]
                    return
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _stream(self, events: list[tuple[int | None, bytes | None]]) -> None:
                """Server-sent events, chunked; `None` data: close the connection there."""
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i, (turn, event) in enumerate(events):
                        if event is None:
                            self.close_connection = True
                            self.wfile.flush()
                            self.connection.shutdown(2)
                            return
                        if owner.chunk_delay_s:
                            time.sleep(owner.chunk_delay_s)
                        if turn is not None:
                            owner.first_chunk_at.setdefault(turn, time.monotonic())
                        data = b"%x\r\n%s\r\n" % (len(event), event)
                        if i == len(events) - 1:
                            # [DONE] and the body's end in one segment, as servers send them:
                            # a client that stops at [DONE] finds the connection reusable.
                            data += b"0\r\n\r\n"
                        self.wfile.write(data)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True

        return Handler


def _stream_events(
    data: dict[str, Any], turn: int, content: str | None, usage: bool, cut: int | None
) -> list[tuple[int | None, bytes | None]]:
    """The reply of `data` as chat.completion.chunk events: the content word by word, each
    tool call in two pieces, the finish reason, the usage if asked for, then [DONE]. Each
    event is paired with the turn when it carries content (the first one is timed)."""
    base = {"id": data["id"], "object": "chat.completion.chunk", "created": data["created"]}
    base["model"] = data["model"]

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        chunk = {**base, "choices": [choice], **extra}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    out: list[tuple[int | None, bytes | None]] = [(None, event({"role": "assistant"}))]
    words = (content or "").split(" ") if content else []
    for i, word in enumerate(words):
        if cut is not None and i >= cut:
            return [*out, (None, None)]
        out.append((turn, event({"content": word if i == 0 else " " + word})))
    message = data["choices"][0]["message"]
    for index, tool_call in enumerate(message.get("tool_calls") or []):
        args = tool_call["function"]["arguments"]
        half = len(args) // 2
        first = {"index": index, "id": tool_call["id"], "type": "function"}
        first["function"] = {"name": tool_call["function"]["name"], "arguments": args[:half]}
        out.append((None, event({"tool_calls": [first]})))
        rest = {"index": index, "function": {"arguments": args[half:]}}
        out.append((None, event({"tool_calls": [rest]})))
    out.append((None, event({}, data["choices"][0]["finish_reason"])))
    if usage and "usage" in data:
        chunk = {**base, "choices": [], "usage": data["usage"]}
        out.append((None, b"data: " + json.dumps(chunk).encode() + b"\n\n"))
    out.append((None, b"data: [DONE]\n\n"))
    return out
