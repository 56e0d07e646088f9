"""A real MCP server over stdio for tests (FastMCP): `add`, a side effect on a ledger file,
a crash in the middle of a call, and a slow call.

    python mcp_calc_server.py LEDGER [--http PORT]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from mcp.server.fastmcp import FastMCP

LEDGER = Path(sys.argv[1])
server = FastMCP("calc")


def _note(line: str) -> None:
    with LEDGER.open("a") as fh:
        fh.write(line + "\n")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
def append(text: str) -> str:
    """Append a line to the ledger (a side effect)."""
    _note(text)
    return f"appended {text!r}"


@server.tool()
def crash() -> str:
    """Die in the middle of the call: the caller cannot know what happened."""
    _note(f"crash {os.getpid()}")
    os._exit(3)


@server.tool()
def slow(seconds: float) -> str:
    """Write start, sleep, write end."""
    _note(f"start {os.getpid()}")
    time.sleep(seconds)
    _note("end")
    return "slept"


@server.tool()
def fails() -> str:
    """A tool error (the server answers; nothing is in doubt)."""
    raise ValueError("no such thing")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[2] == "--http":  # streamable HTTP on 127.0.0.1:PORT/mcp
        server.settings.port = int(sys.argv[3])
        server.settings.log_level = "WARNING"
        server.run("streamable-http")
    else:
        server.run("stdio")
