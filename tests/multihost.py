"""Many machines, tested as such: three supervisors in three network namespaces (a veth pair
each; PostgreSQL and the scripted model on the host side), one store, short runs that each
run a shell command with a side effect. Meanwhile one machine is killed (`kill -9` of
everything in its namespace), another is cut off the network for longer than 2 x lease_s and
put back, and a third's executors are frozen (SIGSTOP) and thawed.

Then every run must complete; each run was held by one executor at a time (its claims'
fencing epochs only grow); no committed step was lost; no shell side effect happened twice;
no recorded model reply was asked for again; the runs of the killed machine were taken over
within 2 x lease_s. Figures are printed as JSON; the exit status is 1 on any violation.

    python -m tests.multihost [--runs 1000] [--quick]

Needs root (ip netns), the machine's PostgreSQL binaries and bubblewrap. Only addresses of
10.231.0.0/16 that this harness creates are ever used, and all of it is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tests.pg import Cluster, find_bindir

SERVICE_IP = "10.231.0.1"  # on the host's loopback: PostgreSQL and the model
NET = "10.231.0.0/16"
LEASE_S = 2.0
LEDGER = 'echo "$TUI_AGENT_CALL" | cut -d/ -f2,3 >> ledger'
RUN_ID = re.compile(r"multihost run ([0-9a-f]{32})")
CONFIG = f"""
idle_exit_s = 120
lease_s = {LEASE_S}
heartbeat_s = 0.3
retry_initial_s = 0.05
retry_max_s = 0.5
max_concurrent_runs = {{concurrency}}
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


@dataclass
class Machine:
    """One namespace with its own tui-agent home, sharing the workspace (a shared volume)."""

    index: int
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"tuiagent-h{self.index}"

    @property
    def node(self) -> str:
        return f"h{self.index}"

    @property
    def link(self) -> str:
        return f"tavh{self.index}"

    def up(self) -> None:
        """The namespace, its veth pair and a default route to the host."""
        i, ns = self.index, self.name
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", self.link, "type", "veth", "peer", "name", f"tavn{i}")
        sh("ip", "link", "set", f"tavn{i}", "netns", ns)
        sh("ip", "addr", "add", f"10.231.{i}.1/30", "dev", self.link)
        sh("ip", "link", "set", self.link, "up")
        inside = ("ip", "netns", "exec", ns)
        sh(*inside, "ip", "addr", "add", f"10.231.{i}.2/30", "dev", f"tavn{i}")
        sh(*inside, "ip", "link", "set", f"tavn{i}", "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "route", "add", "default", "via", f"10.231.{i}.1")

    def down(self) -> None:
        self.kill_all()
        sh("ip", "link", "del", self.link, check=False)
        sh("ip", "netns", "del", self.name, check=False)

    def pids(self) -> list[int]:
        out = sh("ip", "netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]

    def kill_all(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["ip", "netns", "exec", self.name, sys.executable, "-m", "tui_agent", *args]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)

    def executor_pids(self, db: Any) -> list[int]:
        with db.raw_read() as cur:
            rows = cur.execute("SELECT pid FROM executors WHERE node = ?", (self.node,))
            return [int(r[0]) for r in rows.fetchall()]


class Harness:
    def __init__(self, runs: int, concurrency: int, workdir: Path) -> None:
        self.runs = runs
        self.concurrency = concurrency
        self.workdir = workdir
        self.workspace = workdir / "workspace"
        self.workspace.mkdir(parents=True)
        self.machines = [Machine(i, workdir / f"h{i}") for i in (1, 2, 3)]
        self.cluster: Cluster | None = None
        self.llm: ScriptedLLM | None = None
        self.db: Any = None
        self.url = ""
        self.asked_again: list[tuple[str, int]] = []
        self.run_ids: list[str] = []
        self.takeover_s: dict[str, float | None] = {}
        self._service_ip = False

    # ---- the network, the server, the machines -----------------------------------------

    def setup(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("PostgreSQL binaries are not installed (apt-get install postgresql)")
        sh("ip", "addr", "add", f"{SERVICE_IP}/32", "dev", "lo")
        self._service_ip = True
        for m in self.machines:
            m.up()
        self.cluster = Cluster(bindir, listen=f"127.0.0.1,{SERVICE_IP}", trust_net=NET).start()
        self.url = self.cluster.new_database()
        from tui_agent.store.postgres import PgDatabase

        self.db = PgDatabase(self.url)
        self.db.prepare()
        self.llm = ScriptedLLM(host=SERVICE_IP)
        # Three shell calls a run, about a second per model reply: long enough that every
        # machine holds runs mid-flight when its turn of chaos comes.
        self.llm.latency_s = 1.0
        self.llm.script = [
            *(Reply(f"step {i}", [call("run_shell", {"command": LEDGER})]) for i in range(3)),
            Reply("all done"),
        ]
        self.llm.on_request = self._check_request
        self.llm.start()
        remote = self.url.replace("@127.0.0.1:", f"@{SERVICE_IP}:")
        for m in self.machines:
            m.root.mkdir(parents=True)
            home = m.root / "home"
            home.mkdir(mode=0o700)
            (home / "config.toml").write_text(CONFIG.format(concurrency=self.concurrency))
            m.env = {
                **os.environ,
                "TUI_AGENT_HOME": str(home),
                "TUI_AGENT_DB_URL": remote,
                "TUI_AGENT_NODE": m.node,
                "OPENAI_API_KEY": "sk-test-not-a-secret",
                "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            }

    def teardown(self) -> None:
        for m in self.machines:
            with contextlib.suppress(Exception):
                m.down()
        if self.llm is not None:
            with contextlib.suppress(Exception):
                self.llm.stop()
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.dispose()
        if self.cluster is not None:
            self.cluster.stop()
        if self._service_ip:
            sh("ip", "addr", "del", f"{SERVICE_IP}/32", "dev", "lo", check=False)

    def _check_request(self, messages: list[dict[str, Any]], turn: int) -> None:
        """Promise 2 across machines: a reply already recorded is never asked for again."""
        first = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
        found = RUN_ID.search(str(first))
        if found is None:
            return
        with self.db.raw_read() as cur:
            recorded = cur.execute(
                "SELECT count(*) FROM steps WHERE run_id = ? AND kind = 'llm'", (found.group(1),)
            ).fetchone()[0]
        if recorded > turn:
            self.asked_again.append((found.group(1), turn))

    # ---- the work and the chaos ------------------------------------------------------------

    def start_machines(self) -> None:
        for m in self.machines:
            out = m.cli("supervisor", "start")
            if out.returncode != 0:
                raise RuntimeError(f"{m.node}: supervisor start: {out.stderr}")

    def create_runs(self) -> None:
        from tui_agent.domain.models import Budget, Policy, RunSpec
        from tui_agent.store.starts import create_run

        assert self.llm is not None
        base_url = f"http://{SERVICE_IP}:{self.llm.port}/v1"
        for _ in range(self.runs):
            run_id = uuid.uuid4().hex
            spec = RunSpec(
                goal=f"multihost run {run_id}",
                workspace=str(self.workspace),
                model="scripted",
                budget=Budget(),
                policy=Policy(approval_risks=()),
                base_url=base_url,
            )
            create_run(self.db, spec, run_id)
            self.run_ids.append(run_id)

    def _held_by(self, node: str) -> dict[str, int]:
        with self.db.raw_read() as cur:
            rows = cur.execute(
                "SELECT id, epoch FROM runs WHERE owner_node = ? AND status = 'running'", (node,)
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def _taken_over(self, held: dict[str, int], node: str, began: float, what: str) -> None:
        """Seconds until every run `node` held has a new claim (or ended) elsewhere."""
        if not held:
            self.takeover_s[what] = None  # the event met no run: a harness fault, reported
            return
        deadline = began + 60
        while time.monotonic() < deadline:
            with self.db.raw_read() as cur:
                left = (
                    [
                        r[0]
                        for r in cur.execute(
                            "SELECT id, epoch, owner_node, status FROM runs WHERE id IN "
                            f"({', '.join('?' * len(held))})",
                            tuple(held),
                        ).fetchall()
                        if r[3] == "running" and (r[2] == node or r[1] == held[r[0]])
                    ]
                    if held
                    else []
                )
            if not left:
                self.takeover_s[what] = round(time.monotonic() - began, 2)
                return
            time.sleep(0.05)
        self.takeover_s[what] = float("inf")

    def wait_until_busy(self, node: str, at_least: int = 2, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self._held_by(node)) < at_least:
            time.sleep(0.05)

    def chaos(self) -> None:
        h1, h2, h3 = self.machines
        # 1. kill -9 everything of h1, then bring it back.
        self.wait_until_busy(h1.node)
        held = self._held_by(h1.node)
        began = time.monotonic()
        h1.kill_all()
        self._taken_over(held, h1.node, began, "killed")
        h1.cli("supervisor", "start")
        # 2. cut h2 off for 2.5 x lease_s, then put it back.
        self.wait_until_busy(h2.node)
        held = self._held_by(h2.node)
        began = time.monotonic()
        sh("ip", "link", "set", h2.link, "down")
        waiter = threading.Thread(
            target=self._taken_over, args=(held, h2.node, began, "cut_off"), daemon=True
        )
        waiter.start()
        time.sleep(2.5 * LEASE_S)
        sh("ip", "link", "set", h2.link, "up")
        waiter.join(60)
        # 3. freeze h3's executors past their lease, then thaw them.
        self.wait_until_busy(h3.node)
        held = self._held_by(h3.node)
        frozen = h3.executor_pids(self.db)
        began = time.monotonic()
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        self._taken_over(held, h3.node, began, "frozen")
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def finish(self, timeout: float) -> int:
        """Wait for every run to end; a call in doubt is resolved as a careful person would:
        skipped if its side effect is in the ledger, retried if not. Returns how many."""
        from tui_agent.store.run_store import RunStore

        store = RunStore(self.db)
        resolved = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db.raw_read() as cur:
                open_runs = cur.execute(
                    "SELECT id, status FROM runs WHERE status NOT IN ('completed','failed',"
                    "'cancelled')"
                ).fetchall()
            if not open_runs:
                return resolved
            for run_id, status in open_runs:
                if status == "needs_attention":
                    step = store.in_doubt_step(run_id)
                    ran = step is not None and self.ledger()[f"{run_id}/{step.seq}"] > 0
                    store.resolve(run_id, "skip" if ran else "retry", by="harness")
                    resolved += 1
            time.sleep(0.2)
        return resolved

    def ledger(self) -> Counter[str]:
        path = self.workspace / "ledger"
        return Counter(path.read_text().split()) if path.exists() else Counter()

    # ---- the verdict -----------------------------------------------------------------------

    def verdict(self) -> dict[str, Any]:
        ledger = self.ledger()
        with self.db.raw_read() as cur:
            statuses = Counter(r[0] for r in cur.execute("SELECT status FROM runs").fetchall())
            runs = cur.execute("SELECT id, epoch, next_seq, usage_steps FROM runs").fetchall()
            steps: dict[str, list[Any]] = {}
            for r in cur.execute(
                "SELECT run_id, seq, kind, status FROM steps ORDER BY run_id, seq"
            ).fetchall():
                steps.setdefault(r[0], []).append(r)
            claims: dict[str, list[int]] = {}
            for r in cur.execute(
                "SELECT run_id, data_json FROM events WHERE kind = 'claimed' ORDER BY id"
            ).fetchall():
                claims.setdefault(r[0], []).append(int(json.loads(r[1]).get("epoch", 0)))
        lost = epoch_faults = finished_without_effect = 0
        for run_id, epoch, next_seq, usage_steps in runs:
            mine = steps.get(run_id, [])
            if [s[1] for s in mine] != list(range(1, next_seq)):
                lost += 1
            if usage_steps != sum(1 for s in mine if s[2] != "approval"):
                lost += 1
            seen = claims.get(run_id, [])
            if seen != sorted(set(seen)) or (seen and seen[-1] != epoch):
                epoch_faults += 1
            for s in mine:
                if s[2] == "tool" and s[3] == "finished" and ledger[f"{run_id}/{s[1]}"] != 1:
                    finished_without_effect += 1
        return {
            "runs": self.runs,
            "machines": len(self.machines),
            "cores": os.cpu_count(),
            "lease_s": LEASE_S,
            "statuses": dict(statuses),
            "side_effects_twice": sum(1 for n in ledger.values() if n > 1),
            "finished_calls_without_their_side_effect": finished_without_effect,
            "replies_requested_again": len(self.asked_again),
            "steps_lost": lost,
            "epoch_violations": epoch_faults,
            "takeover_s": self.takeover_s,
        }


def run(runs: int, *, concurrency: int = 8, timeout: float = 600) -> dict[str, Any]:
    """The whole scenario; returns the figures (with `violations`)."""
    workdir = Path(tempfile.mkdtemp(prefix="tui-agent-multihost-"))
    harness = Harness(runs, concurrency, workdir)
    began = time.monotonic()
    try:
        harness.setup()
        harness.start_machines()
        harness.create_runs()
        harness.chaos()
        resolved = harness.finish(timeout)
        figures = harness.verdict()
    finally:
        harness.teardown()
        shutil.rmtree(workdir, ignore_errors=True)
    figures["in_doubt_resolved"] = resolved
    figures["elapsed_s"] = round(time.monotonic() - began, 1)
    figures["violations"] = [
        name
        for name, bad in (
            ("not every run completed", figures["statuses"] != {"completed": runs}),
            ("a side effect ran twice", figures["side_effects_twice"]),
            (
                "a finished call has no side effect",
                figures["finished_calls_without_their_side_effect"],
            ),
            ("a recorded reply was asked for again", figures["replies_requested_again"]),
            ("a step was lost", figures["steps_lost"]),
            ("an epoch went backwards", figures["epoch_violations"]),
            (
                "a takeover took longer than 2 x lease_s",
                any(t is not None and t > 2 * LEASE_S for t in figures["takeover_s"].values()),
            ),
            (
                "a chaos event met no run in flight",
                any(t is None for t in figures["takeover_s"].values()),
            ),
        )
        if bad
    ]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.multihost", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="60 runs: the suite's size")
    parser.add_argument("--concurrency", type=int, help="max_concurrent_runs (8; quick: 4)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (ip netns)", file=sys.stderr)
        return 2
    concurrency = args.concurrency or (4 if args.quick else 8)
    figures = run(60 if args.quick else args.runs, concurrency=concurrency)
    print(json.dumps(figures, indent=2))
    return 1 if figures["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
