"""A watchdog process beside each executor: when the executor's leases go unrenewed past its
own fence (¾ of lease_s), it freezes (SIGSTOP) the processes of the executor's tool calls.

Why a separate process: an executor that is itself frozen (SIGSTOP, a stalled VM thread, a
debugger) cannot run its fence, and its shell command would go on and finish its side effect
after another executor took the run over and reported the call in doubt. The watchdog is not
part of the executor, so the command stops before the lease runs out, and it stays stopped:
the executor, once it runs again, lets those runs go and kills their commands; if it never
does, its supervisor (or the watchdog, when its pipe closes) kills them.

The executor tells it each renewal as `<began> <at>` (monotonic seconds, shared by every
process of the machine): the leases held from `began`, the executor learned it at `at`. Both
sides apply the same rule to the same numbers: a renewal learned later than the fence after
the one before it is late, and then the executor lets all its runs go. Only a renewal that
was not late lets the watchdog continue what it froze (the leases never lapsed).

A whole machine frozen at once freezes this watchdog too; on thaw it stops the calls at once
and the executor's fence kills them, but a command may run for those few milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

from tui_agent.tools.processes import call_processes_of, end_processes

# (Neither logging nor subprocess: this process stays as small as Python allows, ~11 MB.)
CHECK_S = 0.1  # past the fence: how often new call processes are looked for


def is_late(previous_began: float, at: float, fence_s: float) -> bool:
    """The one rule both sides apply: this renewal came too late to have kept the fence."""
    return at - previous_began > fence_s


def watch(owner: str, fence_s: float, began: float) -> None:
    """Freeze the calls of `owner` whenever `fence_s` passes without a renewal; continue them
    after a renewal that was not late; on EOF (the executor is gone) kill them and return."""
    frozen: set[int] = set()
    who = f"executor {owner.split('-')[0]}"
    fd = sys.stdin.fileno()
    pending = b""
    while True:
        now = time.monotonic()
        past = now > began + fence_s
        timeout = CHECK_S if past else began + fence_s - now
        readable, _, _ = select.select([fd], [], [], timeout)
        if readable:
            data = os.read(fd, 4096)
            if not data:
                killed = end_processes(lambda: call_processes_of(owner))
                if killed:
                    _say(f"{who} is gone; killed {killed} process(es) of its tool calls")
                elif frozen:
                    _say(f"{who} is gone; the process(es) of its calls ended with it")
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                new_began, at = (float(x) for x in line.split())
                late = is_late(began, at, fence_s)
                began = max(began, new_began)
                if frozen and not late:
                    _signal(frozen, signal.SIGCONT)
                    _say(
                        f"{who}: leases renewed in time after all; {len(frozen)} stopped "
                        "process(es) go on"
                    )
                frozen.clear()  # (after a late renewal the executor kills them itself)
        if time.monotonic() > began + fence_s:
            fresh = [pid for pid in call_processes_of(owner) if pid not in frozen]
            if fresh:
                _signal(fresh, signal.SIGSTOP)
                frozen.update(fresh)
                _say(
                    f"{who}: leases not renewed for {time.monotonic() - began:.1f}s (frozen "
                    f"or cut off); stopped (SIGSTOP) {len(fresh)} process(es) of its tool "
                    "calls, so that none goes on once another executor may take their runs; "
                    "they stay stopped until the executor ends them or dies"
                )


def _signal(pids: set[int] | list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _say(message: str) -> None:
    """A line in the executor's log (its stderr), in the log's format."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    line = f"{stamp},{int(now * 1000) % 1000:03d} watchdog[{os.getpid()}] WARNING {message}\n"
    os.write(2, line.encode())


def main(argv: list[str]) -> int:
    owner, fence_s, began = argv[0], float(argv[1]), float(argv[2])
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # it ends with its executor's pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(owner, fence_s, began)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
