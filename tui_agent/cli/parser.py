"""The command line's grammar: every command, its options and the checks on their values
(a bad value is one line and exit 2, before any store is opened)."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, NoReturn

from tui_agent.cli.exit_codes import EXIT_BAD_INPUT
from tui_agent.domain.models import STATUS_GROUPS, RunStatus

STATUSES = [s.value for s in RunStatus]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"tui-agent: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more days, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, not {value}")
    return value


def _supervisor_action(text: str) -> str:
    """start, stop, status or run (`executor` is internal: the supervisor starts those)."""
    if text in ("start", "stop", "status", "run", "executor"):
        return text
    raise argparse.ArgumentTypeError(f"choose start, stop, status or run, not {text!r}")


def _run_options(parser: argparse.ArgumentParser) -> None:
    """What a new run is given, by `run` and by `fork` alike."""
    parser.add_argument("--workspace", metavar="DIR")
    parser.add_argument("--model", metavar="NAME")
    parser.add_argument("--max-steps", type=_positive_int, metavar="N")
    parser.add_argument("--max-tokens", type=_positive_int, metavar="N")
    parser.add_argument("--max-wall-time", type=_positive_float, metavar="S")
    parser.add_argument(
        "--max-context-tokens",
        type=_positive_int,
        metavar="N",
        help="what one model request may send; older turns are compacted to stay under it",
    )
    parser.add_argument(
        "--auto-approve",
        action="append",
        default=[],
        metavar="RISK",
        choices=["read_only", "write_local", "external_action"],
        help="run tools of this risk without asking (read_only, write_local or "
        "external_action; repeatable); the rest wait for your approval",
    )
    parser.add_argument(
        "--sandbox",
        choices=["workspace", "workspace-net", "none"],
        help="how run_shell is confined (default: workspace, no network)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tui-agent", description="Durable AI agent runs in your terminal.")
    from tui_agent import __version__

    parser.add_argument("--version", action="version", version=f"tui-agent {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", help="start a run")
    run.add_argument("goal")
    _run_options(run)
    run.add_argument(
        "--key",
        metavar="KEY",
        help="idempotency key: while a run with this key is not final, starting it again "
        "returns that run",
    )
    run.add_argument(
        "--queue",
        metavar="NAME",
        help="only supervisors serving this queue take the run (default: default)",
    )
    run.add_argument(
        "--callback-url",
        metavar="URL",
        help="POSTed to (signed with the API token) each time the run ends or needs a person",
    )
    run.add_argument("--wait", action="store_true")
    run.add_argument("--json", action="store_true")

    ls = sub.add_parser("ls", help="list runs, newest first")
    ls.add_argument(
        "--status",
        action="append",
        choices=[*STATUSES, *STATUS_GROUPS],
        default=[],
        help="a status, or waiting (needs a person) or final, as the TUI's filter takes",
    )
    ls.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="at most N runs (default 50)"
    )
    ls.add_argument("--json", action="store_true")

    show = sub.add_parser("show", help="show one run")
    show.add_argument("run")
    show.add_argument("--json", action="store_true")

    approve = sub.add_parser("approve", help="approve the pending tool call")
    approve.add_argument("run")
    approve.add_argument(
        "--always", action="store_true", help="always allow this tool for the rest of the run"
    )
    approve.add_argument("--json", action="store_true")
    deny = sub.add_parser("deny", help="deny the pending tool call")
    deny.add_argument("run")
    deny.add_argument("--reason", metavar="TEXT")
    deny.add_argument("--json", action="store_true")

    cancel = sub.add_parser("cancel", help="cancel a run")
    cancel.add_argument("run")
    cancel.add_argument("--json", action="store_true")
    resume = sub.add_parser("resume", help="resume a paused, failed or quarantined run")
    resume.add_argument("run")
    resume.add_argument("--max-steps", type=_positive_int, metavar="N")
    resume.add_argument("--max-tokens", type=_positive_int, metavar="N")
    resume.add_argument("--max-wall-time", type=_positive_float, metavar="S")
    resume.add_argument("--max-context-tokens", type=_positive_int, metavar="N")
    resume.add_argument("--json", action="store_true")
    resolve = sub.add_parser(
        "resolve", help="decide an in-doubt tool call: retry, skip, or fail (fails the run)"
    )
    resolve.add_argument("run")
    resolve.add_argument("choice", choices=["retry", "skip", "fail"])
    resolve.add_argument("--json", action="store_true")

    say = sub.add_parser(
        "say",
        help="add a message to a run: a completed run continues with it, a running one sees "
        "it at its next model call",
    )
    say.add_argument("run")
    say.add_argument("text", help="the message (quote it)")
    say.add_argument("--json", action="store_true")

    sup = sub.add_parser("supervisor", help="manage the background supervisor")
    sup.add_argument(
        "action", metavar="ACTION", type=_supervisor_action, help="start, stop, status or run"
    )
    sup.add_argument("--json", action="store_true")
    sup.add_argument("--supervisor-pid", type=int, help=argparse.SUPPRESS)
    sup.add_argument("--standby", action="store_true", help=argparse.SUPPRESS)

    serve = sub.add_parser(
        "serve",
        help="the HTTP API (start, follow and decide runs from scripts and web pages)",
        description="Serve the HTTP API: every route but GET /healthz needs "
        "`Authorization: Bearer TOKEN` (`tui-agent token` prints it). Binds 127.0.0.1 "
        "unless --host says otherwise.",
    )
    serve.add_argument("--host", default="127.0.0.1", metavar="H")
    serve.add_argument("--port", type=_port, default=8765, metavar="P")
    serve.add_argument(
        "--keepalive",
        type=_positive_float,
        default=15.0,
        metavar="S",
        help="seconds between keep-alive comments on an idle event stream (default 15)",
    )
    mcp = sub.add_parser("mcp", help="tui-agent for MCP clients")
    mcp_sub = mcp.add_subparsers(
        dest="mcp_command", required=True, metavar="serve", parser_class=_Parser
    )
    mcp_sub.add_parser(
        "serve",
        help="an MCP server (stdio): tools to start, read and decide runs; resources "
        "state://runs and state://runs/ID",
        description="Speak MCP on stdin/stdout (for an MCP client to launch): tools "
        "start_run, get_run, approve, deny, cancel and say; resources state://runs and "
        "state://runs/ID (a run's agent state). Logs go to stderr.",
    )
    sub.add_parser(
        "token",
        help="print the HTTP API's token (made on first use, 0600 in the home)",
    )
    export = sub.add_parser(
        "export", help="the whole run: a readable transcript (md) or show --json (json)"
    )
    export.add_argument("run", metavar="RUN")
    export.add_argument("--format", choices=["md", "json"], default="md")
    fork = sub.add_parser(
        "fork",
        help="a new run that starts from step N of another (which is not changed)",
        description="Copy steps 1..N of RUN (and its state as of step N) into a new queued "
        "run. Approvals are never copied: risky calls recorded after step N are listed, and "
        "wait for your approval again if the model makes them. Files are not rolled back.",
    )
    fork.add_argument("run", metavar="RUN")
    fork.add_argument("--from-step", type=_positive_int, required=True, metavar="N")
    fork.add_argument("--goal", metavar="TEXT", help="a new goal (default: the original's)")
    _run_options(fork)
    fork.add_argument("--json", action="store_true")
    prune = sub.add_parser(
        "prune",
        help="delete old final runs (and their steps, approvals, artifacts, events)",
        description="Delete final runs (completed, failed, cancelled) last changed more than "
        "--older-than days ago (default: retention_days of config.toml), in short batches, "
        "then give the space back. A run that is not final is never pruned.",
    )
    prune.add_argument("--older-than", type=_days, metavar="DAYS")
    prune.add_argument(
        "--status", action="append", default=[], choices=["completed", "failed", "cancelled"]
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    prune.add_argument("--json", action="store_true")
    stats = sub.add_parser("stats", help="figures over every run: counts, durations, latency")
    stats.add_argument(
        "--since", type=_days, metavar="DAYS", help="only what was created in the last DAYS"
    )
    stats.add_argument("--json", action="store_true")

    store = sub.add_parser("store", help="move runs between stores")
    store_sub = store.add_subparsers(dest="action", metavar="ACTION", required=True)
    copy = store_sub.add_parser(
        "copy",
        help="copy every run into an empty store",
        description="Copy every run (steps, approvals, artifacts, events) of the current "
        "store into an empty one, in one transaction. Stop the supervisor first.",
    )
    target = copy.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--to",
        metavar="URL",
        help="sqlite:///PATH or postgresql+psycopg://USER[:PASS]@HOST:PORT/DB (never printed)",
    )
    target.add_argument(
        "--to-env",
        metavar="VAR",
        help="the URL is in this environment variable (keeps a password out of `ps` and "
        "your shell's history)",
    )
    copy.add_argument("--json", action="store_true")
    return parser


def start_request(args: argparse.Namespace, goal: str, **more: Any) -> Any:
    """A StartRequest of what `_run_options` parsed (`run` and `fork` take the same), with
    the command's own fields in `more`."""
    from tui_agent.service.api import StartRequest

    return StartRequest(
        goal=goal,
        workspace=args.workspace,
        model=args.model,
        max_steps=args.max_steps,
        max_llm_tokens=args.max_tokens,
        max_wall_time_s=args.max_wall_time,
        max_context_tokens=args.max_context_tokens,
        auto_approve=tuple(args.auto_approve),
        sandbox=args.sandbox,
        **more,
    )
