"""What a new user does in the first hour, with real processes: a TUI left open in a real
terminal while the supervisor is stopped, started, idles out and is killed from another
shell, and runs are started from both. The database must stay whole throughout."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import Home, wait_for
from tests.supervisor.checks import strict_check
from tests.terminal import Terminal, needs_tmux

pytestmark = [pytest.mark.slow, needs_tmux, pytest.mark.both_stores]


def _database_fds(pid: int) -> list[str]:
    """What each descriptor of the process tree that points at a database file points at."""
    found: list[str] = []
    for proc in [pid, *_children(pid)]:
        try:
            entries = list(Path(f"/proc/{proc}/fd").iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                target = os.readlink(entry)
            except OSError:
                continue
            if "tui-agent.db" in target:
                found.append(f"{proc}: {target}")
    return found


def deleted_database_files(pid: int) -> list[str]:
    """Descriptors of a process (and its children) that point at a deleted database file
    (none on PostgreSQL, where there is no file to hold)."""
    return [fd for fd in _database_fds(pid) if "(deleted)" in fd]


def database_descriptors(pid: int) -> int:
    """How many descriptors of the process tree point at the live database file."""
    return sum(1 for fd in _database_fds(pid) if fd.endswith("/tui-agent.db"))


def tui_holds_its_store(home: Home, pid: int) -> bool:
    """The TUI opens its writing store after the first frame. SQLite: its descriptors;
    PostgreSQL: a second connection besides the reading one."""
    if home.backend == "sqlite":
        return database_descriptors(pid) >= 2
    sockets = 0
    for proc in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            sockets += sum(
                os.readlink(fd).startswith("socket:") for fd in Path(f"/proc/{proc}/fd").iterdir()
            )
    return sockets >= 2


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            out += [kid, *_children(kid)]
    return out


def test_tui_left_open_across_supervisor_stop_start_never_corrupts_the_database(
    home: Home, terminal: Terminal, tmp_path: Path
) -> None:
    """The reproduction of the corruption: TUI open, supervisor stopped and started from
    another shell, a run from the CLI, then a run started in the TUI."""
    home.configure("idle_exit_s = 60\nlease_s = 2.0\nheartbeat_s = 0.3\n")
    home.cli("run", "x", "--auto-approve", "write_local", "--wait", check=True)
    terminal.launch(home, tmp_path / "rc", size=(120, 36))
    terminal.wait_for("✓ completed", "supervisor: running")
    # the TUI opens its writing store after the first frame: wait until it holds it
    wait_for(lambda: tui_holds_its_store(home, terminal.pane_pid()), 20, "the TUI's store")

    home.cli("supervisor", "stop", check=True)
    terminal.wait_for("supervisor: not running")
    assert not deleted_database_files(terminal.pane_pid())
    home.cli("supervisor", "start", check=True)
    home.cli("run", "y", "--max-steps", "3", "--wait", timeout=60)

    terminal.keys("s")
    terminal.wait_for("Goal")
    terminal.keys("typed in the open TUI")
    terminal.keys("Enter")
    terminal.wait_for("typed in the open TUI")
    runs = home.json("ls")
    assert {r["goal"] for r in runs} == {"x", "y", "typed in the open TUI"}
    strict_check(home, {})  # SQLite's integrity check too
    assert not deleted_database_files(terminal.pane_pid())
    assert "malformed" not in terminal.screen()
    assert not (tmp_path / "rc").exists(), "the TUI died"


def test_tui_open_through_idle_exits_kills_and_restarts_keeps_the_database_whole(
    home: Home, terminal: Terminal, tmp_path: Path
) -> None:
    """The same with the supervisor idling out by itself, being killed, and the TUI bringing
    it back: every user who leaves the app open lives through these."""
    home.configure("idle_exit_s = 1\nlease_s = 2.0\nheartbeat_s = 0.3\n")
    terminal.launch(home, tmp_path / "rc", size=(80, 24))
    terminal.wait_for("supervisor")
    for round_ in range(3):
        home.cli("run", f"round {round_}", "--auto-approve", "write_local", "--wait", check=True)
        # idle_exit_s = 1: the supervisor leaves by itself while the TUI stays open
        wait_for(lambda: home.supervisor_pid() is None, 20, "the supervisor to idle out")
        assert not deleted_database_files(terminal.pane_pid())
        strict_check(home, {})  # SQLite's integrity check too
        home.cli("supervisor", "start", check=True)
        pid = home.supervisor_pid()
        assert pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda p=pid: home.supervisor_pid() != p, 10, "the lock to be free")
    terminal.keys("s")
    terminal.wait_for("Goal")
    terminal.keys("from the TUI at the end")
    terminal.keys("Enter")
    wait_for(
        lambda: any(r["goal"] == "from the TUI at the end" for r in home.json("ls")),
        20,
        "the TUI's run",
    )
    strict_check(home, {})  # SQLite's integrity check too
    assert not deleted_database_files(terminal.pane_pid())
    assert not (tmp_path / "rc").exists(), "the TUI died"
