"""Sharing the work: several executors under one supervisor (either store), and several
supervisors (machines) on one PostgreSQL store, killed and frozen at the dangerous moment.

Every shell call appends `run/seq` of its own call mark to a ledger in the workspace: a line
seen twice is a side effect that ran twice.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_CONFIG, Home, wait_for
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tests.supervisor.checks import process_state, strict_check
from tui_agent.supervisor.lock import pid_alive
from tui_agent.tools.processes import processes_marked

pytestmark = pytest.mark.slow
LEDGER = 'echo "$TUI_AGENT_CALL" | cut -d/ -f2,3 >> ledger'


def script(llm: ScriptedLLM, steps: int = 3, latency: float = 0.3) -> None:
    llm.latency_s = latency
    llm.script = [
        Reply(f"step {i}", [call("run_shell", {"command": LEDGER})]) for i in range(steps)
    ]
    llm.script.append(Reply("all done"))


def ledger(workspace: Path) -> Counter[str]:
    path = workspace / "ledger"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def completed(home: Home, run_id: str, workspace: Path) -> dict[str, Any]:
    """The run, completed: a call left in doubt by a kill is resolved as a careful person
    would (skipped if its side effect is in the ledger, retried if not)."""
    view = home.wait_status(run_id, "completed", "needs_attention", timeout=90)
    if view["status"] == "needs_attention":
        seq = view["in_doubt"]["seq"]
        choice = "skip" if ledger(workspace)[f"{run_id}/{seq}"] else "retry"
        home.json("resolve", run_id, choice)
        view = home.wait_status(run_id, "completed", timeout=60)
    return view


def executors_of(home: Home) -> list[dict[str, object]]:
    return list(home.json("supervisor", "status")["executors"])


def everything_of(home: Home) -> list[int]:
    """This home's supervisor and executors (their pids, alive)."""
    node = home.env.get("TUI_AGENT_NODE", "")
    rows = home.query("SELECT pid FROM executors WHERE node = ?", (node,))
    pids = [int(r[0]) for r in rows]
    sup = home.supervisor_pid()
    return [p for p in [*pids, *([sup] if sup else [])] if pid_alive(p) and home.owns(p)]


@pytest.mark.both_stores
def test_several_executors_share_the_work_and_a_killed_one_is_replaced(
    home: Home, llm: ScriptedLLM
) -> None:
    home.configure(FAST_CONFIG + "executors = 3\nmax_concurrent_runs = 1\n")
    home.use_server(llm)
    script(llm, steps=4, latency=0.4)
    runs = [home.start(f"run {i}", "--auto-approve", "external_action") for i in range(3)]

    def three_busy() -> list[dict[str, object]] | None:
        busy = [e for e in executors_of(home) if e["runs"]]  # (one look: it changes)
        return busy if len(busy) == 3 else None

    busy = wait_for(three_busy, 30, "three executors with a run each")
    assert {r for e in busy for r in e["runs"]} == set(runs)  # type: ignore[attr-defined]
    os.kill(int(busy[0]["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    for run_id in runs:
        assert completed(home, run_id, home.workspace)["result"] == "all done"
    counts = ledger(home.workspace)
    assert counts and max(counts.values()) == 1, counts
    strict_check(home, {})
    wait_for(lambda: len(executors_of(home)) == 3, 20, "the killed executor replaced")
    log = (home.path / "logs" / "executor.log").read_text()
    assert "ending its work here" not in log, "a healthy executor fenced itself off"


def _machine(tmp_path: Path, name: str, db_url: str, llm: ScriptedLLM, ws: Path) -> Home:
    """Another machine's home on the same PostgreSQL store and the same (shared) workspace."""
    other = Home(tmp_path / name, db_url)
    other.workspace = ws
    other.env["TUI_AGENT_NODE"] = name
    other.configure(FAST_CONFIG)  # lease_s 2.0
    other.use_server(llm)
    return other


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_two_machines_share_a_postgresql_store_and_take_over_a_dead_one(
    home: Home, llm: ScriptedLLM, tmp_path: Path
) -> None:
    assert home.db_url is not None
    a = _machine(tmp_path, "a", home.db_url, llm, home.workspace)
    b = _machine(tmp_path, "b", home.db_url, llm, home.workspace)
    script(llm, steps=6, latency=0.5)  # runs long enough for a to hold some when it dies
    try:
        a.cli("supervisor", "start", check=True)
        b.cli("supervisor", "start", check=True)
        runs = [a.start(f"run {i}", "--auto-approve", "external_action") for i in range(12)]
        # a holds some when it dies (under load its executor may start long after b's)
        wait_for(lambda: a.query("SELECT 1 FROM runs WHERE owner_node = 'a'"), 60, "a")
        killed_at = time.monotonic()
        for pid in everything_of(a):  # machine a dies with its runs
            os.kill(pid, signal.SIGKILL)
        took_over = wait_for(
            lambda: not a.query("SELECT 1 FROM runs WHERE owner_node = 'a'") or None,
            10,
            "b to take over a's runs",
        )
        assert took_over and time.monotonic() - killed_at <= 2 * 2.0  # 2 x lease_s
        for run_id in runs:
            assert completed(b, run_id, home.workspace)["result"] == "all done"
        counts = ledger(home.workspace)
        assert len(counts) == 12 * 6 and max(counts.values()) == 1, counts
        nodes = {r[0] for r in b.query("SELECT data_json FROM events WHERE kind = 'claimed'")}
        assert any('"node": "a"' in n for n in nodes) and any('"node": "b"' in n for n in nodes)
        assert llm.requests_for(0) <= 12 + 3, "recorded replies were requested again"
        strict_check(b, {})
    finally:
        for h in (a, b):
            h.kill_all()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_frozen_machine_thaws_fenced_off_its_runs(
    home: Home, llm: ScriptedLLM, tmp_path: Path
) -> None:
    """Machine a's supervisor and executors freeze (SIGSTOP) while a slow shell call of its
    run goes on; b takes the run over after the lease. The command must not finish while a
    is frozen (a's call watchdog freezes it at a's fence, before the lease runs out), nor
    after a thaws (a lets the run go and kills it), and a records nothing more of the run."""
    assert home.db_url is not None
    a = _machine(tmp_path, "a", home.db_url, llm, home.workspace)
    b = _machine(tmp_path, "b", home.db_url, llm, home.workspace)
    llm.script = [
        Reply("slow", [call("run_shell", {"command": "sleep 3; " + LEDGER})]),
        Reply("all done"),
    ]
    try:
        a.cli("supervisor", "start", check=True)
        run_id = a.start("freeze me", "--auto-approve", "external_action")
        # (the call is recorded before its command starts: wait for the command itself)
        wait_for(lambda: processes_marked(run_id=run_id), 20, "a's command to start")
        frozen = everything_of(a)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        frozen_at = time.monotonic()

        def command_frozen() -> bool:
            command = processes_marked(run_id=run_id)  # (looked up again: sh forks sleep)
            return bool(command) and all(process_state(p) == "T" for p in command)

        # a's watchdog freezes the command at a's fence, and it stays so past the time it
        # needed; nobody else has killed it yet (b, on this same host, would).
        wait_for(command_frozen, 5, "a's command to freeze")
        time.sleep(max(0.0, frozen_at + 4.5 - time.monotonic()))
        assert not ledger(home.workspace), "a's command finished while a was frozen"
        b.cli("supervisor", "start", check=True)
        view = b.wait_status(run_id, "needs_attention", timeout=20)  # the call is in doubt
        epochs = [e["data"].get("epoch") for e in view["events"] if e["kind"] == "claimed"]
        assert epochs == sorted(epochs) and epochs[-1] >= 2
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: not processes_marked(run_id=run_id), 20, "a to end its command")
        assert not ledger(home.workspace), "a's command finished after b took the run"
        # Thawed, a lets go in one of several ways (its own fence, a heartbeat that finds
        # the lease lost, a write refused by the fence, its supervisor killing it for its
        # silence), which one depends on timing; what must hold is above and below: a's
        # command never finished and a recorded nothing more of the run.
        after = b.show(run_id)
        assert after["status"] == "needs_attention" and after["steps"] == view["steps"]
        b.json("resolve", run_id, "retry")
        assert b.wait_status(run_id, "completed", timeout=30)["result"] == "all done"
        assert sum(ledger(home.workspace).values()) == 1
    finally:
        for h in (a, b):
            h.kill_all()
