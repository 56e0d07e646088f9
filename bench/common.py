"""Output format and small statistics shared by the benchmarks."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tui_agent.store.run_store import RunStore

DATA = Path(__file__).resolve().parent / ".data"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def emit(
    name: str, value: float, unit: str, floor: float, target: str, ok: bool, **extra: Any
) -> dict[str, Any]:
    """One JSON object per line: the contract of `python -m bench`."""
    row: dict[str, Any] = {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "floor": round(floor, 4),
        "ratio": round(value / floor, 3) if floor else None,
        "target": target,
        "ok": bool(ok),
    }
    row.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in extra.items()})
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    return row


def settle(*, busy: float = 0.15, window_s: float = 0.5, most_s: float = 20.0) -> float:
    """Wait until the machine is quiet (all its CPUs together busy less than `busy` of one
    over `window_s`), at most `most_s`; returns the seconds waited. A latency measured
    while a supervisor the first request started is still importing its executors
    measures that start, not the request (the steady state is what a client meets)."""
    import time

    def busy_ticks() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        return sum(fields) - fields[3] - fields[4], sum(fields)  # all but idle and iowait

    began = time.monotonic()
    cpus = os.cpu_count() or 1
    while time.monotonic() - began < most_s:
        b0, t0 = busy_ticks()
        time.sleep(window_s)
        b1, t1 = busy_ticks()
        if t1 > t0 and (b1 - b0) / (t1 - t0) * cpus < busy:
            break
    return time.monotonic() - began


def scratch(prefix: str) -> Path:
    """A temporary directory, removed when the benchmark process exits."""
    path = Path(tempfile.mkdtemp(prefix=f"tui-agent-bench-{prefix}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def bench_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TUI_AGENT_"))}
    env.update(TUI_AGENT_HOME=str(home), TUI_AGENT_DEMO_DELAY="0", **extra)
    return env


def seed_run(
    store: RunStore,
    goal: str,
    workspace: Path,
    *,
    model: str = "demo",
    base_url: str | None = None,
    max_steps: int = 50,
    max_context_tokens: int | None = None,
) -> str:
    """A queued run with default policy, as the benchmarks need one."""
    from tui_agent.domain.models import Budget, Policy, RunSpec

    spec = RunSpec(
        goal=goal,
        workspace=str(workspace),
        model=model,
        base_url=base_url,
        budget=Budget(max_steps=max_steps, max_context_tokens=max_context_tokens),
        policy=Policy(),
    )
    run, _ = store.create_run(spec)
    return run.id


@contextmanager
def pg_cluster(name: str) -> Iterator[Any]:
    """A throwaway PostgreSQL server of the machine's binaries for the `name` benchmark
    (as the tests start one), or None when PostgreSQL is not installed (said, skipped)."""
    from tests.pg import Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        print(f"# {name}: no PostgreSQL binaries; skipped", flush=True)
        yield None
        return
    cluster = Cluster(bindir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def api_server(home: Path, url: str | None = None) -> Iterator[tuple[str, str]]:
    """`tui-agent serve` of `home` (its store: the home's file, or `url`) on a free port;
    yields (base URL, token). Its supervisor serves no queue the benchmarks use."""
    import re
    import signal
    import subprocess
    import time

    import httpx

    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / "config.toml").write_text('queues = ["not-benchmarked"]\n')
    extra = {"TUI_AGENT_DB_URL": url} if url else {}
    env = bench_env(home, **extra)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui_agent", "serve", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        found = re.search(r"http://([\d.]+):(\d+)", proc.stderr.readline())
        assert found, "serve did not say where it listens"
        base = f"http://{found.group(1)}:{found.group(2)}"
        token = (home / "api-token").read_text().strip()
        for _ in range(200):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield base, token
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run(
            [sys.executable, "-m", "tui_agent", "supervisor", "stop"],
            env=env,
            capture_output=True,
            timeout=30,
        )
