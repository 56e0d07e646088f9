"""Targeted attacks: a database held locked past busy_timeout, two supervisors at once,
and model output too big to be polite."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FAST_CONFIG, Home, wait_for
from tests.fakes.llm_server import Reply, ScriptedLLM, call

pytestmark = pytest.mark.slow


def hold_write_lock(home: Home, seconds: float) -> threading.Thread:
    """Another process-like writer: BEGIN IMMEDIATE and sit on it."""
    ready = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(home.path / "tui-agent.db", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        ready.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait(5)
    return thread


def test_locked_database_is_a_clear_retryable_error_and_writes_nothing(home: Home) -> None:
    home.configure(FAST_CONFIG + "busy_timeout_s = 0.5\n")
    home.cli("ls", check=True)
    holder = hold_write_lock(home, 3.0)
    proc = home.cli("run", "blocked", "--workspace", str(home.workspace))
    holder.join()
    assert proc.returncode == 1
    assert proc.stderr == "tui-agent: the database is locked by another process; try again\n"
    assert home.json("ls") == []


def test_a_run_survives_the_database_being_locked_under_it(home: Home, llm: ScriptedLLM) -> None:
    home.configure(FAST_CONFIG + "busy_timeout_s = 0.3\n")
    home.use_server(llm)
    llm.latency_s = 0.3
    llm.script = [Reply(f"step {i}", [call("list_dir", {})]) for i in range(6)]
    llm.script.append(Reply("made it"))
    run_id = home.start()
    wait_for(lambda: home.show(run_id)["usage"]["steps"] >= 2, 20, "progress")
    hold_write_lock(home, 2.5).join()
    view = home.wait_status(run_id, "completed", "failed", timeout=60)
    assert view["status"] == "completed", view["error"]
    assert view["result"] == "made it"
    assert len([s for s in view["steps"] if s["kind"] == "llm"]) == 7
    assert view["usage"]["steps"] == 13


def test_two_supervisors_started_at_once_only_one_runs(home: Home) -> None:
    home.cli("ls", check=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tui_agent", "supervisor", "run"],
            env=home.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    loser = None
    deadline = time.monotonic() + 20
    while loser is None and time.monotonic() < deadline:
        loser = next((p for p in procs if p.poll() is not None), None)
        time.sleep(0.05)
    assert loser is not None, "both supervisors kept running"
    assert loser.returncode == 2
    assert "already running" in loser.stderr.read()  # type: ignore[union-attr]
    winner = next(p for p in procs if p is not loser)
    assert winner.poll() is None
    assert home.json("supervisor", "status")["pid"] == winner.pid
    winner.terminate()
    winner.wait(20)


def test_huge_reply_and_huge_tool_output_are_recorded_whole(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    big = "x" * 2_000_000
    llm.script = [
        Reply(big, [call("run_shell", {"command": "head -c 3000000 /dev/zero | tr '\\\\0' y"})]),
        Reply("done"),
    ]
    run_id = home.start("big", "--auto-approve", "external_action", "--max-tokens", "9000000")
    view = home.wait_status(run_id, "completed", timeout=60)
    llm_step = view["steps"][0]
    assert len(llm_step["content"]) == 2_000_000
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["artifact_id"] and len(tool["result"]) < 2000


@pytest.fixture
def tiny_home(home: Home) -> Iterator[Path]:
    """The home on a 2 MB tmpfs (needs root to mount; skipped where that is refused)."""
    import shutil

    mount_point = home.path.parent / "tiny"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    shutil.copy(home.path / "config.toml", mount_point / "config.toml")
    home.path = mount_point
    home.env["TUI_AGENT_HOME"] = str(mount_point)
    yield mount_point
    home.kill_all()
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_disk_full_pauses_nothing_loses_nothing_and_recovers(
    home: Home, llm: ScriptedLLM, tiny_home: Path
) -> None:
    home.use_server(llm)
    chunk = "z" * 150_000
    llm.script = [
        Reply(
            f"{i} {chunk}",
            [call("list_dir", {})],
            usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        )
        for i in range(30)
    ]
    llm.script.append(Reply("finished after the disk grew"))
    run_id = home.start("fill the disk", "--max-steps", "100", "--max-tokens", "100000000")

    def stuck_on_full_disk() -> bool:
        log = tiny_home / "logs" / "executor.log"
        return log.exists() and b"full" in log.read_bytes()

    wait_for(stuck_on_full_disk, 60, "the disk to fill")
    proc = home.cli("run", "another", "--workspace", str(home.workspace))
    assert proc.returncode in (1, 2), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    before = home.show(run_id)
    assert before["status"] in ("running", "queued")  # handed back, never failed
    steps_before = {(s["seq"], s["kind"]) for s in before["steps"]}

    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_home)], check=True)
    view = home.wait_status(run_id, "completed", "failed", timeout=90)
    assert view["status"] == "completed", view["error"]
    assert steps_before <= {(s["seq"], s["kind"]) for s in view["steps"]}
    assert view["usage"]["steps"] == len(view["steps"])
    with sqlite3.connect(tiny_home / "tui-agent.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
