"""The call watchdog as a real process: it freezes an executor's call processes once the
fence passes without a renewal, continues them only after a renewal that kept the fence, and
kills them when its executor's pipe closes. Real processes carrying real call marks."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import wait_for
from tests.supervisor.checks import process_state
from tui_agent.supervisor.call_watchdog import CallWatchdog
from tui_agent.supervisor.lock import pid_alive
from tui_agent.supervisor.watchdog import is_late
from tui_agent.tools.processes import CALL_ENV

FENCE_S = 0.6


def stopped(pid: int) -> bool:
    return process_state(pid) == "T"


@pytest.fixture
def owner() -> str:
    return f"{os.getpid()}-w{time.monotonic_ns() % 10**8}"


@pytest.fixture
def spawn(owner: str) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def marked(mark: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, CALL_ENV: mark}
        proc = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
        procs[mark] = proc
        return proc

    yield marked  # type: ignore[misc]
    for proc in procs.values():
        proc.kill()
        proc.wait()


def test_calls_freeze_past_the_fence_and_continue_after_a_renewal_in_time(
    owner: str, spawn: object
) -> None:
    began = time.monotonic()
    call = spawn(f"{owner}/run1/3")  # type: ignore[operator]
    server = spawn(f"{owner}/mcp/files")  # type: ignore[operator]
    other = spawn("99999-x/run1/3")  # type: ignore[operator]  another executor's call
    dog = CallWatchdog(owner, FENCE_S, began)
    try:
        wait_for(lambda: stopped(call.pid), 5, "the call to be frozen past the fence")
        assert time.monotonic() - began >= FENCE_S
        assert not stopped(server.pid) and not stopped(other.pid)
        # A renewal that the executor learned just inside the fence (the line was late in
        # the pipe): the leases never lapsed, the call goes on.
        dog.renewed(time.monotonic(), began + FENCE_S - 0.01)
        wait_for(lambda: not stopped(call.pid), 5, "the call to be continued")
        # Silent again: frozen again; a late renewal leaves it frozen (the executor ends it).
        wait_for(lambda: stopped(call.pid), 5, "the call to be frozen again")
        dog.renewed(time.monotonic(), time.monotonic())
        time.sleep(3 * FENCE_S / 4)
        assert stopped(call.pid)
    finally:
        dog.close()
    # The executor is gone (its pipe closed): its calls die, its MCP server is left alone.
    wait_for(lambda: process_state(call.pid) in ("", "Z"), 5, "the call to be killed")
    assert pid_alive(server.pid) and process_state(server.pid) != "Z"
    assert pid_alive(other.pid) and not stopped(other.pid)


def test_renewals_in_time_freeze_nothing(owner: str, spawn: object) -> None:
    call = spawn(f"{owner}/run2/1")  # type: ignore[operator]
    began = time.monotonic()
    dog = CallWatchdog(owner, FENCE_S, began)
    try:
        until = time.monotonic() + 4 * FENCE_S
        previous = began
        while time.monotonic() < until:
            time.sleep(FENCE_S / 6)
            now = time.monotonic()
            if is_late(previous, now, FENCE_S):
                pytest.skip("this test itself was not scheduled in time (a loaded machine)")
            dog.renewed(now, now)
            previous = now
            assert not stopped(call.pid)
    finally:
        dog.close()
