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
        if fault is not None:
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

        return Handler
