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
        if scope["path"] not in OPEN_PATHS:
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
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # A chunked body has no length to check: read it here (at most the limit),
            # then hand it on whole.
            body = await _read_body(receive)
            if body is None:
                await _answer(send, 413, f"the body is larger than {MAX_BODY_BYTES} bytes")
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


async def _read_body(receive: Any) -> bytes | None:
    """The whole body, or None when it grows past the limit."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts)  # the client left; the app sees an empty body
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


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
