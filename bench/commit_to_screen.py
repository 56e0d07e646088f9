"""A commit by another process → visible in the running TUI (headless), against the floor of
a bare watchfiles watcher woken by the same commits; on PostgreSQL, against a bare LISTEN
connection woken by the same commits' NOTIFY."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import emit, median, p95, pg_cluster, scratch, seed_run
from tui_agent.service.local import LocalService
from tui_agent.settings import Settings
from tui_agent.store.run_store import open_store
from tui_agent.ui.app import AgentApp

WRITER = """
import json, random, sys, time
from tui_agent.store.journal import StepJournal
from tui_agent.store.run_store import open_store
db = open_store(sys.argv[1]).db
j = StepJournal(db, "writer", 1)
run_id, n = sys.argv[2], int(sys.argv[3])
j.claim(1, 3600)
time.sleep(1.0)
for i in range(n):
    time.sleep(random.uniform(0.05, 0.15))
    seq = j.record_llm_reply(run_id, {"content": f"step {i}"}, 10, 0.0)
    print(json.dumps([seq, time.time()]), flush=True)
"""


def _seed(home: Path, url: str | None = None) -> str:
    store = open_store(url or home / "tui-agent.db")
    run_id = seed_run(store, "watch me", Path("/tmp"), max_steps=10**6)
    store.close()
    return run_id


def _writer(home: Path, run_id: str, n: int, url: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url or str(home / "tui-agent.db"), run_id, str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _latencies(commits: dict[int, float], seen: list[tuple[float, int]]) -> list[float]:
    out = []
    for seq, at in commits.items():
        first = next((t for t, last in seen if last >= seq and t >= at - 0.001), None)
        if first is not None:
            out.append((first - at) * 1000)
    return out


async def _app_run(home: Path, run_id: str, n: int, url: str | None = None) -> list[float]:
    seen: list[tuple[float, int]] = []

    class Probe(AgentApp):
        def refresh_live(self) -> None:
            super().refresh_live()
            seen.append((time.time(), self.query_one("#run-timeline").last_seq))

    service = LocalService.open(Settings(home=home, db_url=url))
    app = Probe(service, start_supervisor=False, live=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        writer = _writer(home, run_id, n, url)
        while writer.poll() is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
    commits = dict(json.loads(line) for line in writer.stdout.read().splitlines())  # type: ignore[union-attr]
    service.close()
    return _latencies(commits, seen)


async def _floor_run(home: Path, run_id: str, n: int) -> list[float]:
    from watchfiles import awatch

    seen: list[tuple[float, int]] = []
    stop = asyncio.Event()
    db = home / "tui-agent.db"
    names = {db.name, f"{db.name}-wal"}
    counter = {"seq": 0}

    async def watch() -> None:
        import sqlite3

        conn = sqlite3.connect(db)
        async for _ in awatch(
            home,
            watch_filter=lambda _c, p: Path(p).name in names,
            debounce=100,
            step=10,
            force_polling=False,
            recursive=False,
            stop_event=stop,
        ):
            row = conn.execute("SELECT max(seq) FROM steps WHERE run_id = ?", (run_id,)).fetchone()
            counter["seq"] = row[0] or 0
            seen.append((time.time(), counter["seq"]))

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    writer = _writer(home, run_id, n)
    while writer.poll() is None:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    stop.set()
    await task
    commits = dict(json.loads(line) for line in writer.stdout.read().splitlines())  # type: ignore[union-attr]
    return _latencies(commits, seen)


async def _pg_floor_run(url: str, run_id: str, n: int) -> list[float]:
    """A bare LISTEN connection, woken by the commits' NOTIFY, reading the newest seq."""
    import psycopg

    from tui_agent.store.postgres_schema import CHANGES_CHANNEL

    seen: list[tuple[float, int]] = []
    listener = await psycopg.AsyncConnection.connect(url, autocommit=True)
    reader = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await listener.execute(f"LISTEN {CHANGES_CHANNEL}")

    async def watch() -> None:
        async for _ in listener.notifies():
            cur = await reader.execute("SELECT max(seq) FROM steps WHERE run_id = %s", (run_id,))
            row = await cur.fetchone()
            seen.append((time.time(), (row[0] if row else 0) or 0))

    task = asyncio.create_task(watch())
    writer = _writer(Path("/tmp"), run_id, n, url)
    while writer.poll() is None:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    task.cancel()
    await listener.close()
    await reader.close()
    commits = dict(json.loads(line) for line in writer.stdout.read().splitlines())  # type: ignore[union-attr]
    return _latencies(commits, seen)


def run(quick: bool) -> None:
    _run_sqlite(quick)
    with pg_cluster("commit_to_screen_postgres") as cluster:
        if cluster is None:
            return
        n = 40 if quick else 200
        url = cluster.new_database()
        floor = asyncio.run(_pg_floor_run(url, _seed(Path("/tmp"), url), n))
        url = cluster.new_database()
        app_home = scratch("c2s-pg")
        app_home.chmod(0o700)
        values = asyncio.run(_app_run(app_home, _seed(app_home, url), n, url))
        _emit("commit_to_screen_postgres", values, floor, n)


def _emit(name: str, values: list[float], floor: list[float], n: int) -> None:
    ok = median(values) <= 30 and p95(values) <= 50
    emit(
        name,
        p95(values),
        "ms",
        p95(floor),
        "median <= 30 ms, p95 <= 50 ms",
        ok,
        median=median(values),
        floor_median=median(floor),
        samples=len(values),
        commits=n,
    )


def _run_sqlite(quick: bool) -> None:
    n = 40 if quick else 200
    floor_home = scratch("c2s-floor")
    floor = asyncio.run(_floor_run(floor_home, _seed(floor_home), n))
    app_home = scratch("c2s-app")
    app_home.chmod(0o700)
    values = asyncio.run(_app_run(app_home, _seed(app_home), n))
    _emit("commit_to_screen", values, floor, n)


if __name__ == "__main__":
    run(quick=True)
