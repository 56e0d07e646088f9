"""The long-lived front ends over the service: the HTTP API, the MCP server, and the API's
token."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tui_agent.cli.exit_codes import EXIT_OK


def cmd_serve(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.web.server import serve

    service.who = f"{service.who} (HTTP)"  # decisions made over the API say so
    return serve(service, args.host, args.port, keepalive_s=args.keepalive)


def cmd_mcp(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.mcp_server.server import serve

    service.who = f"{service.who} (MCP)"  # decisions made by an MCP client say so
    return serve(service)


def cmd_token(service: Any, args: argparse.Namespace) -> int:
    sys.stdout.write(service.api_token() + "\n")
    return EXIT_OK
