"""The chaos harness: several runs against a flaky scripted model, real processes killed
with SIGKILL at random moments, and the durability invariants checked after every round.

Ordinary use happens between the kills: a TUI stays open across rounds, the supervisor is
stopped gracefully and exits by itself when idle, executors are frozen (SIGSTOP) and thawed.

Invariants (product.md, durability): no committed step lost or changed; no recorded LLM
reply requested again; no non-idempotent call run twice; no two copies of a shell call
overlapping, and no call still writing after its executor was killed (a start/end ledger
written by the commands themselves); nothing outside the workspace written; no run stuck;
integrity_check ok; budgets exact; the API key nowhere on disk.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
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
from tui_agent.supervisor.lock import SupervisorLock, pid_alive

SECRET = "sk-chaos-secret-do-not-store"
FINAL = {"completed", "failed", "cancelled"}
PERSON = {"waiting_approval", "needs_attention", "paused"}
CONFIG = """
idle_exit_s = 2
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
    stops: int = 0
    idle_exits: int = 0
    freezes: int = 0
    completed: int = 0
    shell_calls: int = 0
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
            "graceful_stops": self.stops,
            "idle_exits": self.idle_exits,
            "freezes": self.freezes,
            "completed": self.completed,
            "shell_calls": self.shell_calls,
            "violations": self.violations,
        }


def ledger_command(tag: str) -> str:
    """A shell call that says when it starts and ends, under which call mark (its executor's
    pid is in it), and tries to write outside the workspace (the sandbox must stop that)."""
    line = f'{tag} "$TUI_AGENT_CALL" $(date +%s%N)'
    return (
        f"echo start {line} >> side-effects.log; "
        "echo escaped >> ../escaped 2>/dev/null; "
        f"sleep 1; echo end {line} >> side-effects.log"
    )


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
                        {"command": ledger_command(goal.split()[-1])},
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


# What happens at the end of a round: kills, a freeze, a graceful stop, an idle exit.
EVENTS = ("executor", "freeze", "supervisor", "stop", "both", "tui", "idle", "executor")


class _Row(tuple[Any, ...]):
    """A row by position and by column name, as sqlite3.Row gives it."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        return super().__getitem__(self.names[key] if isinstance(key, str) else key)


def _rows_like_sqlite(cursor: Any) -> Any:
    """psycopg's row factory giving `_Row`s."""
    names = {c.name: i for i, c in enumerate(cursor.description or [])}

    def make(values: Any) -> _Row:
        row = _Row(values)
        row.names = names
        return row

    return make


class _PgReads:
    """The harness's own reads on PostgreSQL, shaped like a sqlite3 connection's."""

    def __init__(self, url: str) -> None:
        from tests.pg import connect_store

        self.conn = connect_store(url, autocommit=True, row_factory=_rows_like_sqlite)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), params)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> _PgReads:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Chaos:
    def __init__(
        self, root: Path, seed: int, *, rotate: bool = False, db_url: str | None = None
    ) -> None:
        self.rotate = rotate
        self.db_url = db_url
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
        if db_url is not None:
            self.env["TUI_AGENT_DB_URL"] = db_url
        self.report = Report()
        self.seen_steps: dict[tuple[str, int], tuple[str, str, str | None]] = {}
        self.tui: subprocess.Popen[bytes] | None = None
        self.tui_log = root / "tui.log"
        self.executor_deaths: dict[int, float] = {}  # pid -> when the harness killed it

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

    def db(self) -> Any:
        """A connection for the harness's reads: the SQLite file, or the PostgreSQL store."""
        if self.db_url is not None:
            return _PgReads(self.db_url)
        conn = sqlite3.connect(self.home / "tui-agent.db", timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def pids(self) -> dict[str, list[int]]:
        holder = SupervisorLock(self.home / "supervisor.lock").holder()
        found: dict[str, list[int]] = {"supervisor": [holder] if holder and holder > 0 else []}
        found["tui"] = [self.tui.pid] if self.tui is not None and self.tui.poll() is None else []
        with self.db() as conn:
            found["executor"] = [r[0] for r in conn.execute("SELECT pid FROM executors")]
        return found

    def kill_something(self) -> None:
        if self.rotate:  # quick mode: every kind of event once in len(EVENTS) rounds
            target = EVENTS[(self.report.rounds - 1) % len(EVENTS)]
        else:
            target = self.rng.choice(EVENTS)
        if target == "stop":
            self.cli("supervisor", "stop")
            self.report.stops += 1
            return
        if target == "idle":
            self.wait_idle_exit()
            return
        pids = self.pids()
        if target == "freeze":
            self.freeze(pids["executor"])
            return
        victims = (pids["supervisor"] + pids["executor"]) if target == "both" else pids[target]
        killed = False
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed = True
            if pid in pids["executor"]:
                self.executor_deaths[pid] = time.time()
        if target == "tui" and self.tui is not None:
            self.tui.wait()
        if killed:
            self.report.kills[target] += 1

    def freeze(self, executors: list[int]) -> None:
        """SIGSTOP an executor; past lease_s its supervisor must kill it (it may thaw first)."""
        if not executors:
            return
        pid = self.rng.choice(executors)
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return
        self.report.freezes += 1
        time.sleep(self.rng.uniform(0.5, 4.0))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        # A frozen executor that was killed meanwhile died at most now.
        if not pid_alive(pid):
            self.executor_deaths.setdefault(pid, time.time())

    def wait_idle_exit(self) -> None:
        """Let the supervisor leave by itself (idle_exit_s) while the TUI stays open."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.pids()["supervisor"]:
                self.report.idle_exits += 1
                return
            time.sleep(0.2)

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
            if self.db_url is None and conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                v.append(f"{when}: integrity_check failed")
            # one snapshot: runs and steps read at the same moment
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ" if self.db_url else "BEGIN")
            steps = conn.execute(
                "SELECT run_id, seq, kind, status, call_id, arguments, result FROM steps"
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
        now = {
            (s["run_id"], s["seq"]): (
                s["kind"],
                s["status"],
                s["call_id"],
                s["arguments"],
                s["result"],
            )
            for s in steps
        }
        for key, old in self.seen_steps.items():
            new = now.get(key)
            if new is None:
                v.append(f"{when}: committed step {key} lost")
            elif new[0] != old[0] or new[2:4] != old[2:4]:
                v.append(f"{when}: committed step {key} changed {old} -> {new}")
            elif old[1] != "started" and new[1:] != old[1:]:  # only a started call may finish
                v.append(f"{when}: finished step {key} changed {old} -> {new}")
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
        self.check_ledger()
        if (self.root / "escaped").exists():
            v.append("a shell command wrote outside its workspace")
        self.report.completed = sum(1 for r in runs if r["status"] == "completed")
        for path in self.home.rglob("*"):
            if path.is_file() and SECRET.encode() in path.read_bytes():
                v.append(f"API key found in {path}")

    def check_ledger(self) -> None:
        """Each shell call: at most one copy per run (the model asks once; in-doubt calls are
        skipped, never retried, here), no copy starting before the previous one ended, and
        no `end` written after the harness killed that copy's executor."""
        v = self.report.violations
        log = self.workspace / "side-effects.log"
        lines = log.read_text().splitlines() if log.exists() else []
        copies: dict[tuple[str, str], dict[str, int]] = {}
        for line in lines:
            try:
                what, tag, mark, stamp = line.split(" ")
            except ValueError:
                v.append(f"a torn ledger line: {line!r}")
                continue
            copies.setdefault((tag, mark), {})[what] = int(stamp)
        per_run: dict[str, list[dict[str, int]]] = {}
        for (tag, mark), times in copies.items():
            per_run.setdefault(tag, []).append(times)
            executor = int(mark.split("-", 1)[0]) if mark[:1].isdigit() else 0
            died = self.executor_deaths.get(executor)
            if died is not None and times.get("end", 0) / 1e9 > died + 0.2:
                v.append(f"run {tag}: its command wrote `end` after its executor was killed")
        self.report.shell_calls = len(copies)
        for tag, runs in per_run.items():
            if len(runs) > 1:
                v.append(f"run_shell ran {len(runs)} times for run {tag}")
            runs.sort(key=lambda t: t.get("start", 0))
            for first, second in itertools.pairwise(runs):
                if "end" in first and first["end"] > second.get("start", 0):
                    v.append(f"run {tag}: two copies of its shell call overlapped")

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
        # The TUI first: it starts a supervisor it sees die, which would outlive the test.
        if self.tui is not None and self.tui.poll() is None:
            self.tui.kill()
        for pid in functools.reduce(operator.iadd, self.pids().values(), []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.tui is not None:
            self.tui.wait()
        self.model.stop()


def run_chaos(
    root: Path, rounds: int, seed: int = 1, *, rotate: bool = False, db_url: str | None = None
) -> Report:
    chaos = Chaos(root, seed, rotate=rotate, db_url=db_url)
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
