"""The supervisor: one per home. Keeps `executors` executor processes alive while there is
work (one warm spare ready to replace any of them), frees the runs of a dead executor at
once, expires approval deadlines, and exits when idle."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tui_agent import failpoints
from tui_agent.domain.errors import StoreUnavailable, TuiAgentError
from tui_agent.files import write_atomically
from tui_agent.settings import Settings
from tui_agent.supervisor.backoff import RestartBackoff
from tui_agent.supervisor.lock import SupervisorLock, pid_alive
from tui_agent.supervisor.logs import Outage, open_private_log, rotate_logs
from tui_agent.supervisor.spawn import READY_FD_ENV
from tui_agent.tools.processes import end_calls_of_executor

if TYPE_CHECKING:
    from tui_agent.store.protocols import Leases
    from tui_agent.supervisor.callbacks import Deliverer

log = logging.getLogger(__name__)
TICK_S = 0.05
EXIT_STUCK = 75  # an executor that ends itself because a run's thread would not stop
APPROVAL_CHECK_S = 1.0
DAY_S = 86400.0
# After an executor starts or is promoted the new spare waits this long: its start-up (a
# Python import of ~1 s of CPU) would otherwise compete with the executor resuming the runs.
SPARE_DELAY_S = 2.0
HANG_CHECK_S = 0.25
# A stopping executor interrupts its commands at once; this is only for a stuck one.
STOP_WAIT_S = 10.0


class AlreadyRunning(TuiAgentError):
    exit_code = 2


class _IdleExit(Exception):
    """Nothing to run for idle_exit_s: the supervisor leaves."""


@dataclass
class _Slot:
    """One executor place: its process (None: dead or not needed), when it started, its
    restart backoff and what its heartbeat last looked like."""

    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: RestartBackoff = field(default_factory=RestartBackoff)
    last_beat: tuple[tuple[int, float | None], float] | None = None
    killed_for: str | None = None  # why the hang watch killed its process, if it did


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = SupervisorLock(settings.lock_path)
        self.stopping = threading.Event()
        self.slots = [_Slot() for _ in range(max(1, settings.executors))]
        # Warm spares, imported and connected, promoted the moment an executor is needed:
        # one for each empty slot (a burst of runs at an idle supervisor starts at once)
        # and, with every slot filled, one for when an executor dies (recovery then takes
        # milliseconds instead of a Python start-up).
        self.spares: list[subprocess.Popen[bytes]] = []
        self._standby_started = 0.0
        self._standby_due = 0.0
        self._standby_backoff = RestartBackoff()
        self.deliverer: Deliverer | None = None  # callbacks (from the store's outbox)

    def run(self) -> int:
        """Serve until stopped or idle. `ready` (from `supervisor start`) hears "ok" only once
        the lock is held and the store is open, else the one-line reason."""
        ready = _ReadyPipe.from_env()
        try:
            if not self.lock.acquire():
                raise AlreadyRunning(f"a supervisor is already running (pid {self.lock.holder()})")
        except TuiAgentError as exc:
            ready.say(f"error: {exc}")
            raise
        signal.signal(signal.SIGTERM, lambda *_: self._asked_to_stop("SIGTERM"))
        signal.signal(signal.SIGINT, lambda *_: self._asked_to_stop("SIGINT"))
        log.info("supervisor %d started for %s", os.getpid(), self.settings.store_label)
        # Start the executor before our own (slow) imports, so the two overlap: after a
        # crash of everything, `supervisor start` is about one Python start-up from work.
        self._promote_or_spawn(self.slots[0])  # no spare yet: spawns
        try:
            from tui_agent.store.factory import open_database_for
            from tui_agent.store.leases import LeaseStore

            db = open_database_for(self.settings)
        except TuiAgentError as exc:
            self._kill_children()
            self.lock.release()
            ready.say(f"error: {exc}")
            raise
        leases = LeaseStore(db, node=self.settings.node, queues=self.settings.queues)
        deliverer = self.deliverer = _deliverer(self.settings, db)
        with contextlib.suppress(OSError):  # which store this home's supervisor serves
            write_atomically(self.settings.store_mark_path, self.settings.store_label.encode())
        try:
            try:
                failpoints.hit("supervisor.start")  # tests: a supervisor that cannot run
                self._recover_lost(leases)
            except Exception as exc:  # `supervisor start` must hear why, in one line
                ready.say(f"error: {exc}")
                raise
            ready.say("ok")
            deliverer.start()
            threading.Thread(target=self._daily, args=(db,), name="daily", daemon=True).start()
            threading.Thread(
                target=self._watch_hangs, args=(leases,), name="hangs", daemon=True
            ).start()
            self._loop(leases)
        finally:
            deliverer.stop()
            self._stop_executors(leases)
            db.dispose()
            self.lock.release()
            log.info("supervisor %d stopped", os.getpid())
        return 0

    def _asked_to_stop(self, how: str) -> None:
        """`supervisor stop` (SIGTERM) or Ctrl+C: the log says when and why it ended."""
        if not self.stopping.is_set():
            log.info("asked to stop (%s): ending the executors' commands, handing back runs", how)
        self.stopping.set()

    def _daily(self, db: object) -> None:
        """Once a day (first `maintenance_delay_s` after start, a minute unless told): rotate
        the logs and, with `retention_days`, prune the final runs older than that."""
        from tui_agent.store.prune import prune_runs

        if self.stopping.wait(self.settings.maintenance_delay_s):
            return
        while True:
            rotate_logs(self.settings.log_dir)
            days = self.settings.retention_days
            if days is not None:
                try:
                    report = prune_runs(db, cutoff=time.time() - days * 86400)
                    if report.runs:
                        log.info(
                            "retention: pruned %d run(s) older than %g day(s), %d step(s), "
                            "%d bytes freed",
                            report.runs,
                            days,
                            report.steps,
                            report.bytes_freed,
                        )
                except Exception as exc:  # the store away: tomorrow again
                    log.warning("retention: cannot prune now: %s", exc)
            if self.stopping.wait(DAY_S):
                return

    def _recover_lost(self, leases: Leases) -> None:
        """On start: end what dead executors left running, then free their runs."""
        recovered: list[str] = []
        mine = {p.pid for p in (*self._procs(), *self.spares)}
        for pid in leases.lost_executors(pid_alive):
            if pid in mine:
                continue  # a recorded pid reused by the executor we just started
            if pid_alive(pid) and _is_executor(pid):
                # Alive but lost (a frozen executor of a dead supervisor): it must not thaw
                # into work that is no longer its own.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            ended = end_calls_of_executor(pid)
            if ended:
                log.warning("ended %d process(es) left by dead executor %d", ended, pid)
            recovered += leases.release_runs_of(pid, "is gone")
        if recovered:
            log.info("recovered %d run(s) whose executor was gone", len(recovered))

    def _loop(self, leases: Leases) -> None:
        outage = Outage(log, "the store cannot be reached")
        idle_since: float | None = None
        next_approval_check = 0.0
        next_deadline: float | None = None
        while not self.stopping.is_set():
            try:
                idle_since, next_approval_check, next_deadline = self._tick(
                    leases, idle_since, next_approval_check, next_deadline
                )
            except StoreUnavailable as exc:
                outage.failed(exc)
                self.stopping.wait(1.0)
                continue
            except _IdleExit:
                log.info("idle for %.0fs; exiting", self.settings.idle_exit_s)
                return
            outage.ok()
            self.stopping.wait(TICK_S)

    def _tick(
        self,
        leases: Leases,
        idle_since: float | None,
        next_approval_check: float,
        next_deadline: float | None,
    ) -> tuple[float | None, float, float | None]:
        """One round: the executors' exits, deadlines, spawning, idleness.

        Hangs are watched by a thread of their own (`_watch_hangs`): this round writes, and
        a write waits for busy_timeout behind an executor frozen while it held SQLite's
        write lock."""
        now = time.time()
        for slot in self.slots:
            self._watch_executor(slot, leases)
        if now >= next_approval_check:
            _, next_deadline = leases.expire_approvals()
            next_approval_check = now + APPROVAL_CHECK_S
        busy = leases.runnable_count() > 0 or leases.active_count() > 0
        for slot in self.slots:
            if busy and slot.proc is None and slot.backoff.ready(now):
                self._promote_or_spawn(slot)
        self._keep_standby(now)
        delivering = self.deliverer is not None and self.deliverer.pending
        if busy or next_deadline is not None or delivering:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= self.settings.idle_exit_s:
            raise _IdleExit
        return idle_since, next_approval_check, next_deadline

    def _spawn(self, *, standby: bool) -> subprocess.Popen[bytes]:
        log_fd = open_private_log(self.settings.log_dir / "executor.log")
        argv = [
            sys.executable,
            "-m",
            "tui_agent",
            "supervisor",
            "executor",
            "--supervisor-pid",
            str(os.getpid()),
        ]
        try:
            proc = subprocess.Popen(
                [*argv, "--standby"] if standby else argv,
                stdin=subprocess.PIPE if standby else subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                env=self.settings.child_env(),
            )
        finally:
            os.close(log_fd)
        return proc

    def _procs(self) -> list[subprocess.Popen[bytes]]:
        return [slot.proc for slot in self.slots if slot.proc is not None]

    def _promote_or_spawn(self, slot: _Slot) -> None:
        while self.spares and slot.proc is None:
            spare = self.spares.pop(0)
            if spare.poll() is not None or spare.stdin is None:
                log.warning("standby executor %d exited (%s)", spare.pid, spare.returncode)
                continue
            try:
                spare.stdin.write(b"go\n")
                spare.stdin.close()
                slot.proc = spare
            except (BrokenPipeError, OSError):
                spare.kill()
                spare.wait()
        if slot.proc is None:
            slot.proc = self._spawn(standby=False)
        slot.started = time.time()
        self._standby_due = slot.started + SPARE_DELAY_S
        log.info("executor %d is active", slot.proc.pid)

    def _watch_executor(self, slot: _Slot, leases: Leases) -> None:
        proc = slot.proc
        if proc is None:
            return
        code = proc.poll()
        if code is None:
            return
        slot.proc = None
        # Its calls' processes die with it, before its runs are offered to anyone.
        ended = end_calls_of_executor(proc.pid)
        cause = _cause(code, slot.killed_for)
        slot.killed_for = None
        # A clean exit is no crash: it does not count towards a run's quarantine.
        why = cause or f"exited with code {code}"
        freed = leases.release_runs_of(proc.pid, why, counts=code != 0)
        log.warning(
            "executor %d exited (%s)%s; %s; freed %d run(s)",
            proc.pid,
            code,
            f": {cause}" if cause else "",
            f"ended {ended} process(es) of its calls" if ended else "no call of it still ran",
            len(freed),
        )
        now = time.time()
        slot.backoff.died(lived_s=now - slot.started, clean=code == 0, now=now)

    def _watch_hangs(self, leases: Leases) -> None:
        """Reads only, never waits behind a write: an executor frozen inside a write
        transaction is still killed after lease_s, which is what frees the store."""
        outage = Outage(log, "the hang watch cannot read the store")
        while not self.stopping.wait(HANG_CHECK_S):
            try:
                for slot in self.slots:
                    self._kill_if_hung(slot, leases)
            except StoreUnavailable as exc:
                outage.failed(exc)
                continue
            except Exception:  # never let the watch die quietly
                log.exception("the hang watch failed; it goes on")
                continue
            outage.ok()

    def _kill_if_hung(self, slot: _Slot, leases: Leases) -> None:
        """An executor whose heartbeat is older than lease_s (stopped, hung) is killed; the
        main loop then sees it dead and recovers its runs like any other death."""
        proc = slot.proc
        if proc is None:
            return
        try:
            beat = leases.heartbeat_at(proc.pid)
        except StoreUnavailable:
            # The store cannot be read (a server outage): heartbeats cannot be written
            # either, so silence is measured afresh once it is back, not across it.
            slot.last_beat = None
            raise
        seen = time.monotonic()
        if beat is None or slot.last_beat is None or slot.last_beat[0] != (proc.pid, beat):
            # Measured on our own monotonic clock from when the beat last changed: a wall
            # clock step (a resumed laptop, NTP) must not look like a hang.
            slot.last_beat = ((proc.pid, beat), seen)
            return
        silent = seen - slot.last_beat[1]
        if silent <= self.settings.lease_s:
            return
        log.warning(
            "executor %d missed its heartbeats for %.1fs (lease_s %.1f): killing it",
            proc.pid,
            silent,
            self.settings.lease_s,
        )
        # Only the signal: the main loop reaps it (poll) and frees its runs.
        slot.killed_for = f"was killed after missing its heartbeats for {silent:.1f}s"
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        slot.last_beat = None

    def _keep_standby(self, now: float) -> None:
        """As many spares as empty slots (one when every slot is filled). A spare that dies
        (it has no runs) is replaced, but never in a tight loop."""
        for spare in [p for p in self.spares if p.poll() is not None]:
            self.spares.remove(spare)
            log.warning("standby executor %d exited (%s)", spare.pid, spare.returncode)
            self._standby_backoff.died(lived_s=now - self._standby_started, clean=False, now=now)
        wanted = max(1, sum(slot.proc is None for slot in self.slots))
        if len(self.spares) > wanted:  # slots filled by a cold start: a spare too many
            extra = self.spares.pop()
            extra.kill()
            extra.wait()
        if (
            len(self.spares) < wanted
            and now >= self._standby_due
            and self._standby_backoff.ready(now)
        ):
            self.spares.append(self._spawn(standby=True))
            self._standby_started = now

    def _stop_executors(self, leases: Leases) -> None:
        for spare in self.spares:
            spare.kill()
            spare.wait()
        self.spares = []
        procs = self._procs()
        # SIGTERM: each executor interrupts running commands, records that, hands runs back.
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + STOP_WAIT_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            ended = end_calls_of_executor(proc.pid)
            if ended:
                log.warning("ended %d process(es) left by executor %d", ended, proc.pid)
            leases.release_runs_of(proc.pid, "stopped with the supervisor", counts=False)
        for slot in self.slots:
            slot.proc = None

    def _kill_children(self) -> None:
        for proc in (*self._procs(), *self.spares):
            proc.kill()
            proc.wait()
        for slot in self.slots:
            slot.proc = None
        self.spares = []


def _deliverer(settings: Settings, db: object) -> Deliverer:
    """The callbacks' deliverer over this store's outbox, signing with the API token."""
    from tui_agent.api_token import api_token
    from tui_agent.store.outbox import OutboxStore
    from tui_agent.supervisor.callbacks import Deliverer

    return Deliverer(OutboxStore(db), lambda: api_token(settings))


def _cause(code: int, killed_for: str | None) -> str | None:
    """Why an executor ended, when it was not an ordinary exit or crash."""
    if killed_for is not None:
        return killed_for
    if code == EXIT_STUCK:
        return "ended itself because a run's thread would not stop (see executor.log)"
    return None


def _is_executor(pid: int) -> bool:
    """The pid is still a tui-agent executor (a recorded pid may have been reused)."""
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")  # noqa: SIM115
    except OSError:
        return False
    return b"tui_agent" in argv and b"executor" in argv


class _ReadyPipe:
    """The write end `supervisor start` waits on (absent for `supervisor run`)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    @classmethod
    def from_env(cls) -> _ReadyPipe:
        raw = os.environ.pop(READY_FD_ENV, "")
        return cls(int(raw) if raw.isdigit() else None)

    def say(self, line: str) -> None:
        if self.fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.write(self.fd, (line.replace("\n", " ") + "\n").encode())
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
