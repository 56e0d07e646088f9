"""The checks every crash test shares: kill at a failpoint, then prove nothing was lost,
changed or half-written (one strict check, the same for every test)."""

from __future__ import annotations

import os
import signal
import sqlite3

from tests.conftest import Home
from tests.fakes.llm_server import Reply, ScriptedLLM, call


def process_state(pid: int) -> str:
    """The process's state letter (R, S, T: stopped, Z: zombie); '' once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def side_effects(home: Home) -> list[str]:
    path = home.workspace / "side.log"
    return path.read_text().splitlines() if path.exists() else []


def shell_script(llm: ScriptedLLM, command: str = "echo ran >> side.log") -> None:
    llm.script = [
        Reply("Running it.", [call("run_shell", {"command": command})]),
        Reply("Finished."),
    ]


def steps_now(home: Home) -> dict[tuple[str, int], tuple[object, ...]]:
    """Every committed step as it stands (taken while the doomed process is paused)."""
    rows = home.query(
        "SELECT run_id, seq, kind, status, tool, arguments, result, tokens FROM steps"
    )
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def kill_at(home: Home, failpoint: str) -> dict[tuple[str, int], tuple[object, ...]]:
    """Wait for the failpoint to pause a process, note the store, then `kill -9` it."""
    pid = home.marker(failpoint)
    before = steps_now(home)
    kill9(pid)
    return before


def strict_check(home: Home, before: dict[tuple[str, int], tuple[object, ...]]) -> None:
    """The one check every crash test ends with: the store is whole (SQLite's integrity
    check), each run's checkpoint agrees with its steps (count, next seq, tokens; a person's
    decisions and messages are steps but not budget steps), and no
    step committed before the kill was lost or changed (a call that was started may only
    have finished since)."""
    if home.backend == "sqlite":
        with sqlite3.connect(home.path / "tui-agent.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    runs = home.query(
        "SELECT runs.id, usage_steps, usage_tokens, next_seq, "
        "count(steps.seq) FILTER (WHERE kind NOT IN ('approval', 'user', 'compaction')), "
        "coalesce(sum(tokens), 0), "
        "coalesce(max(seq), 0) FROM runs LEFT JOIN steps ON steps.run_id = runs.id "
        "GROUP BY runs.id, usage_steps, usage_tokens, next_seq"
    )
    for run_id, steps, tokens, next_seq, counted, total, last in runs:
        assert steps == counted, f"run {run_id[:8]}: usage.steps {steps}, {counted} steps"
        assert tokens == total, f"run {run_id[:8]}: usage.llm_tokens {tokens} != {total}"
        assert next_seq == last + 1, f"run {run_id[:8]}: next_seq {next_seq}, last {last}"
    after = steps_now(home)
    for key, old in before.items():
        new = after.get(key)
        assert new is not None, f"committed step {key} was lost"
        if old[1] == "started":
            assert new[:2] == (old[0], new[1]) and new[2:4] == old[2:4], (key, old, new)
        else:
            assert new == old, f"committed step {key} changed: {old} -> {new}"
