"""Recovery time: `kill -9` of the executor (supervisor survives), and of everything
(`supervisor start` recovers), each until the next new step starts at the model server."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench.common import bench_env, emit, median, scratch, seed_run
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tui_agent.store.journal import StepJournal
from tui_agent.store.run_store import open_store

CONFIG = "lease_s = 2.0\nheartbeat_s = 0.5\nidle_exit_s = 60\n"
# A long run is bounded: its requests (and its resume) start from its newest compaction.
CONTEXT_TOKENS = 4000


def process_floor(db: Path) -> float:
    """Starting a Python process that opens the database and reads from it."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", f"import sqlite3; sqlite3.connect({str(db)!r}).execute('select 1')"],
        check=True,
    )
    return time.perf_counter() - start


def _wait(predicate, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.002)
    raise TimeoutError("benchmark condition not reached")


class Harness:
    def __init__(self, done_steps: int) -> None:
        self.home = scratch(f"resume{done_steps}")
        self.home.chmod(0o700)
        (self.home / "config.toml").write_text(CONFIG)
        self.fail_dir = self.home / "failpoints"
        self.fail_dir.mkdir()
        self.llm = ScriptedLLM().start()
        self.llm.default = Reply(
            "Again.",
            [call("list_dir", {})],
            usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        )
        self.env = bench_env(
            self.home,
            OPENAI_BASE_URL=self.llm.base_url,
            TUI_AGENT_FAILPOINT_DIR=str(self.fail_dir),
            TUI_AGENT_FAILPOINTS="llm.after_record=pause@2",
        )
        self.run_id = self._seed(done_steps)

    def _seed(self, done: int) -> str:
        store = open_store(self.home / "tui-agent.db")
        run_id = seed_run(
            store,
            "resume bench",
            self.home,
            model="scripted",
            base_url=self.llm.base_url,
            max_steps=10**7,
            max_context_tokens=CONTEXT_TOKENS,
        )
        journal = StepJournal(store.db, "seed", 0)
        journal.claim(1, 3600)
        for i in range(done // 2):
            seq = journal.record_llm_reply(
                run_id,
                {
                    "content": "x",
                    "tool_calls": [{"id": f"s{i}", "name": "list_dir", "arguments": "{}"}],
                },
                15,
                0.0,
            )
            start = journal.journal_tool_start(
                run_id, llm_seq=seq, call_id=f"s{i}", tool="list_dir", arguments="{}", wall=0.0
            )
            from tui_agent.domain.models import StepStatus

            journal.finish_tool(
                run_id, start, status=StepStatus.FINISHED, result="(empty)", wall=0.0
            )
        # As the run itself would have: its older turns folded into a compaction.
        from tui_agent.engine.context import plan_compaction
        from tui_agent.tools.builtin import builtin_registry

        run, steps = journal.load(run_id)
        tools = builtin_registry().schemas()
        plan = plan_compaction(run, steps, tools, CONTEXT_TOKENS)
        assert plan is not None
        journal.record_compaction(run_id, {**plan.payload, "limit": CONTEXT_TOKENS}, 0.0)
        journal.release_to_queue(run_id, 0.0)
        store.close()
        return run_id

    def cli(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "tui_agent", *args],
            env=self.env,
            check=True,
            capture_output=True,
        )

    def paused_pid(self) -> int:
        marker = self.fail_dir / "llm.after_record"
        _wait(lambda: marker.exists() and marker.read_text().strip())
        return int(marker.read_text().split()[0])

    def standby_ready(self) -> None:
        """Steady state: the supervisor's spare has finished importing (it logs so)."""
        log = self.home / "logs" / "executor.log"
        _wait(lambda: log.exists() and "standby" in log.read_text() and " ready" in log.read_text())

    def requests(self) -> int:
        return len(self.llm.requests)

    def all_pids(self) -> list[int]:
        pids = []
        lock_file = self.home / "supervisor.lock"
        lock = lock_file.read_text().strip() if lock_file.exists() else ""
        if lock.isdigit():
            pids.append(int(lock))
        out = (
            subprocess.run(
                ["pgrep", "-f", f"supervisor-pid {pids[0]}"], capture_output=True, text=True
            ).stdout.split()
            if pids
            else []
        )
        return pids + [int(p) for p in out]

    def close(self) -> None:
        for pid in self.all_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.llm.stop()


def resume_executor(done_steps: int) -> tuple[float, float]:
    h = Harness(done_steps)
    try:
        h.cli("supervisor", "start")
        pid = h.paused_pid()
        h.standby_ready()
        before = h.requests()
        killed = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: h.requests() > before)
        took = time.perf_counter() - killed
        floor = process_floor(h.home / "tui-agent.db")
        return took, floor
    finally:
        h.close()


def resume_all(done_steps: int) -> tuple[float, float]:
    h = Harness(done_steps)
    try:
        h.cli("supervisor", "start")
        h.paused_pid()
        for pid in h.all_pids():
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        with sqlite3.connect(h.home / "tui-agent.db") as conn:
            assert conn.execute("SELECT status FROM runs").fetchone()[0] == "running"
        before = h.requests()
        start = time.perf_counter()
        h.cli("supervisor", "start")
        _wait(lambda: h.requests() > before)
        took = time.perf_counter() - start
        floor = process_floor(h.home / "tui-agent.db")
        return took, floor
    finally:
        h.close()


def run(quick: bool) -> None:
    repeats = 1 if quick else 3
    took: dict[int, float] = {}
    for done in (10, 10_000):
        samples = [resume_executor(done) for _ in range(repeats)]
        value = took[done] = median([s[0] for s in samples])
        floor = median([s[1] for s in samples])
        emit(
            f"resume_executor_{done}",
            value,
            "s",
            floor,
            "<= 0.5 s, flat in steps done",
            value <= 0.5,
            steps_done=done,
        )
    flat = took[10_000] / took[10]
    emit(
        "resume_executor_flatness",
        flat,
        "x",
        1.0,
        "10,000 steps within 1.5x of 10 (bounded context)",
        flat <= 1.5,
    )
    samples = [resume_all(10) for _ in range(repeats)]
    value = median([s[0] for s in samples])
    floor = median([s[1] for s in samples])
    emit("resume_all", value, "s", floor, "<= 1.0 s", value <= 1.0)


if __name__ == "__main__":
    run(quick=True)
