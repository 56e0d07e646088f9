"""200 runs at once against the scripted model server with 0.5 s latency: achieved step
throughput over the ideal, and the total RSS of the supervisor and its executors."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.common import bench_env, emit, scratch, seed_run
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tui_agent.store.run_store import open_store

LATENCY_S = 0.5


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(quick: bool) -> None:
    runs = 200
    turns = 4 if quick else 8  # LLM turns per run; each but the last asks for one tool call
    home = scratch("concurrency")
    home.chmod(0o700)
    (home / "config.toml").write_text(f"max_concurrent_runs = {runs}\nidle_exit_s = 60\n")
    llm = ScriptedLLM().start()
    llm.latency_s = LATENCY_S
    llm.script = [Reply(f"turn {i}", [call("list_dir", {})]) for i in range(turns - 1)]
    llm.default = Reply("done")
    env = bench_env(home, OPENAI_BASE_URL=llm.base_url)
    subprocess.run(
        [sys.executable, "-m", "tui_agent", "supervisor", "start"],
        env=env,
        check=True,
        capture_output=True,
    )
    sup = int((home / "supervisor.lock").read_text())
    time.sleep(1.5)  # let the warm standby come up
    store = open_store(home / "tui-agent.db")
    start = time.perf_counter()
    for i in range(runs):
        seed_run(store, f"run {i}", home, model="scripted", base_url=llm.base_url)
    while store.count_runs(statuses=["completed"]) < runs:
        failed = store.count_runs(statuses=["failed", "paused", "needs_attention"])
        if failed:
            raise RuntimeError(f"{failed} runs did not complete")
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    steps = runs * (2 * turns - 1)
    ideal = turns * LATENCY_S
    ratio = ideal / elapsed
    pids = [sup] + [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-f", f"supervisor-pid {sup}"], capture_output=True, text=True
        ).stdout.split()
    ]
    rss = sum(_rss_mb(p) for p in pids)
    store.close()
    subprocess.run(
        [sys.executable, "-m", "tui_agent", "supervisor", "stop"], env=env, capture_output=True
    )
    llm.stop()
    emit(
        "concurrency",
        ratio,
        "x",
        1.0,
        ">= 0.9; <= 300 MB",
        ratio >= 0.9 and rss <= 300,
        elapsed_s=elapsed,
        ideal_s=ideal,
        steps=steps,
        steps_per_s=steps / elapsed,
        total_rss_mb=rss,
        processes=len(pids),
        runs=runs,
    )
    os.environ.pop("_", None)


if __name__ == "__main__":
    run(quick=True)
