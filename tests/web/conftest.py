"""The HTTP API as a real `tui-agent serve` process, and real clients of it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from tests.conftest import Home, wait_for


class Api:
    """One `tui-agent serve` of a home, on a port of its own choosing."""

    def __init__(self, home: Home, *extra: str) -> None:
        self.home = home
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tui_agent", "serve", "--port", "0", "--keepalive", "1", *extra],
            env=home.env,
            cwd=home.workspace,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        first = self.proc.stderr.readline()
        found = re.search(r"http://([\d.]+):(\d+)", first)
        assert found, f"serve said: {first!r}"
        self.url = f"http://{found.group(1)}:{found.group(2)}"
        self.log: list[str] = [first]
        self.token = home.cli("token", check=True).stdout.strip()
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )
        wait_for(lambda: self._healthy(), 20, "the API to answer /healthz")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, goal: str = "do the thing", **fields: Any) -> dict[str, Any]:
        body = {"goal": goal, "workspace": str(self.home.workspace), **fields}
        answer = self.client.post("/v1/runs", json=body)
        assert answer.status_code == 202, answer.text
        return dict(answer.json())

    def wait_status(self, run_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            data = self.client.get(f"/v1/runs/{run_id}").json()
            return data if data["status"] in statuses else None

        return dict(wait_for(check, timeout, f"run {run_id[:8]} to be {statuses}"))

    def events(
        self, run_id: str, last_event_id: str | None = None, *, stop_after: Any = None
    ) -> list[Any]:
        """The run's events from `last_event_id` until the stream ends (or `stop_after(sse)`
        says to hang up)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        seen = []
        with connect_sse(
            self.client, "GET", f"/v1/runs/{run_id}/events", headers=headers, timeout=60
        ) as source:
            assert source.response.status_code == 200
            for sse in source.iter_sse():
                if sse.event == "message" and sse.data == "":
                    # A keep-alive comment: httpx-sse yields it as an empty event (with the
                    # last id) once an id was seen; the spec dispatches nothing for it.
                    continue
                seen.append(sse)
                if stop_after is not None and stop_after(sse):
                    break
        return seen

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> str:
        """Stop it (SIGINT, like Ctrl+C); returns what it wrote on stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        assert self.proc.stderr is not None
        rest = self.proc.stderr.read()
        self.client.close()
        return "".join(self.log) + rest


@pytest.fixture
def api(home: Home) -> Iterator[Api]:
    server = Api(home)
    yield server
    log = server.stop()
    assert "Traceback" not in log, log
    assert server.token not in log, "the token was written to the server's log"


class Receiver:
    """A callback receiver process (tests/fakes/receiver.py)."""

    def __init__(self, root: Path, fail_first: int = 0) -> None:
        self.log = root / "received.jsonl"
        self.fail_first = fail_first
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Receiver:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.receiver",
                str(self.port),
                str(self.log),
                str(self.fail_first),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def received(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def wait_for(self, predicate: Any, timeout: float = 60, what: str = "deliveries") -> Any:
        return wait_for(lambda: predicate(self.received()), timeout, what)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path)
    yield r
    r.kill()


def wait_a_little(seconds: float = 0.3) -> None:
    time.sleep(seconds)
