"""`tui-agent run GOAL` from a script: CPU time of the whole process (start a run and return
its id) against `python -c pass` and `tui-agent ls`, measured in the same run.

A supervisor is already running (as it is for a script starting many runs), so what is
measured is the command itself: import, open the store, validate, one insert."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.common import bench_env, emit, median, scratch


def _cpu(argv: list[str], env: dict[str, str], cwd: str) -> float:
    """User + system CPU seconds of one child process (what it costs the machine)."""
    before = os.times()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    after = os.times()
    return (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )


def run(*, quick: bool = False) -> None:
    home = scratch("cli-run")
    ws = scratch("cli-run-ws")
    env = bench_env(home / "home")
    tui = [sys.executable, "-m", "tui_agent"]
    subprocess.run([*tui, "supervisor", "start"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        rounds = 5 if quick else 20
        floor, ls, start = [], [], []
        for i in range(rounds):
            floor.append(_cpu([sys.executable, "-c", "pass"], env, str(ws)))
            ls.append(_cpu([*tui, "ls"], env, str(ws)))
            start.append(_cpu([*tui, "run", f"bench {i}", "--workspace", str(ws)], env, str(ws)))
            time.sleep(0.05)
        value = median(start)
        emit(
            "cli_run",
            value,
            "s CPU",
            median(floor),
            "about what `ls` costs",
            value <= 1.3 * median(ls),
            ls_s=median(ls),
            ratio_to_ls=value / median(ls),
        )
    finally:
        subprocess.run([*tui, "supervisor", "stop"], env=env, stdout=subprocess.DEVNULL)
