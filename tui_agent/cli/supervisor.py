"""`tui-agent supervisor`: start, stop and report the background supervisor, and the
internal entry points of the supervisor and executor processes."""

from __future__ import annotations

import argparse
import time

from tui_agent.cli.exit_codes import EXIT_OK
from tui_agent.cli.output import print_result
from tui_agent.domain.models import Step
from tui_agent.domain.reason import describe_call
from tui_agent.settings import Settings


def cmd_supervisor(args: argparse.Namespace, settings: Settings) -> int:
    """Given settings, not a service: `start` and `stop` must not open the store (the
    supervisor checks it itself), and `run`/`executor` become those processes."""
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
        print_result(args, {"running": True, "pid": pid}, f"supervisor {said} (pid {pid})")
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
        print_result(args, data, text)
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
    print_result(args, data, "\n".join(lines))
    return EXIT_OK
