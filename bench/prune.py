"""`prune` of the 100,000-run / 1,000,000-step database: its time, the p95 of each batch's
write transaction (how long it holds SQLite's write lock), the bytes freed, and, beside it,
the commit latency of a run that keeps recording steps meanwhile (the responsiveness a TUI
and running runs see), against the same writer's latency with no prune (the floor)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import emit, median, p95, scratch, seed_run
from bench.generate import cached
from tui_agent.store.prune import prune_runs
from tui_agent.store.run_store import open_store

WRITER = """
import json, sys, time
from pathlib import Path
from tui_agent.store.journal import StepJournal
from tui_agent.store.run_store import open_store
db = open_store(sys.argv[1]).db
j = StepJournal(db, "writer", 1, queues=("bench-prune",))
run_id = j.claim(1, 3600)[0]
stop = Path(sys.argv[2])
print("ready", flush=True)
while not stop.exists():
    began = time.perf_counter()
    j.record_llm_reply(run_id, {"content": "still here"}, 1, 0.0)
    print(json.dumps([time.time(), (time.perf_counter() - began) * 1000]), flush=True)
    time.sleep(0.02)
"""


def _writer(path: Path, stop: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """The writer, and the lines it prints (read as they come: a full pipe would stall it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(stop)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
    return proc, lines


def _latencies(proc: subprocess.Popen[str], lines: list[str]) -> list[tuple[float, float]]:
    """(when, commit ms) of each of the writer's commits."""
    proc.wait(30)
    time.sleep(0.2)
    return [tuple(json.loads(line)) for line in lines if line.strip()]  # type: ignore[misc]


def run(quick: bool) -> None:
    runs, steps = (20_000, 200_000) if quick else (100_000, 1_000_000)
    source = cached(runs, steps)
    work = scratch("prune")
    path = work / "tui-agent.db"
    shutil.copy(source, path)
    store = open_store(path)
    live = seed_run(store, "keeps writing", Path("/tmp"), max_steps=10**6)
    with store.db.raw_write() as cur:
        cur.execute("UPDATE runs SET queue = 'bench-prune' WHERE id = ?", (live,))
    size_before = path.stat().st_size
    stop = work / "stop"
    proc, lines = _writer(path, stop)
    time.sleep(3.0)  # the floor: the same writer with nothing else going on
    t0 = time.time()
    began = time.perf_counter()
    report = prune_runs(store.db, cutoff=time.time())
    took = time.perf_counter() - began
    t1 = time.time()
    stop.touch()
    commits = _latencies(proc, lines)
    store.close()
    with sqlite3.connect(path) as conn:  # the freed pages leave the file at a checkpoint
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    floor = [ms for at, ms in commits if at < t0]
    during = [ms for at, ms in commits if t0 <= at <= t1]
    size_after = path.stat().st_size
    hold_ms = [h * 1000 for h in report.hold_s]
    emit(
        "prune",
        p95(during),
        "ms",
        p95(floor),
        "a live run's commits stay fast while 80% of the runs go (p95 <= 50 ms)",
        p95(during) <= 50,
        runs_deleted=report.runs,
        steps_deleted=report.steps,
        seconds=took,
        lock_hold_p95_ms=p95(hold_ms),
        lock_hold_max_ms=max(hold_ms),
        bytes_freed=report.bytes_freed,
        file_bytes_before=size_before,
        file_bytes_after=size_after,
        commit_median_ms=median(during),
        floor_median_ms=median(floor),
        commits_during=len(during),
    )
    print(json.dumps({"name": "prune_note", "runs": runs, "steps": steps}), file=sys.stderr)


if __name__ == "__main__":
    run(quick=True)
