"""Side effects never outlive their executor, and `run_shell` is confined.

Real supervisor, real executors, real `kill -9`/SIGSTOP, real bubblewrap: a shell command
writes `start`, sleeps, writes `end` into a ledger in the workspace. A killed executor must
take the command with it (no `end` ever appears after the kill), a retry must never overlap
the first copy, and nothing outside the workspace is reachable.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Home, wait_for
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tui_agent.supervisor.lock import pid_alive
from tui_agent.tools.processes import processes_marked

pytestmark = [
    pytest.mark.slow,
    pytest.mark.both_stores,
    pytest.mark.skipif(
        shutil.which("bwrap") is None and not os.environ.get("CI"),
        reason="bubblewrap is not installed (CI installs it)",
    ),
]

SLOW = "echo start >> ledger; sleep 4; echo end >> ledger"


def ledger(home: Home) -> list[str]:
    path = home.workspace / "ledger"
    return path.read_text().splitlines() if path.exists() else []


def owner_pid(home: Home, run_id: str) -> int:
    rows = home.query("SELECT owner_pid FROM runs WHERE id = ?", (run_id,))
    row = rows[0] if rows else None
    assert row and row[0], "the run has no executor"
    return int(row[0])


def slow_shell(llm: ScriptedLLM, command: str = SLOW) -> None:
    llm.script = [
        Reply("Running it.", [call("run_shell", {"command": command})]),
        Reply("Finished."),
    ]


def start_slow(home: Home, llm: ScriptedLLM, *args: str) -> str:
    home.use_server(llm)
    slow_shell(llm)
    run_id = home.start("go", "--auto-approve", "external_action", *args)
    wait_for(lambda: ledger(home) == ["start"], 30, "the command to start")
    return run_id


def nothing_of(run_id: str) -> bool:
    return not processes_marked(run_id=run_id)


@pytest.mark.parametrize("sandbox", ["workspace", "none"])
def test_a_killed_executor_takes_its_shell_command_with_it_and_retry_never_overlaps(
    home: Home, llm: ScriptedLLM, sandbox: str
) -> None:
    run_id = start_slow(home, llm, "--sandbox", sandbox)
    assert processes_marked(run_id=run_id), "the command carries its call's mark"
    os.kill(owner_pid(home, run_id), signal.SIGKILL)
    view = home.wait_status(run_id, "needs_attention")
    assert nothing_of(run_id), "a process of the killed executor's call still runs"
    assert "call in doubt: run_shell" in view["reason"]
    time.sleep(4.5)  # longer than the command's sleep: its `end` must never come
    assert ledger(home) == ["start"]

    home.json("resolve", run_id, "retry")
    view = home.wait_status(run_id, "completed", timeout=40)
    assert ledger(home) == ["start", "start", "end"], "the retry overlapped the first copy"
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["status"] == "finished"


def test_supervisor_and_executor_killed_together_leave_no_command_running(
    home: Home, llm: ScriptedLLM
) -> None:
    run_id = start_slow(home, llm, "--sandbox", "none")  # no sandbox to die with its parent
    executor = owner_pid(home, run_id)
    home.kill_all()
    assert not pid_alive(executor)
    # The shell got SIGKILL with its executor (parent-death signal); its `sleep` child is
    # ended by the next supervisor before the run is offered to anyone.
    home.cli("supervisor", "start", check=True)
    assert nothing_of(run_id)
    home.wait_status(run_id, "needs_attention")
    time.sleep(4.5)
    assert ledger(home) == ["start"]


def test_a_frozen_executor_is_killed_after_lease_s_and_its_run_recovered(
    home: Home, llm: ScriptedLLM
) -> None:
    home.configure("idle_exit_s = 60\nlease_s = 1.0\nheartbeat_s = 0.2\n")
    run_id = start_slow(home, llm)
    executor = owner_pid(home, run_id)
    frozen_at = time.monotonic()
    os.kill(executor, signal.SIGSTOP)
    wait_for(lambda: not pid_alive(executor), 10, "the supervisor to kill the frozen executor")
    assert time.monotonic() - frozen_at < 1.0 + 2.0
    view = home.wait_status(run_id, "needs_attention")
    assert nothing_of(run_id)
    assert owner_pid_or_none(home, run_id) is None
    assert "call in doubt" in view["reason"]
    assert "choose retry, skip or fail" in view["reason"]  # the words `resolve` takes
    lost = [e["message"] for e in view["events"] if e["kind"] == "lost"]
    assert lost and "was killed after missing its heartbeats for" in lost[-1], lost
    time.sleep(4.5)
    assert ledger(home) == ["start"]


def test_an_executor_frozen_inside_a_write_is_killed_after_lease_s(
    home: Home, llm: ScriptedLLM
) -> None:
    """Frozen while it holds SQLite's write lock: every write of the supervisor waits behind
    it (busy_timeout), so its death must not wait behind them (it once took 15 s)."""
    home.configure("idle_exit_s = 60\nlease_s = 1.0\nheartbeat_s = 0.2\n")
    home.arm("txn.finish_tool=stop@1")
    home.use_server(llm)
    slow_shell(llm, "echo start >> ledger")
    run_id = home.start("go", "--auto-approve", "external_action")
    executor = home.marker("txn.finish_tool")
    frozen_at = time.monotonic()
    wait_for(lambda: not pid_alive(executor), 10, "the supervisor to kill the frozen executor")
    assert time.monotonic() - frozen_at < 1.0 + 2.0
    view = home.wait_status(run_id, "needs_attention")
    assert "call in doubt: run_shell" in view["reason"]
    assert ledger(home) == ["start"]


def test_supervisor_stop_ends_a_long_command_at_once_and_says_so(
    home: Home, llm: ScriptedLLM
) -> None:
    run_id = start_slow(home, llm)
    began = time.monotonic()
    out = home.cli("supervisor", "stop", check=True)
    assert time.monotonic() - began < 8, "stop waited for the command"
    assert "interrupted" in out.stdout and run_id[:8] in out.stdout, out.stdout
    logged = (home.path / "logs" / "supervisor.log").read_text()
    assert "asked to stop (SIGTERM)" in logged and " stopped" in logged, logged
    assert nothing_of(run_id)
    view = home.show(run_id)
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["status"] == "error" and "supervisor was stopped" in tool["result"]
    time.sleep(4.5)
    assert ledger(home) == ["start"]
    home.cli("supervisor", "start", check=True)
    view = home.wait_status(run_id, "completed")
    assert llm.requests_for(1) == 1  # the model was told, once, that it was interrupted
    assert ledger(home) == ["start"]


def test_a_command_that_times_out_is_an_error_and_ends_whole(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    slow_shell(llm, "echo start >> ledger; (sleep 3; echo child >> ledger) & sleep 30")
    home.configure("idle_exit_s = 60\nlease_s = 2.0\nheartbeat_s = 0.3\ntool_timeout_s = 1\n")
    run_id = home.start("go", "--auto-approve", "external_action")
    view = home.wait_status(run_id, "completed")
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["status"] == "error" and tool["result"].startswith("timed out after 1s")
    assert nothing_of(run_id)
    time.sleep(3.5)
    assert ledger(home) == ["start"]


def test_run_shell_sees_only_the_workspace_and_no_network(home: Home, llm: ScriptedLLM) -> None:
    secret = home.workspace.parent / "secret.txt"
    secret.write_text("top secret")
    db = home.path / "tui-agent.db"
    probe = (
        f"cat {secret} > seen-secret 2>&1; "
        f"echo x > {home.workspace.parent / 'escaped'} 2>> errors; "
        f"ls {home.path} > seen-home 2>&1; "
        f"cat {db} > seen-db 2>&1; "
        f"ls {Path.home()} > seen-user-home 2>&1; "
        "cat /proc/net/dev > seen-net; "
        "echo inside > written-inside"
    )
    home.use_server(llm)
    slow_shell(llm, probe)
    run_id = home.start("go", "--auto-approve", "external_action")
    view = home.wait_status(run_id, "completed")
    ws = home.workspace
    assert (ws / "written-inside").read_text() == "inside\n"
    assert "top secret" not in (ws / "seen-secret").read_text()
    assert not (home.workspace.parent / "escaped").exists()
    assert "tui-agent.db" not in (ws / "seen-home").read_text()
    assert "SQLite format" not in (ws / "seen-db").read_text(errors="replace")
    assert "tui-agent" not in (ws / "seen-user-home").read_text()
    net = (ws / "seen-net").read_text()
    assert "lo:" in net and len(net.strip().splitlines()) == 3, net  # loopback only
    assert view["policy"]["sandbox"] == "workspace"
    assert view["state"]["risk_flags"] == []


def test_workspace_net_gives_the_network_and_none_is_flagged(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    slow_shell(llm, "cat /proc/net/dev > seen-net")
    run_id = home.start("go", "--auto-approve", "external_action", "--sandbox", "workspace-net")
    view = home.wait_status(run_id, "completed")
    assert len((home.workspace / "seen-net").read_text().strip().splitlines()) > 3
    assert view["policy"]["sandbox"] == "workspace-net"

    slow_shell(llm, "echo unconfined > mark")
    run_id = home.start("again", "--auto-approve", "external_action", "--sandbox", "none")
    view = home.wait_status(run_id, "completed")
    assert view["policy"]["sandbox"] == "none"
    assert any("unconfined" in flag for flag in view["state"]["risk_flags"])


def test_without_bubblewrap_the_command_is_refused_never_run_unconfined(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    slow_shell(llm, "echo ran > ran")
    home.env["PATH"] = "/nonexistent"  # the supervisor and executor find no bwrap
    run_id = home.start("go", "--auto-approve", "external_action")
    view = home.wait_status(run_id, "completed")
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["status"] == "error"
    assert "bubblewrap" in tool["result"] and "--sandbox none" in tool["result"]
    assert not (home.workspace / "ran").exists()


def owner_pid_or_none(home: Home, run_id: str) -> int | None:
    rows = home.query("SELECT owner_pid FROM runs WHERE id = ?", (run_id,))
    return rows[0][0] if rows else None


def test_a_workspace_that_holds_the_home_still_hides_it(home: Home, llm: ScriptedLLM) -> None:
    """A run started in the directory that holds tui-agent's home (a run from ~): the
    workspace bind must not bring the home and its database back into view."""
    outer = home.path.parent  # holds home/ (with the database) and ws/
    db = home.path / "tui-agent.db"
    home.use_server(llm)
    slow_shell(llm, f"cat {db} > {outer}/ws/seen-db 2>&1; ls {home.path} > {outer}/ws/seen-home")
    run_id = home.json("run", "go", "--workspace", str(outer), "--auto-approve", "external_action")[
        "id"
    ]
    home.wait_status(run_id, "completed")
    assert "SQLite format" not in (home.workspace / "seen-db").read_text(errors="replace")
    assert "tui-agent.db" not in (home.workspace / "seen-home").read_text()
