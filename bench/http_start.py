"""`POST /v1/runs` → 202 (validation, one transaction, the run read back as JSON), p95,
beside a bare ASGI route (Starlette under uvicorn, answering 202 with a small JSON body)
measured in the same run with the same client. Target: at most 3x the floor."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import api_server, emit, median, p95, pg_cluster, scratch

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


def _timed_posts(base: str, token: str, n: int, workspace: Path) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"goal": "bench", "workspace": str(workspace), "model": "demo"}
    times = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for _ in range(5):  # warm: connections, imports of the first write
            client.post("/v1/runs", json=body)
        for _ in range(n):
            began = time.perf_counter()
            answer = client.post("/v1/runs", json=body)
            times.append((time.perf_counter() - began) * 1000)
            assert answer.status_code == 202, answer.text
    return times


def _floor(n: int, workspace: Path) -> list[float]:
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
        return _timed_posts(base, "none", n, workspace)
    finally:
        proc.terminate()
        proc.wait(10)


def _measure(name: str, n: int, url: str | None) -> None:
    workspace = scratch("http-ws")
    floor = _floor(n, workspace)
    home = scratch("http-home") / "home"
    with api_server(home, url) as (base, token):
        values = _timed_posts(base, token, n, workspace)
    emit(
        name,
        p95(values),
        "ms",
        p95(floor),
        "p95 <= 3x a bare ASGI route",
        p95(values) <= 3 * p95(floor),
        median=median(values),
        floor_median=median(floor),
        samples=n,
    )


def run(quick: bool) -> None:
    n = 100 if quick else 500
    _measure("http_start", n, None)
    with pg_cluster("http_start_postgres") as cluster:
        if cluster is not None:
            _measure("http_start_postgres", n, cluster.new_database())


if __name__ == "__main__":
    run(quick=True)
