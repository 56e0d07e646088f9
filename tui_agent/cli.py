"""Composition root and command line: builds settings, store and service; one line per error."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from tui_agent.domain.compaction import compaction_line
from tui_agent.domain.errors import BadInput, TuiAgentError
from tui_agent.domain.models import STATUS_GROUPS, RunStatus, Step
from tui_agent.domain.reason import describe_call, message_fate
from tui_agent.settings import Settings, load_settings

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNKNOWN_RUN, EXIT_NEEDS_PERSON = 0, 1, 2, 3, 4
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        return _dispatch(args, settings)
    except TuiAgentError as exc:
        sys.stderr.write(f"tui-agent: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # the environment (a full or read-only disk): still one line
        where = f": {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"tui-agent: {exc.strerror or exc}{where}\n")
        return 1


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command is None:
        return _open_tui(settings)
    if args.command == "supervisor":
        return _supervisor(args, settings)
    from tui_agent.service.local import LocalService

    service = LocalService.open(settings)
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


def _supervisor(args: argparse.Namespace, settings: Settings) -> int:
    from tui_agent.settings import ensure_private_dir

    ensure_private_dir(settings.home)
    if args.action == "run":
        from tui_agent.supervisor.logs import configure_logging, rotate_logs
        from tui_agent.supervisor.main import Supervisor

        rotate_logs(settings.log_dir)
        configure_logging(settings, "supervisor")
        return Supervisor(settings).run()
    if args.action == "executor":
        from tui_agent.supervisor.executor import main as executor_main
        from tui_agent.supervisor.logs import configure_logging

        configure_logging(settings, "executor")
        return executor_main(settings, args.supervisor_pid or 0, standby=args.standby)
    from tui_agent.supervisor import spawn

    # start and stop need no database here: the supervisor opens (and checks) it itself.
    if args.action == "start":
        already = spawn.supervisor_pid(settings)
        pid = spawn.ensure_supervisor(settings)
        said = "was already running" if already and already == pid else "started"
        _say(args, {"running": True, "pid": pid}, f"supervisor {said} (pid {pid})")
        return EXIT_OK
    if args.action == "stop":
        return _stop_supervisor(args, settings)
    from tui_agent.service.local import LocalService

    service = LocalService.open(settings)
    try:
        state = service.supervisor_state()
        data = {
            "running": state.running,
            "pid": state.pid,
            "executors": state.executors,
            "other_machines": state.other_machines,
            "home": str(settings.home),
            "store": service.store_label(),
            "serves": state.serves,
            "queues": list(settings.queues),
            "callbacks_pending": service.callbacks_pending(),
        }
        where = f"home {settings.home}, store {service.store_label()}"
        if state.running and state.serves not in (None, service.store_label()):
            lines = [
                f"supervisor running (pid {state.pid}) but it serves {state.serves}, not this "
                f"shell's store {service.store_label()}: use the TUI_AGENT_DB_URL it was "
                "started with, or stop it and start it again"
            ]
        elif state.running:
            queues = ", ".join(settings.queues)
            lines = [f"supervisor running (pid {state.pid}), {where}, queues {queues}"]
            lines += [
                f"  executor {e['pid']}: {len(e['runs'])} run(s)"
                + "".join(f" {r[:8]}" for r in e["runs"])
                for e in state.executors
            ]
        else:
            lines = [f"supervisor not running, {where}"]
            waiting = service.callbacks_pending()
            if waiting:
                lines.append(
                    f"  {waiting} callback(s) wait to be delivered: `tui-agent supervisor "
                    "start` (the open TUI and `tui-agent serve` start it by themselves)"
                )
        lines += [
            f"  executor {e['pid']} on {e['node']}: {len(e['runs'])} run(s)"
            + "".join(f" {r[:8]}" for r in e["runs"])
            for e in state.other_machines
        ]
        text = "\n".join(lines)
        _say(args, data, text)
    finally:
        service.close()
    return EXIT_OK


def _stop_supervisor(args: argparse.Namespace, settings: Settings) -> int:
    """Stop it and say what the stop did to running commands (they are ended, not left)."""
    from tui_agent.service.local import LocalService
    from tui_agent.supervisor import spawn

    began = time.time()
    served = spawn.served_store(settings) or settings.store_label
    stopped = spawn.stop_supervisor(settings)
    interrupted: list[Step] = []
    ours = served == settings.store_label
    if stopped and ours and (settings.shared or settings.db_path.exists()):
        service = LocalService.open(settings)
        try:
            interrupted = service.interrupted_calls(began)
        finally:
            service.close()
    lines = [f"supervisor stopped (pid {stopped})" if stopped else "no supervisor was running"]
    if stopped and not ours:
        lines[0] += f"; it served {served}"
    lines += [
        f"interrupted run {s.run_id[:8]} step {s.seq}: {describe_call(s.tool, s.arguments)} "
        "(the model is told when the run goes on)"
        for s in interrupted
    ]
    data = {
        "running": False,
        "stopped_pid": stopped,
        "interrupted": [{"run": s.run_id, "seq": s.seq, "tool": s.tool} for s in interrupted],
    }
    _say(args, data, "\n".join(lines))
    return EXIT_OK


def _say(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        _print_json(data)
    else:
        sys.stdout.write(text + "\n")


def _age(now: float, ts: float) -> str:
    delta = max(0, int(now - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit}"
    return f"{delta}s"


def _status_line(status: str, reason: str | None) -> str:
    """`queued: waiting for …`, never `waiting_approval: waiting for approval: …`."""
    if not reason:
        return status
    if reason.startswith(status.replace("_", " ").split(" ")[0]):
        return reason
    return f"{status}: {reason}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def step_line(step: Step) -> str:
    """One line per step, for `show` and `run --wait`."""
    d = step.to_dict()
    if d["kind"] == "llm":
        calls = ", ".join(c["name"] for c in d.get("tool_calls") or [])
        text = (d.get("content") or "").replace("\n", " ")
        body = text[:70] + ("…" if len(text) > 70 else "") or ("(calls a tool)" if calls else "")
        return (
            f"#{step.seq:<4} llm   {body}"
            + (f" → {calls}" if calls else "")
            + f"  [{step.tokens} tok]"
        )
    if d["kind"] == "tool":
        result = (step.result or "").replace("\n", " ")
        return (
            f"#{step.seq:<4} tool  [{step.status.value}] "
            f"{describe_call(step.tool, step.arguments, 50)} {_cut(result, 50)}"
        )
    p = step.payload
    if d["kind"] == "user":
        return f"#{step.seq:<4} you   {_cut(' '.join(str(d.get('text')).split()), 70)}"
    if d["kind"] == "compaction":
        return f"#{step.seq:<4} ctx   {compaction_line(step)}"
    return f"#{step.seq:<4} {p.get('decision', 'decision')} {step.tool} by {p.get('by')}" + (
        f": {p['reason']}" if p.get("reason") else ""
    )


def _cmd_run(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.api import StartRequest
    from tui_agent.service.views import run_json

    run, created = service.start_run(
        StartRequest(
            goal=args.goal,
            workspace=args.workspace,
            model=args.model,
            max_steps=args.max_steps,
            max_llm_tokens=args.max_tokens,
            max_wall_time_s=args.max_wall_time,
            max_context_tokens=args.max_context_tokens,
            auto_approve=tuple(args.auto_approve),
            key=args.key,
            sandbox=args.sandbox,
            queue=args.queue,
            callback_url=args.callback_url,
        )
    )
    if not args.wait:
        if args.json:
            _print_json(run_json(service.run_view(run.id)))
        else:
            sys.stdout.write(run.id + "\n")
        return EXIT_OK
    if not args.json:
        note = "" if created else " (existing run for this key)"
        sys.stdout.write(f"{run.id}{note}\n")
        sys.stdout.flush()
    return _wait(service, run.id, quiet=args.json)


def _wait(service: Any, run_id: str, *, quiet: bool) -> int:
    from tui_agent.service.views import run_json

    last_seq = 0
    while True:
        run = service.get_run(run_id)
        if not quiet:
            for step in service.steps_since(run_id, last_seq):
                if step.status.value != "started":
                    sys.stdout.write(step_line(step) + "\n")
                    last_seq = step.seq
            sys.stdout.flush()
        if run.status.is_final or run.status.needs_person:
            break
        time.sleep(0.1)
    view = service.run_view(run_id)
    if quiet:
        _print_json(run_json(view))
    else:
        sys.stdout.write(_status_line(run.status.value, view.reason) + "\n")
        if run.result:
            sys.stdout.write(run.result + "\n")
    if run.status is RunStatus.COMPLETED:
        return EXIT_OK
    if run.status.is_final:
        return EXIT_FAILED
    return EXIT_NEEDS_PERSON


def _cmd_ls(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.views import summary_json

    statuses = [s for name in args.status for s in STATUS_GROUPS.get(name, [name])]
    runs = service.list_runs(statuses=statuses or None, limit=args.limit + 1)
    more = len(runs) > args.limit
    runs = runs[: args.limit]
    if args.json:
        _print_json([summary_json(r, service.reason(r)) for r in runs])
        return EXIT_OK
    if not runs:
        if args.status:
            sys.stdout.write(f"no runs with status {', '.join(args.status)}\n")
        else:
            sys.stdout.write("no runs yet; start one with `tui-agent run GOAL`\n")
        return EXIT_OK
    now = service.now()
    for r in runs:
        flag = "!" if r.status.needs_person else " "
        goal = r.goal.replace("\n", " ")
        sys.stdout.write(
            f"{flag} {r.id[:8]}  {r.status.value:<16} {_age(now, r.created_at):>4}  "
            f"{r.usage.llm_tokens:>7} tok  {_cut(goal, 60)}\n"
        )
    if more:
        sys.stdout.write(f"(the newest {args.limit} shown; `--limit N` shows more)\n")
    return EXIT_OK


def _cmd_show(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.views import forked_from, run_json

    view = service.run_view(service.resolve_ref(args.run))
    if args.json:
        _print_json(run_json(view))
        return EXIT_OK
    run = view.run
    b, u = run.budget, run.usage
    out = [
        f"run {run.id}  [{run.status.value}]",
        f"goal: {run.goal}",
        f"model: {run.model}   workspace: {run.workspace}",
        f"budget: steps {u.steps}/{b.max_steps}, tokens {u.llm_tokens}/{b.max_llm_tokens}, "
        f"wall {u.wall_time_s:.1f}/{b.max_wall_time_s:g}s",
    ]
    origin = forked_from(view)
    if origin:
        out.append(f"forked from run {origin['run'][:8]} at step {origin['step']}")
    if view.reason:
        out.append(f"reason: {view.reason}")
    if run.state.plan:
        out.append("plan: " + "; ".join(run.state.plan))
    out += [step_line(s) for s in view.steps]
    notable = [e for e in view.events if e.kind in ("retry", "lost", "in_doubt", "cancel")]
    if notable:  # what happened to the run between its steps (retries, recoveries, cancels)
        out.append("events:")
        out += [
            f"  {time.strftime('%H:%M:%S', time.localtime(e.created_at))} {e.message}"
            for e in notable[-20:]
        ]
    if run.result:
        out.append(f"result: {run.result}")
    sys.stdout.write("\n".join(out) + "\n")
    return EXIT_OK


def _decided(args: argparse.Namespace, approval: Any) -> int:
    _say(
        args,
        approval.to_dict(),
        f"{approval.status} {describe_call(approval.tool, approval.arguments, 60)}",
    )
    return EXIT_OK


def _cmd_approve(service: Any, args: argparse.Namespace) -> int:
    return _decided(args, service.approve(service.resolve_ref(args.run), always=args.always))


def _cmd_deny(service: Any, args: argparse.Namespace) -> int:
    return _decided(args, service.deny(service.resolve_ref(args.run), reason=args.reason))


def _changed(service: Any, args: argparse.Namespace, run: Any) -> int:
    from tui_agent.service.views import run_json

    if args.json:
        _print_json(run_json(service.run_view(run.id)))
    else:
        reason = service.reason(run)
        sys.stdout.write(f"{run.id[:8]} {_status_line(run.status.value, reason)}\n")
    return EXIT_OK


def _cmd_cancel(service: Any, args: argparse.Namespace) -> int:
    return _changed(service, args, service.cancel(service.resolve_ref(args.run)))


def _cmd_resume(service: Any, args: argparse.Namespace) -> int:
    run = service.resume(
        service.resolve_ref(args.run),
        max_steps=args.max_steps,
        max_llm_tokens=args.max_tokens,
        max_wall_time_s=args.max_wall_time,
        max_context_tokens=args.max_context_tokens,
    )
    return _changed(service, args, run)


def _cmd_resolve(service: Any, args: argparse.Namespace) -> int:
    return _changed(service, args, service.resolve(service.resolve_ref(args.run), args.choice))


def _cmd_say(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.views import run_json

    run_id = service.resolve_ref(args.run)
    was = service.get_run(run_id).status
    run, seq = service.say(run_id, args.text)
    if args.json:
        _print_json({**run_json(service.run_view(run.id)), "message_seq": seq})
        return EXIT_OK
    sys.stdout.write(f"{run.id[:8]} step {seq}: message added; {message_fate(was)}\n")
    return EXIT_OK


def _cmd_store(service: Any, args: argparse.Namespace) -> int:
    url = args.to
    if args.to_env is not None:
        url = os.environ.get(args.to_env, "")
        if not url.strip():
            raise BadInput(f"--to-env {args.to_env}: that environment variable is not set")
    report = service.copy_store_to(url)
    if args.json:
        _print_json({"copied": report.counts, "to": report.target})
    else:
        sys.stdout.write(report.line() + "\n")
        sys.stdout.write(
            "to use it: export TUI_AGENT_DB_URL=… (the URL you gave) in the shell of the app, "
            "the CLI and the supervisor\n"
        )
    return EXIT_OK


def _cmd_serve(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.web.server import serve

    service.who = f"{service.who} (HTTP)"  # decisions made over the API say so
    return serve(service, args.host, args.port, keepalive_s=args.keepalive)


def _cmd_mcp(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.mcp_server.server import serve

    service.who = f"{service.who} (MCP)"  # decisions made by an MCP client say so
    return serve(service)


def _cmd_token(service: Any, args: argparse.Namespace) -> int:
    sys.stdout.write(service.api_token() + "\n")
    return EXIT_OK


def _cmd_export(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.export import run_markdown
    from tui_agent.service.views import run_json

    view = service.run_view(service.resolve_ref(args.run))
    data = run_json(view)
    if args.format == "json":
        _print_json(data)
    else:
        sys.stdout.write(run_markdown(view, data))
    return EXIT_OK


def _cmd_fork(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.api import StartRequest
    from tui_agent.service.views import run_json

    source = service.resolve_ref(args.run)
    if args.goal is not None and not args.goal.strip():
        raise BadInput("--goal must not be empty (leave it out to keep the original's)")
    run, again = service.fork(
        source,
        args.from_step,
        StartRequest(
            goal=args.goal or "",
            workspace=args.workspace,
            model=args.model,
            max_steps=args.max_steps,
            max_llm_tokens=args.max_tokens,
            max_wall_time_s=args.max_wall_time,
            max_context_tokens=args.max_context_tokens,
            auto_approve=tuple(args.auto_approve),
            sandbox=args.sandbox,
        ),
    )
    if args.json:
        data = run_json(service.run_view(run.id))  # with its forked_from
        data["will_ask_again"] = again
        _print_json(data)
        return EXIT_OK
    lines = [run.id, f"forked from run {source[:8]} at step {args.from_step}"]
    if again:
        lines.append("if the model makes these calls again, they wait for your approval again:")
        lines += [
            f"  step {a['seq']}: {describe_call(a['tool'], json.dumps(a['arguments']))} "
            f"[{a['risk']}]"
            for a in again
        ]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _cmd_prune(service: Any, args: argparse.Namespace) -> int:
    report = service.prune(
        older_than_days=args.older_than, statuses=args.status, dry_run=args.dry_run
    )
    if args.json:
        _print_json(report)
    else:
        verb = "would delete" if args.dry_run else "deleted"
        sys.stdout.write(
            f"{verb} {report['runs']} run(s) with {report['steps']} step(s); "
            + (
                f"about {report['bytes_freed']:,} bytes of rows to free (what the database "
                "file gives back is measured when it is done)\n"
                if args.dry_run
                else f"{report['bytes_freed']:,} bytes freed\n"
            )
        )
    return EXIT_OK


def _cmd_stats(service: Any, args: argparse.Namespace) -> int:
    data = service.stats(args.since)
    if args.json:
        _print_json(data)
        return EXIT_OK
    runs = ", ".join(f"{n} {s}" for s, n in sorted(data["runs"].items())) or "none"
    steps = ", ".join(f"{n} {k}" for k, n in sorted(data["steps"].items())) or "none"

    def spread(d: dict[str, float | None]) -> str:
        if d["p50"] is None:
            return "-"
        return f"p50 {d['p50']:.3g}s, p95 {d['p95']:.3g}s, max {d['max']:.3g}s"

    a = data["approvals"]
    decide = a["median_time_to_decide_s"]
    lines = [
        f"runs:          {runs}",
        f"steps:         {steps}",
        f"llm tokens:    {data['llm_tokens']:,}",
        f"run duration:  {spread(data['run_duration_s'])}",
        f"llm latency:   {spread(data['llm_latency_s'])}",
        f"retries:       {data['retries']}",
        f"approvals:     {a['pending']} pending, {a['approved']} approved, {a['denied']} denied"
        + (f"; median time to decide {decide:.3g}s" if decide is not None else ""),
        "callbacks:     {pending} pending, {delivered} delivered, {failed} failed".format(
            **data["callbacks"]
        ),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


_COMMANDS = {
    "serve": _cmd_serve,
    "mcp": _cmd_mcp,
    "token": _cmd_token,
    "stats": _cmd_stats,
    "export": _cmd_export,
    "prune": _cmd_prune,
    "fork": _cmd_fork,
    "run": _cmd_run,
    "ls": _cmd_ls,
    "show": _cmd_show,
    "approve": _cmd_approve,
    "deny": _cmd_deny,
    "cancel": _cmd_cancel,
    "resume": _cmd_resume,
    "resolve": _cmd_resolve,
    "say": _cmd_say,
    "store": _cmd_store,
}
