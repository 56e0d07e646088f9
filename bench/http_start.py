"""`POST /v1/runs` → 202 (validation, one transaction, the new run as JSON), p95,
beside a bare ASGI route (Starlette under uvicorn, answering 202 with a small JSON body)
measured in the same run with the same client, the two asked in alternating rounds.
Target: at most 3x the floor."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import api_server, emit, median, p95, pg_cluster, scratch, settle

HELLO = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def start(request):
    body = await request.json()
    return JSONResponse({"id": "0" * 32, "goal": body["goal"]}, status_code=202)

app = Starlette(routes=[Route("/v1/runs", start, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


ROUND = 10  # posts to one server before the other's turn


def _client(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _timed_posts(client: httpx.Client, n: int, workspace: Path) -> list[float]:
    body = {"goal": "bench", "workspace": str(workspace), "model": "demo"}
    times = []
    for _ in range(n):
        began = time.perf_counter()
        answer = client.post("/v1/runs", json=body)
        times.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 202, answer.text
    return times


@contextmanager
def _bare_route() -> Iterator[str]:
    """The floor: a bare Starlette route under uvicorn in a process of its own."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", HELLO, str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.post(f"{base}/v1/runs", json={"goal": "x"}, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def _measure(name: str, n: int, url: str | None) -> None:
    """Both servers up at once and asked in alternating rounds of ROUND posts, so that a
    machine whose speed drifts (a shared VM's neighbours, the disk) drifts under both."""
    workspace = scratch("http-ws")
    home = scratch("http-home") / "home"
    floor: list[float] = []
    values: list[float] = []
    with (
        _bare_route() as floor_base,
        api_server(home, url) as (base, token),
        _client(floor_base, "none") as bare,
        _client(base, token) as ours,
    ):
        for client in (bare, ours):  # warm: connections, imports of the first write
            _timed_posts(client, 5, workspace)
        settle()  # the supervisor the first start woke is up, its executors imported
        while len(values) < n:
            floor += _timed_posts(bare, ROUND, workspace)
            values += _timed_posts(ours, ROUND, workspace)
    emit(
        name,
        p95(values),
        "ms",
        p95(floor),
        "p95 <= 3x a bare ASGI route",
        p95(values) <= 3 * p95(floor),
        median=median(values),
        floor_median=median(floor),
        samples=len(values),
    )


def run(quick: bool) -> None:
    n = 100 if quick else 500
    _measure("http_start", n, None)
    with pg_cluster("http_start_postgres") as cluster:
        if cluster is not None:
            _measure("http_start_postgres", n, cluster.new_database())


if __name__ == "__main__":
    run(quick=True)
