"""`tui-agent serve`: the API under uvicorn, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import gc
import logging
import socket
import sys

from tui_agent.domain.errors import BadInput
from tui_agent.service.api import AgentService

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def serve(service: AgentService, host: str, port: int, *, keepalive_s: float = 15.0) -> int:
    import uvicorn

    from tui_agent.web.app import create_app

    sock = _listen(host, port)  # a port in use is one line, before anything starts

    service.api_token()  # made now (0600), so `tui-agent token` and the server agree
    app = create_app(service, keepalive_s=keepalive_s)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=True,  # method, path and status: never a header, so never the token
        server_header=False,
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    port = sock.getsockname()[1]
    where = f"[{host}]" if ":" in host else host
    sys.stderr.write(
        f"tui-agent: serving {service.store_label()} on http://{where}:{port} "
        "(token: `tui-agent token`; Ctrl+C stops)\n"
    )
    sys.stderr.flush()
    ours = logging.getLogger("tui_agent.web")  # the keeper's lines, beside uvicorn's
    ours.setLevel(logging.INFO)
    if not ours.handlers:  # (without one, Python shows warnings only)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        ours.addHandler(handler)
        ours.propagate = False
    logging.getLogger("uvicorn.access").addFilter(_no_query)
    # What is loaded now lives as long as the server: full GC passes need not walk it
    # again at every few hundred requests (as the executor does).
    gc.freeze()
    server.run(sockets=[sock])
    return 0 if server.started else 1


def _no_query(record: logging.LogRecord) -> bool:
    """The access log keeps the path, never the query (a token someone put there)."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
        path = args[2]
        if "?" in path:
            record.args = (*args[:2], path.split("?", 1)[0] + "?…", *args[3:])
    return True


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BadInput(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock
