"""The commands on one run: start it (and follow it), list, show, decide and tell it."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from tui_agent.cli.exit_codes import EXIT_FAILED, EXIT_NEEDS_PERSON, EXIT_OK
from tui_agent.cli.output import (
    cut,
    print_changed,
    print_decided,
    print_json,
    short_age,
    status_line,
    step_line,
)
from tui_agent.cli.parser import start_request
from tui_agent.domain.models import STATUS_GROUPS, RunStatus
from tui_agent.domain.reason import message_fate


def cmd_run(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.views import run_json

    run, created = service.start_run(
        start_request(
            args, args.goal, key=args.key, queue=args.queue, callback_url=args.callback_url
        )
    )
    if not args.wait:
        if args.json:
            print_json(run_json(service.run_view(run.id)))
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
        print_json(run_json(view))
    else:
        sys.stdout.write(status_line(run.status.value, view.reason) + "\n")
        if run.result:
            sys.stdout.write(run.result + "\n")
    if run.status is RunStatus.COMPLETED:
        return EXIT_OK
    if run.status.is_final:
        return EXIT_FAILED
    return EXIT_NEEDS_PERSON


def cmd_ls(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.views import summary_json

    statuses = [s for name in args.status for s in STATUS_GROUPS.get(name, [name])]
    runs = service.list_runs(statuses=statuses or None, limit=args.limit + 1)
    more = len(runs) > args.limit
    runs = runs[: args.limit]
    if args.json:
        print_json([summary_json(r, service.reason(r)) for r in runs])
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
            f"{flag} {r.id[:8]}  {r.status.value:<16} {short_age(now, r.created_at):>4}  "
            f"{r.usage.llm_tokens:>7} tok  {cut(goal, 60)}\n"
        )
    if more:
        sys.stdout.write(f"(the newest {args.limit} shown; `--limit N` shows more)\n")
    return EXIT_OK


def cmd_show(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.views import forked_from, run_json

    view = service.run_view(service.resolve_ref(args.run))
    if args.json:
        print_json(run_json(view))
        return EXIT_OK
    run = view.run
    b, u = run.budget, run.usage
    out = [
        f"run {run.id}  [{run.status.value}]",
        f"goal: {run.goal}",
        f"model: {run.model}   workspace: {run.workspace}",
        f"budget: steps {u.steps}/{b.max_steps}, tokens {u.llm_tokens}/{b.max_llm_tokens}, "
        f"wall {u.wall_time_s:.1f}/{b.max_wall_time_s:g}s"
        + (
            f", context at most {b.max_context_tokens:,} tokens a request"
            if b.max_context_tokens
            else ""
        ),
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


def cmd_approve(service: Any, args: argparse.Namespace) -> int:
    return print_decided(args, service.approve(service.resolve_ref(args.run), always=args.always))


def cmd_deny(service: Any, args: argparse.Namespace) -> int:
    return print_decided(args, service.deny(service.resolve_ref(args.run), reason=args.reason))


def cmd_cancel(service: Any, args: argparse.Namespace) -> int:
    return print_changed(service, args, service.cancel(service.resolve_ref(args.run)))


def cmd_resume(service: Any, args: argparse.Namespace) -> int:
    run = service.resume(
        service.resolve_ref(args.run),
        max_steps=args.max_steps,
        max_llm_tokens=args.max_tokens,
        max_wall_time_s=args.max_wall_time,
        max_context_tokens=args.max_context_tokens,
    )
    return print_changed(service, args, run)


def cmd_resolve(service: Any, args: argparse.Namespace) -> int:
    return print_changed(service, args, service.resolve(service.resolve_ref(args.run), args.choice))


def cmd_say(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.views import run_json

    run_id = service.resolve_ref(args.run)
    was = service.get_run(run_id).status
    run, seq = service.say(run_id, args.text)
    if args.json:
        print_json({**run_json(service.run_view(run.id)), "message_seq": seq})
        return EXIT_OK
    sys.stdout.write(f"{run.id[:8]} step {seq}: message added; {message_fate(was)}\n")
    return EXIT_OK
