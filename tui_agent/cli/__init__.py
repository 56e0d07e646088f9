"""Composition root and command line: builds settings, store and service; one line per error.

`main` parses (`parser.py`), then hands the service to a command of `runs.py`,
`operations.py`, `servers.py` or `supervisor.py`; those print through `output.py`. Heavy
modules (Textual, the ORM, the servers) are imported inside the commands that need them."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tui_agent.cli import operations, runs, servers
from tui_agent.cli.exit_codes import EXIT_OK
from tui_agent.cli.output import step_line
from tui_agent.cli.parser import build_parser
from tui_agent.cli.supervisor import cmd_supervisor
from tui_agent.domain.errors import BadInput, TuiAgentError
from tui_agent.settings import ConfigError, Settings, load_settings
from tui_agent.supervisor.spawn import tell_starter

__all__ = ["build_parser", "main", "step_line"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings, config_problem = _settings_for(args)
        return _dispatch(args, settings, config_problem)
    except TuiAgentError as exc:
        sys.stderr.write(f"tui-agent: {exc}\n")
        if args.command == "supervisor" and args.action == "run":
            tell_starter(f"error: {exc}")  # a TUI or CLI that started it says why at once
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # the environment (a full or read-only disk): still one line
        where = f": {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"tui-agent: {exc.strerror or exc}{where}\n")
        return 1


# What a broken config.toml does not lock a person out of: reading the history (the store's
# place comes from the environment, never from the file) and stopping or asking after the
# running supervisor.
_DESPITE_CONFIG = {"ls", "show", "export", "stats", "token", "supervisor stop", "supervisor status"}


def _settings_for(args: argparse.Namespace) -> tuple[Settings, str | None]:
    """A broken config.toml refuses every command that starts or changes runs (what they
    do depends on it); the others say it and go on with the defaults (and return it: no
    supervisor can start until it is fixed, which a queued run's reason says)."""
    try:
        return load_settings(), None
    except ConfigError as exc:
        command = args.command
        if command == "supervisor":
            command = f"supervisor {args.action}"
        if command not in _DESPITE_CONFIG:
            raise
        settings = load_settings(read_config=False)  # (an unusable TUI_AGENT_DB_URL: refused)
        sys.stderr.write(
            f"tui-agent: {exc} (`{command}` goes on without config.toml; runs cannot start "
            "until it is fixed)\n"
        )
        return settings, str(exc)


def _dispatch(args: argparse.Namespace, settings: Settings, config_problem: str | None) -> int:
    if args.command is None:
        return _open_tui(settings)
    if args.command == "supervisor":
        return cmd_supervisor(args, settings)
    from tui_agent.service.local import LocalService

    service = LocalService.open(settings)
    if config_problem is not None:  # what a queued run waits for, rather than "start one"
        service.supervisor_problem = f"the supervisor cannot run: {config_problem}"
    try:
        code = _COMMANDS[args.command](service, args)
        if service.supervisor_problem:  # the change is saved; say why nothing runs it yet
            sys.stderr.write(f"tui-agent: saved, but {service.supervisor_problem}\n")
        return code
    finally:
        service.close()


def _open_tui(settings: Settings) -> int:
    """Build the service here (the composition root) and hand it to the app."""
    from tui_agent.ui.gc_policy import hold_until_first_frame

    if not os.environ.get("TEXTUAL_DRIVER") and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BadInput(
            "the app needs a terminal (stdin and stdout are not one); "
            "use the commands instead, e.g. `tui-agent ls`"
        )
    hold_until_first_frame()
    from tui_agent.llm.factory import default_model
    from tui_agent.service.local import LocalService
    from tui_agent.ui.app import AgentApp

    service = LocalService.open(settings)
    try:
        model = default_model()
        demo_workspace: str | None = None
        if model == "demo":  # the demo works in its own scratch folder, never in the cwd
            with contextlib.suppress(TuiAgentError):  # a read-only home: the form says cwd
                demo_workspace = str(service.demo_workspace())
        app = AgentApp(
            service,
            ui_state_path=settings.ui_state_path,
            default_model=model,
            default_workspace=demo_workspace,
        )
        app.run()
    finally:
        service.close()
    return app.return_code or EXIT_OK  # a crash (its traceback shown by Textual) is non-zero


# Every command but the TUI and `supervisor` (which open no service, or their own): each is
# given the opened service and the parsed arguments, and returns the exit code.
_COMMANDS: dict[str, Callable[[Any, argparse.Namespace], int]] = {
    "serve": servers.cmd_serve,
    "mcp": servers.cmd_mcp,
    "token": servers.cmd_token,
    "stats": operations.cmd_stats,
    "export": operations.cmd_export,
    "prune": operations.cmd_prune,
    "fork": operations.cmd_fork,
    "run": runs.cmd_run,
    "ls": runs.cmd_ls,
    "show": runs.cmd_show,
    "approve": runs.cmd_approve,
    "deny": runs.cmd_deny,
    "cancel": runs.cmd_cancel,
    "resume": runs.cmd_resume,
    "resolve": runs.cmd_resolve,
    "say": runs.cmd_say,
    "store": operations.cmd_store,
}
