"""Many clients following live runs over SSE: commit (by another process) → `step` event
at each client, p95, with 200 clients on 20 runs. Floor: the same commits followed by one
client, in the same run. Target: p95 ≤ 100 ms."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench.common import api_server, emit, median, p95, pg_cluster, scratch, seed_run
from tui_agent.store.run_store import open_store

QUEUE = "bench-fanout"
WRITER = """
import json, random, sys, time
from tui_agent.store.journal import StepJournal
from tui_agent.store.run_store import open_store
db = open_store(sys.argv[1]).db
j = StepJournal(db, "writer", 1, queues=(sys.argv[3],))
ids = j.claim(1000, 3600)
time.sleep(1.5)
for i in range(int(sys.argv[2])):
    time.sleep(random.uniform(0.02, 0.06))
    run_id = ids[i % len(ids)]
    seq = j.record_llm_reply(run_id, {"content": f"step {i}"}, 10, 0.0)
    print(json.dumps([run_id, seq, time.time()]), flush=True)
"""


def _seed(target: str, runs: int) -> list[str]:
    store = open_store(target)
    ids = [seed_run(store, f"followed {i}", Path("/tmp"), max_steps=10**6) for i in range(runs)]
    store.close()
    return ids


def _set_queue(target: str, ids: list[str]) -> None:
    store = open_store(target)
    with store.db.raw_write() as cur:
        for run_id in ids:
            cur.execute("UPDATE runs SET queue = ? WHERE id = ?", (QUEUE, run_id))
    store.close()


async def _follow(
    base: str, token: str, ids: list[str], clients: int, target: str, n: int
) -> list[float]:
    seen: list[tuple[str, int, float]] = []
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=httpx.Timeout(60, read=None)
    ) as client:

        async def one(run_id: str) -> None:
            async with aconnect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
                async for sse in source.aiter_sse():
                    if sse.event == "step":
                        seen.append((run_id, json.loads(sse.data)["seq"], time.time()))

        tasks = [asyncio.create_task(one(ids[i % len(ids)])) for i in range(clients)]
        await asyncio.sleep(1.0)  # every client connected and caught up
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, target, str(n), QUEUE],
            stdout=subprocess.PIPE,
            text=True,
        )
        while writer.poll() is None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    commits: dict[tuple[str, int], float] = {}
    for line in writer.stdout.read().splitlines():  # type: ignore[union-attr]
        run_id, seq, at = json.loads(line)
        commits[(run_id, seq)] = at
    return [(t - commits[(r, s)]) * 1000 for r, s, t in seen if (r, s) in commits]


def _measure(name: str, quick: bool, url: str | None, url2: str | None) -> None:
    n = 100 if quick else 400
    clients = 200
    values: dict[str, list[float]] = {}
    for label, count, runs, target_url in (("floor", 1, 1, url2), ("fanout", clients, 20, url)):
        home = scratch(f"sse-{label}") / "home"
        target = target_url or str(home / "tui-agent.db")
        with api_server(home, target_url) as (base, token):
            ids = _seed(target, runs)
            _set_queue(target, ids)
            values[label] = asyncio.run(_follow(base, token, ids, count, target, n))
    fan, floor = values["fanout"], values["floor"]
    extra: dict[str, Any] = {"median": median(fan), "floor_median": median(floor)}
    emit(
        name,
        p95(fan),
        "ms",
        p95(floor),
        "p95 <= 100 ms with 200 clients",
        p95(fan) <= 100,
        clients=clients,
        events=len(fan),
        **extra,
    )


def run(quick: bool) -> None:
    _measure("sse_fanout", quick, None, None)
    with pg_cluster("sse_fanout_postgres") as cluster:
        if cluster is not None:
            _measure("sse_fanout_postgres", quick, cluster.new_database(), cluster.new_database())


if __name__ == "__main__":
    run(quick=True)
