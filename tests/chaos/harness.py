"""The chaos harness: several runs against a flaky scripted model, real processes killed
with SIGKILL at random moments, and the durability invariants checked after every round.

Invariants (product.md, durability): no committed step lost or changed; no recorded LLM
reply requested again; no non-idempotent call run twice; no run stuck; integrity_check ok;
budgets exact; the API key nowhere on disk.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.llm_server import Reply, ScriptedLLM, call

SECRET = "sk-chaos-secret-do-not-store"
FINAL = {"completed", "failed", "cancelled"}
PERSON = {"waiting_approval", "needs_attention", "paused"}
CONFIG = """
idle_exit_s = 120
lease_s = 2.0
heartbeat_s = 0.3
retry_initial_s = 0.05
retry_max_s = 0.3
llm_max_attempts = 8
max_concurrent_runs = 8
"""
# One is tried every round, while runs execute and processes die: one line, exit 2 (3 for an
# unknown run), and not a row written.
BAD_INPUTS: tuple[tuple[str, ...], ...] = (
    ("run", ""),
    ("run", "x", "--max-steps", "-1"),
    ("run", "x", "--max-tokens", "lots"),
    ("run", "x", "--max-wall-time", "inf"),
    ("run", "x", "--max-steps", "100000000000000000000"),
    ("run", "x", "--workspace", "/does/not/exist"),
    ("run", "x", "--auto-approve", "everything"),
    ("ls", "--limit", "0"),
    ("ls", "--status", "sleeping"),
    ("show", "deadbeef"),
    ("approve", "deadbeef"),
    ("deny", "deadbeef", "--reason"),
    ("resume", "deadbeef", "--max-steps", "0"),
    ("resolve", "deadbeef", "maybe"),
    ("supervisor", "reboot"),
)


@dataclass
class Report:
    rounds: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    faults_injected: int = 0
    requests: int = 0
    runs: int = 0
    steps_checked: int = 0
    in_doubt_resolved: int = 0
    bad_inputs: int = 0
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "kills": dict(self.kills),
            "kills_total": sum(self.kills.values()),
            "faults_injected": self.faults_injected,
            "requests": self.requests,
            "runs": self.runs,
            "steps_checked": self.steps_checked,
            "in_doubt_resolved": self.in_doubt_resolved,
            "bad_inputs": self.bad_inputs,
            "violations": self.violations,
        }


class FlakyModel(ScriptedLLM):
    """Every run does: list_dir, run_shell (appends one line per call id), then finishes.

    Replies depend on the conversation only; ~30% of requests get a 429/500 first. The
    server counts requests per (goal, turn) *after* a reply was sent successfully.
    """

    def __init__(self, rng: random.Random, fault_rate: float = 0.3) -> None:
        super().__init__()
        self.rng = rng
        self.fault_rate = fault_rate
        self.faults_injected = 0
        self.answered: list[tuple[str, int, float]] = []  # (goal, turn, time received)

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes, float]:
        messages = body.get("messages", [])
        goal = next((m["content"] for m in messages if m.get("role") == "user"), "")
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        received = time.time()
        delay = self.rng.uniform(0.0, 0.15)
        if self.rng.random() < self.fault_rate:
            self.faults_injected += 1
            status = self.rng.choice([429, 500, 503])
            payload = json.dumps({"error": {"message": f"chaos {status}"}}).encode()
            headers = {"Retry-After": "0.05"} if status == 429 else {}
            return status, headers, payload, delay
        if turn == 0:
            reply = Reply("Look first.", [call("list_dir", {})])
        elif turn == 1:
            reply = Reply(
                "Act once.",
                [
                    call(
                        "run_shell",
                        {"command": f"echo {goal.split()[-1]}-$(date +%s%N) >> side-effects.log"},
                    )
                ],
            )
        else:
            reply = Reply(f"Finished {goal}.")
        self.script = [reply] * (turn + 1)
        status, headers, data, _ = super()._answer(body)
        with self._lock:
            self.answered.append((goal, turn, received))
        return status, headers, data, delay


class Chaos:
    def __init__(self, root: Path, seed: int) -> None:
        self.rng = random.Random(seed)
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, mode=0o700)
        (self.home / "config.toml").write_text(CONFIG)
        self.workspace = root / "ws"
        self.workspace.mkdir()
        # The model draws from its own generator in server threads, so the rounds (what is
        # started, tried and killed) stay the same for a seed however requests interleave.
        self.model = FlakyModel(random.Random(seed * 7919 + 1)).start()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TUI_AGENT_"))},
            "TUI_AGENT_HOME": str(self.home),
            "OPENAI_BASE_URL": self.model.base_url,
            "OPENAI_API_KEY": SECRET,
            "TUI_AGENT_MODEL": "chaos",
        }
        self.report = Report()
        self.seen_steps: dict[tuple[str, int], tuple[str, str, str | None]] = {}
        self.tui: subprocess.Popen[bytes] | None = None
        self.tui_log = root / "tui.log"

    # ---- driving -----------------------------------------------------------------------

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "tui_agent", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if "Traceback" in proc.stderr or proc.stderr.count("\n") > 1:
            self.report.violations.append(
                f"`{' '.join(args)}` printed more than a line: {proc.stderr}"
            )
        return proc

    def ensure_tui(self) -> None:
        """A headless TUI, started the way a user starts it, watching the home like a person."""
        if self.tui is not None and self.tui.poll() is None:
            return
        if self.tui is not None and self.tui.returncode != -signal.SIGKILL:
            tail = self.tui_log.read_text(errors="replace")[-2000:]
            self.report.violations.append(
                f"the TUI exited by itself ({self.tui.returncode}): {tail}"
            )
        env = {**self.env, "TEXTUAL_DRIVER": "textual.drivers.headless_driver:HeadlessDriver"}
        with self.tui_log.open("ab") as log:
            self.tui = subprocess.Popen(
                [sys.executable, "-m", "tui_agent"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def start_runs(self, n: int) -> None:
        for _ in range(n):
            self.report.runs += 1
            goal = f"chaos run {self.report.runs}"
            proc = self.cli(
                "run",
                goal,
                "--workspace",
                str(self.workspace),
                "--auto-approve",
                "external_action",
                "--max-steps",
                "20",
            )
            assert proc.returncode == 0, proc.stderr

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.home / "tui-agent.db", timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def pids(self) -> dict[str, list[int]]:
        lock = self.home / "supervisor.lock"
        sup = lock.read_text().strip() if lock.exists() else ""
        found: dict[str, list[int]] = {"supervisor": [int(sup)] if sup.isdigit() else []}
        found["tui"] = [self.tui.pid] if self.tui is not None and self.tui.poll() is None else []
        with self.db() as conn:
            found["executor"] = [r[0] for r in conn.execute("SELECT pid FROM executors")]
        return found

    def kill_something(self) -> None:
        target = self.rng.choice(["executor", "executor", "supervisor", "both", "tui"])
        pids = self.pids()
        victims = (pids["supervisor"] + pids["executor"]) if target == "both" else pids[target]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        if target == "tui" and self.tui is not None:
            self.tui.wait()
        if victims:
            self.report.kills[target] += 1

    def try_bad_input(self) -> None:
        args = self.rng.choice(BAD_INPUTS)
        with self.db() as conn:
            before = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        proc = self.cli(*args)
        self.report.bad_inputs += 1
        with self.db() as conn:
            after = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        if proc.returncode not in (2, 3) or not proc.stderr.startswith("tui-agent: "):
            self.report.violations.append(f"{args}: exit {proc.returncode}, {proc.stderr!r}")
        if after != before:
            self.report.violations.append(f"{args} wrote a run")

    def round(self) -> None:
        self.report.rounds += 1
        if self.rng.random() < 0.5 or self.report.rounds == 1:
            self.start_runs(self.rng.randint(1, 3))
        self.ensure_tui()
        self.cli("supervisor", "start")
        self.try_bad_input()
        time.sleep(self.rng.uniform(0.2, 1.5))
        self.kill_something()
        self.check("after kill")

    def settle(self, timeout: float = 120) -> None:
        """Restart, decide what waits for a person, and let everything finish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.cli("supervisor", "start")
            with self.db() as conn:
                rows = conn.execute("SELECT id, status FROM runs").fetchall()
            open_runs = [r for r in rows if r["status"] not in FINAL]
            if not open_runs:
                return
            for r in open_runs:
                if r["status"] == "needs_attention":
                    # A person looks at the side-effect log and skips (it ran or not: unknown).
                    self.cli("resolve", r["id"], "skip")
                    self.report.in_doubt_resolved += 1
            time.sleep(0.3)
        self.report.violations.append(f"runs still open after {timeout}s: {open_runs}")

    # ---- invariants --------------------------------------------------------------------

    def check(self, when: str) -> None:
        v = self.report.violations
        conn = self.db()
        try:
            if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                v.append(f"{when}: integrity_check failed")
            conn.execute("BEGIN")  # one snapshot: runs and steps read at the same moment
            steps = conn.execute(
                "SELECT run_id, seq, kind, status, call_id, result FROM steps"
            ).fetchall()
            runs = conn.execute("SELECT id, status, usage_steps, usage_tokens FROM runs").fetchall()
            tokens = dict(
                conn.execute("SELECT run_id, sum(tokens) FROM steps GROUP BY run_id").fetchall()
            )
            counted = dict(
                conn.execute(
                    "SELECT run_id, count(*) FROM steps WHERE kind != 'approval' GROUP BY run_id"
                ).fetchall()
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        now = {(s["run_id"], s["seq"]): (s["kind"], s["status"], s["call_id"]) for s in steps}
        for key, old in self.seen_steps.items():
            new = now.get(key)
            if new is None:
                v.append(f"{when}: committed step {key} lost")
            elif new[0] != old[0] or new[2] != old[2]:
                v.append(f"{when}: committed step {key} changed {old} -> {new}")
        self.seen_steps = now
        self.report.steps_checked = len(now)
        for r in runs:
            if r["usage_steps"] != counted.get(r["id"], 0):
                v.append(
                    f"{when}: run {r['id'][:8]} counts {r['usage_steps']} steps, "
                    f"has {counted.get(r['id'], 0)}"
                )
            if r["usage_tokens"] != (tokens.get(r["id"]) or 0):
                v.append(f"{when}: run {r['id'][:8]} token total differs from its steps")
        self.report.requests = len(self.model.answered)
        self.report.faults_injected = self.model.faults_injected

    def check_final(self) -> None:
        v = self.report.violations
        self.check("final")
        with self.db() as conn:
            runs = conn.execute("SELECT id, goal, status, error FROM runs").fetchall()
        for r in runs:
            if r["status"] not in FINAL and r["status"] not in PERSON:
                v.append(f"run {r['id'][:8]} stuck in {r['status']}")
            if r["status"] == "failed":
                v.append(f"run {r['id'][:8]} failed: {r['error']}")
        # A recorded reply is never requested again: no request for a turn may arrive after
        # the step holding that turn's reply was committed. (Earlier duplicates are replies
        # lost in flight: the executor died before recording them.)
        with self.db() as conn:
            recorded = conn.execute(
                "SELECT r.goal, s.created_at FROM steps s JOIN runs r ON r.id = s.run_id "
                "WHERE s.kind = 'llm' ORDER BY s.run_id, s.seq"
            ).fetchall()
        committed: dict[tuple[str, int], float] = {}
        turn_of: Counter[str] = Counter()
        for goal, created in recorded:
            committed[(goal, turn_of[goal])] = created
            turn_of[goal] += 1
        for goal, turn, at in self.model.answered:
            done = committed.get((goal, turn))
            if done is not None and at > done:
                v.append(f"{goal}: turn {turn} requested again after it was recorded")
        # No non-idempotent call ran twice: one line per run in the side-effect log at most.
        log = self.workspace / "side-effects.log"
        lines = log.read_text().splitlines() if log.exists() else []
        per_run = Counter(line.rsplit("-", 1)[0] for line in lines)
        for run_tag, n in per_run.items():
            if n > 1:
                v.append(f"run_shell ran {n} times for run {run_tag}")
        for path in self.home.rglob("*"):
            if path.is_file() and SECRET.encode() in path.read_bytes():
                v.append(f"API key found in {path}")

    def check_tui(self) -> None:
        """Killed or not, the TUI never printed a traceback, and it reattached to a real run."""
        try:
            selected = json.loads((self.home / "ui-state.json").read_text())["selected_run"]
        except (OSError, ValueError, KeyError) as exc:
            self.report.violations.append(f"the TUI's ui-state.json is unreadable: {exc!r}")
        else:
            with self.db() as conn:
                if conn.execute("SELECT 1 FROM runs WHERE id = ?", (selected,)).fetchone() is None:
                    self.report.violations.append("the TUI selected a run that is not there")
        text = self.tui_log.read_text(errors="replace") if self.tui_log.exists() else ""
        if "Traceback" in text or "Error" in text:
            self.report.violations.append(f"the TUI printed an error: {text[-2000:]}")

    def close(self) -> None:
        for pid in functools.reduce(operator.iadd, self.pids().values(), []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.tui is not None:
            self.tui.wait()
        self.model.stop()


def run_chaos(root: Path, rounds: int, seed: int = 1) -> Report:
    chaos = Chaos(root, seed)
    try:
        for _ in range(rounds):
            chaos.round()
        chaos.ensure_tui()  # the TUI reattaches and stays up while everything finishes
        chaos.settle()
        chaos.check_final()
        chaos.ensure_tui()  # ... and did not die by itself meanwhile
        chaos.check_tui()
    finally:
        chaos.close()
    return chaos.report
