"""An executor process: claims runnable runs and advances each in its own thread.

It holds leases with heartbeats. If its supervisor dies it stops taking work, hands its runs
back and exits; if it is killed, the supervisor frees its runs at once and starts another.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tui_agent import failpoints
from tui_agent.domain.errors import StoreUnavailable
from tui_agent.domain.models import Run
from tui_agent.engine.preflight import run_obstacle
from tui_agent.engine.worker import RetryPolicy, RunWorker
from tui_agent.live import LiveChannel
from tui_agent.llm.base import LLMClient
from tui_agent.llm.factory import ClientPool
from tui_agent.settings import Settings
from tui_agent.store.factory import open_database_for
from tui_agent.store.journal import StepJournal
from tui_agent.store.leases import LeaseStore
from tui_agent.supervisor.call_watchdog import CallWatchdog
from tui_agent.supervisor.logs import Outage
from tui_agent.supervisor.main import EXIT_STUCK
from tui_agent.supervisor.watchdog import is_late
from tui_agent.tools.builtin import builtin_registry

if TYPE_CHECKING:
    from tui_agent.tools.mcp_tools import McpServers

log = logging.getLogger(__name__)
POLL_S = 0.05
# Unable to renew its leases for this share of lease_s, an executor stops its runs' work:
# before the lease runs out and anyone else may take them over.
SELF_FENCE = 0.75
FENCE_CHECK_S = 0.1


@dataclass
class _LetGo:
    """A run let go of whose thread has not ended yet."""

    worker: RunWorker
    thread: threading.Thread
    answered: float | None = None  # when the store answered a heartbeat since


class Executor:
    def __init__(self, settings: Settings, supervisor_pid: int) -> None:
        self.settings = settings
        self.supervisor_pid = supervisor_pid
        self.pid = os.getpid()
        self.db = open_database_for(settings, pool_size=settings.max_concurrent_runs + 2)
        self.journal = StepJournal(
            self.db,
            f"{self.pid}-{uuid.uuid4().hex[:8]}",
            self.pid,
            node=settings.node,
            queues=settings.queues,
        )
        self.leases = LeaseStore(self.db, node=settings.node, queues=settings.queues)
        self.mcp = _mcp_servers(settings, self.journal.owner)
        self.tools = builtin_registry(self.mcp.tools if self.mcp is not None else None)
        self.clients = ClientPool()
        self.retry = RetryPolicy(
            settings.llm_max_attempts, settings.retry_initial_s, settings.retry_max_s
        )
        self.stopping = threading.Event()
        db_files = (
            []
            if settings.shared
            else [Path(f"{settings.db_path}{suffix}") for suffix in ("", "-wal", "-shm")]
        )
        # What no command may see, even read-only: our home and the database wherever it is.
        self._private = (settings.home, *db_files)
        self.live = LiveChannel(settings.live_dir)
        self.workers: dict[str, tuple[RunWorker, threading.Thread]] = {}
        self._claims_outage = Outage(log, "cannot claim runs")
        self._renewed = time.monotonic()  # when the last successful heartbeat began
        self._beat_outage = Outage(log, "heartbeats cannot be written")
        self._let_go: dict[str, _LetGo] = {}
        self._lock = threading.Lock()
        self._watchdog: CallWatchdog | None = None

    def serve(self, *, standby: bool = False) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        if standby:
            log.info("standby %d ready", self.pid)
        if standby and not _wait_for_promotion():
            self.db.dispose()
            return
        failpoints.hit("executor.serve")
        if not self._register():
            self.db.dispose()
            return
        self._renewed = time.monotonic()  # (a standby may have waited long for this)
        # Before any claim: no call of this executor runs without it.
        self._watchdog = CallWatchdog(self.journal.owner, self._fence_s, self._renewed)
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        fence = threading.Thread(target=self._fence_loop, name="fence", daemon=True)
        fence.start()
        try:
            while not self.stopping.is_set():
                if os.getppid() != self.supervisor_pid:
                    log.warning("supervisor %s is gone; handing runs back", self.supervisor_pid)
                    break
                working = self._reap()
                if self._silent() > self._fence_s:
                    # Fenced off (its heartbeats fail or hang): no new work until a renewal;
                    # its watchdog would freeze the calls of a run claimed now.
                    self.stopping.wait(POLL_S)
                    continue
                most = self.settings.max_concurrent_runs
                free = most - len(working)
                # Runs of a dead executor (or machine) may take this one up to twice its
                # places: they were under way, and wait for no queue.
                orphans = 2 * most - len(working)
                try:
                    claimed = self.journal.claim(
                        free, self.settings.lease_s, working, orphans=orphans
                    )
                except StoreUnavailable as exc:
                    self._claims_outage.failed(exc)
                    self.stopping.wait(1.0)
                    continue
                self._claims_outage.ok()
                for run_id in claimed:
                    self._start(run_id)
                self.stopping.wait(POLL_S)
        finally:
            self.stopping.set()
            for _, thread in list(self.workers.values()):
                thread.join(timeout=30)
            self.leases.unregister_executor(self.pid)
            self.db.dispose()
            if self.mcp is not None:
                self.mcp.close()
            if self._watchdog is not None:
                self._watchdog.close()

    def _register(self) -> bool:
        """Appear in the store (retried while it cannot be reached: a standby promoted
        after an outage holds a connection from before it); False: told to stop."""
        outage = Outage(log, "cannot register with the store")
        while not self.stopping.is_set():
            try:
                self.leases.register_executor(self.pid, self.supervisor_pid)
                outage.ok()
                return True
            except StoreUnavailable as exc:
                outage.failed(exc)
                self.stopping.wait(1.0)
        return False

    def _start(self, run_id: str) -> None:
        worker = RunWorker(
            self.journal,
            run_id,
            self.tools,
            self._client_for,
            self.retry,
            self.stopping,
            private=self._private,
            obstacle=self._obstacle,
            live=self.live,
            stream=self.settings.stream,
        )
        thread = threading.Thread(target=worker.run, name=f"run-{run_id[:8]}", daemon=True)
        with self._lock:
            self.workers[run_id] = (worker, thread)
        thread.start()

    def _obstacle(self, run: Run) -> str | None:
        """What keeps the run from going on here, this process's environment included (the
        model client is made in it)."""
        return run_obstacle(run, env=os.environ)

    def _client_for(self, run: Run) -> LLMClient:
        return self.clients.get(run.model, run.base_url)

    def _reap(self) -> set[str]:
        """Forget finished run threads; returns the runs still being advanced here."""
        with self._lock:
            for run_id, (_, thread) in list(self.workers.items()):
                if not thread.is_alive():
                    del self.workers[run_id]
                    self._let_go.pop(run_id, None)
            return set(self.workers)

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(self.settings.heartbeat_s):
            failpoints.hit("executor.heartbeat")
            with self._lock:
                # (A run let go of is still renewed while its thread ends, so that nobody
                # takes it over beside that thread; one that never ends, see _end_if_stuck.)
                current = dict(self.workers)
            walls = {run_id: w.take_wall() for run_id, (w, _) in current.items()}
            began = time.monotonic()
            try:
                held = self.journal.heartbeat(walls, self.settings.lease_s)
            except Exception as exc:  # a busy database must not kill the heartbeat thread
                self._beat_outage.failed(exc)
                continue
            self._beat_outage.ok()
            # The leases were renewed from (no later than) `began`. Learned past the fence
            # (this process was frozen, say), the runs are let go as the fence loop would
            # have: the watchdog froze their calls by the same rule and only this ends them.
            at, previous = time.monotonic(), self._renewed
            late = is_late(previous, at, self._fence_s)
            self._renewed = began
            if self._watchdog is not None:
                self._watchdog.renewed(began, at)
            if late:
                self._let_go_of_all(f"leases not renewed for {at - previous:.1f}s")
            with self._lock:
                for entry in self._let_go.values():
                    entry.answered = entry.answered or time.monotonic()
            for run_id, (worker, _) in current.items():
                if run_id not in held:
                    if self.journal.holds(run_id):  # (not a run its worker just let go of)
                        self._let_go_of({run_id: current[run_id]}, "lease lost")
                elif held[run_id]:
                    worker.cancel.set()

    def _fence_loop(self) -> None:
        """Our own fence, apart from the heartbeat (which may hang on the network): once the
        leases have not been renewed for ¾ of lease_s, another executor (of another
        machine, perhaps) may take the runs soon: what they run here must end first."""
        while not self.stopping.wait(FENCE_CHECK_S):
            silent = self._silent()
            if silent > self._fence_s:
                self._let_go_of_all(f"leases not renewed for {silent:.1f}s")
            self._end_if_stuck()

    @property
    def _fence_s(self) -> float:
        return self.settings.lease_s * SELF_FENCE

    def _silent(self) -> float:
        """How long since the last renewal began: past `_fence_s` this executor is fenced."""
        return time.monotonic() - self._renewed

    def _let_go_of_all(self, why: str) -> None:
        with self._lock:
            everything = dict(self.workers)
        self._let_go_of(everything, why)

    def _end_if_stuck(self) -> None:
        """A run let go of whose thread is still busy, once the store answered again, past
        every bound of what it may be waiting on is stuck where nothing can stop it (a hung
        call; on PostgreSQL the server ends a transaction left open, so the heartbeats go
        on beside it). The executor then ends, as a hung one is killed: the side effects of
        its calls end with it and its supervisor recovers its runs like those of any
        executor that died."""
        now = time.monotonic()
        with self._lock:
            stuck = [
                (run_id, patience)
                for run_id, entry in self._let_go.items()
                if entry.answered is not None
                and entry.thread.is_alive()
                and now - entry.answered > (patience := self._patience(entry.worker))
            ]
        if not stuck:
            return
        log.error(
            "run %s did not stop within %.0fs of being let go; this executor ends so that "
            "its work ends with it",
            ", ".join(run_id for run_id, _ in stuck),
            stuck[0][1],
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_STUCK)

    def _patience(self, worker: RunWorker) -> float:
        """How long a let-go run's thread may stay busy after the store answered again:
        whatever it waits on has ended by its own bound by then (a model request by its
        timeout, twice over for a stalled stream or a retry without streaming; a tool call
        by its timeout, an MCP call waits for its answer; two store statements by theirs),
        and lease_s on top."""
        run = getattr(worker, "run_obj", None)  # (None: not loaded yet)
        llm_s = run.budget.llm_timeout_s if run else self.settings.llm_timeout_s
        tool_s = run.budget.tool_timeout_s if run else self.settings.tool_timeout_s
        statement_s = 2 * max(2.0, self.settings.lease_s, self.settings.busy_timeout_s)
        return self.settings.lease_s + 2 * max(llm_s, tool_s) + 2 * statement_s

    def _let_go_of(self, workers: dict[str, tuple[RunWorker, threading.Thread]], why: str) -> None:
        """Stop advancing these runs now: their commands end, their writes are fenced off."""
        for run_id, (worker, thread) in workers.items():
            if not worker.lost.is_set():
                log.warning("run %s: %s; ending its work here", run_id, why)
                with self._lock:
                    # (only while it is still this run's worker here: one reaped meanwhile
                    # must leave no entry behind for a later worker of the same run)
                    if self.workers.get(run_id, (None,))[0] is worker:
                        self._let_go.setdefault(run_id, _LetGo(worker, thread))
                worker.lost.set()


def _mcp_servers(settings: Settings, owner: str) -> McpServers | None:
    """The configured MCP servers (started when their tools are first asked for); None
    without any, and then the MCP SDK is not even loaded."""
    if not settings.mcp_servers:
        return None
    from tui_agent.tools.mcp_tools import McpServers

    return McpServers(settings.mcp_servers, owner=owner, log_dir=settings.log_dir)


def _wait_for_promotion() -> bool:
    """A standby blocks here, warm, until the supervisor says go (EOF: supervisor gone)."""
    try:
        return sys.stdin.buffer.readline().strip() == b"go"
    except (OSError, ValueError):
        return False


def main(settings: Settings, supervisor_pid: int, *, standby: bool = False) -> int:
    # Pay for the model client's import and transport (half a second of CPU) now, before
    # the first claim: an executor started with its supervisor is idle yet, a spare is
    # waiting, and one started for waiting runs pays it at its first request anyway.
    from tui_agent.llm.openai_client import shared_http_client

    shared_http_client()
    # Modules live as long as the process: full GC passes need not walk them again (with
    # them, rebuilding a 10,000-step conversation took 2.5x as long).
    gc.freeze()
    executor = _open_when_reachable(settings, supervisor_pid)
    if executor is not None:
        executor.serve(standby=standby)
    return 0


def _open_when_reachable(settings: Settings, supervisor_pid: int) -> Executor | None:
    """An executor started while the store is away (a standby spawned during a PostgreSQL
    outage) waits for it, as a running one does, instead of exiting and being restarted
    with backoff; it gives up only when its supervisor is gone."""
    outage = Outage(log, "the store cannot be reached")
    while True:
        try:
            executor = Executor(settings, supervisor_pid)
        except StoreUnavailable as exc:
            outage.failed(exc)
            if os.getppid() != supervisor_pid:
                return None
            time.sleep(1.0)
            continue
        outage.ok()
        return executor
