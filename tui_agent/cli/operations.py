"""The commands on whole runs and the store: fork, export, prune, stats, store copy."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from tui_agent.cli.exit_codes import EXIT_OK
from tui_agent.cli.output import print_json
from tui_agent.cli.parser import start_request
from tui_agent.domain.errors import BadInput
from tui_agent.domain.reason import describe_call


def cmd_fork(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.views import run_json

    source = service.resolve_ref(args.run)
    if args.goal is not None and not args.goal.strip():
        raise BadInput("--goal must not be empty (leave it out to keep the original's)")
    run, again = service.fork(
        source,
        args.from_step,
        start_request(args, args.goal or ""),
    )
    if args.json:
        data = run_json(service.run_view(run.id))  # with its forked_from
        data["will_ask_again"] = again
        print_json(data)
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


def cmd_export(service: Any, args: argparse.Namespace) -> int:
    from tui_agent.service.export import run_markdown
    from tui_agent.service.views import run_json

    view = service.run_view(service.resolve_ref(args.run))
    data = run_json(view)
    if args.format == "json":
        print_json(data)
    else:
        sys.stdout.write(run_markdown(view, data))
    return EXIT_OK


def cmd_prune(service: Any, args: argparse.Namespace) -> int:
    report = service.prune(
        older_than_days=args.older_than, statuses=args.status, dry_run=args.dry_run
    )
    if args.json:
        print_json(report)
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


def cmd_stats(service: Any, args: argparse.Namespace) -> int:
    data = service.stats(args.since)
    if args.json:
        print_json(data)
        return EXIT_OK
    runs = ", ".join(f"{n} {s}" for s, n in sorted(data["runs"].items())) or "none"
    steps = ", ".join(f"{n} {k}" for k, n in sorted(data["steps"].items())) or "none"

    def spread(d: dict[str, float | None]) -> str:
        if d["p50"] is None:
            return "-"
        return f"p50 {d['p50']:.3g}s, p95 {d['p95']:.3g}s, max {d['max']:.3g}s of {d['n']}"

    a = data["approvals"]
    decide = a["median_time_to_decide_s"]
    lines = [
        f"runs:          {runs}",
        f"steps:         {steps}",
        f"llm tokens:    {data['llm_tokens']:,}",
        f"run duration:  {spread(data['run_duration_s'])} final runs",
        f"llm latency:   {spread(data['llm_latency_s'])} replies (those a fork copied are "
        "measured once, in the run that made them)",
        f"retries:       {data['retries']}",
        f"approvals:     {a['pending']} pending, {a['approved']} approved, {a['denied']} denied"
        + (f"; median time to decide {decide:.3g}s" if decide is not None else ""),
        "callbacks:     {pending} pending, {delivered} delivered, {failed} failed".format(
            **data["callbacks"]
        ),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def cmd_store(service: Any, args: argparse.Namespace) -> int:
    url = args.to
    if args.to_env is not None:
        url = os.environ.get(args.to_env, "")
        if not url.strip():
            raise BadInput(f"--to-env {args.to_env}: that environment variable is not set")
    report = service.copy_store_to(url)
    if args.json:
        print_json({"copied": report.counts, "to": report.target})
    else:
        sys.stdout.write(report.line() + "\n")
        sys.stdout.write(
            "to use it: export TUI_AGENT_DB_URL=… (the URL you gave) in the shell of the app, "
            "the CLI and the supervisor\n"
        )
    return EXIT_OK
