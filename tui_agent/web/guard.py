"""What every request passes first (pure ASGI, so event streams are not buffered): the
bearer token, compared in constant time (every route but `GET /healthz`), and a limit on
the body's size. A refused request does nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tui_agent.api_token import same_token

MAX_BODY_BYTES = 1 << 20  # a goal is at most 20,000 characters; 1 MiB is far beyond any body
OPEN_PATHS = {"/healthz"}

Scope = dict[str, Any]


class _TooLarge(Exception):
    pass


class Guard:
    def __init__(self, app: Any, token: Callable[[], str]) -> None:
        self.app = app
        self._token_of = token
        self._token: str | None = None

    def token(self) -> str:
        """Read once (made at `serve`'s start; nothing changes it while it serves)."""
        if self._token is None:
            self._token = self._token_of()
        return self._token

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if not (scope["path"] in OPEN_PATHS and scope["method"] in ("GET", "HEAD")):
            given = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not same_token(value.strip(), self.token()):
                await _answer(
                    send,
                    401,
                    "a valid API token is needed: Authorization: Bearer TOKEN "
                    "(`tui-agent token` prints it)",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            await _answer(send, 413, f"the body is larger than {MAX_BODY_BYTES} bytes")
            return
        received = 0
        started = False

        async def counted_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise _TooLarge
            return message

        async def watched_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _TooLarge:
            if not started:
                await _answer(send, 413, f"the body is larger than {MAX_BODY_BYTES} bytes")


async def _answer(
    send: Any, status: int, error: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
