"""The service over a local store and supervisor, for CLI, UI, HTTP API and MCP alike.

Input is checked once, here, with the checks of `validation.py`; the operations on whole
runs (fork, say, prune, statistics) are its mixin `operations.RunOperations`."""

from __future__ import annotations

import functools
import getpass
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui_agent.domain.compaction import CONTEXT_TOO_SMALL
from tui_agent.domain.errors import ApprovalTimedOut, BadInput, HomeUnwritable, TuiAgentError
from tui_agent.domain.models import (
    DEFAULT_APPROVAL_RISKS,
    DEFAULT_SANDBOX,
    SANDBOX_MODES,
    WAITING_STATUSES,
    Approval,
    Event,
    Policy,
    Run,
    RunSpec,
    RunStatus,
    Step,
    StepStatus,
)
from tui_agent.domain.reason import run_reason
from tui_agent.engine.preflight import run_obstacle
from tui_agent.files import write_atomically
from tui_agent.live import LiveOutput, read_live
from tui_agent.llm.factory import default_model
from tui_agent.service.api import (
    RunDelta,
    RunView,
    StartRequest,
    SupervisorState,
)
from tui_agent.service.operations import RunOperations
from tui_agent.service.validation import (
    MAX_GOAL_CHARS,
    MAX_REASON_CHARS,
    RISKS,
    check_callback_url,
    check_context_limit,
    check_positive,
    check_storable_text,
)
from tui_agent.settings import QUEUE_NAME, Settings, ensure_private_dir, with_config
from tui_agent.store.db import Database, check_database_file
from tui_agent.store.factory import change_feed_for, database_for
from tui_agent.store.migrations import LATEST_VERSION
from tui_agent.store.reader import Reader
from tui_agent.store.starts import create_run_and_event
from tui_agent.supervisor import spawn

if TYPE_CHECKING:
    from tui_agent.store.copy import CopyReport
    from tui_agent.store.run_store import RunStore

KICK_EVERY_S = 1.0
DEMO_README = """# The demo workspace

The offline `demo` model works here when a run names no workspace, so it never writes into
your own files. It lists this folder, reads this file, and asks to write a summary (press
`y` to let it, `n` to refuse). Delete the folder whenever you like.
"""


class LocalService(RunOperations):
    """Reads go through `Reader` (plain sqlite3); the writing store (SQLAlchemy and
    SQLModel, the slowest imports of a start) opens on the first write or `warm_up()`."""

    def __init__(
        self,
        settings: Settings,
        reader: Reader,
        *,
        clock: Callable[[], float] | None = None,
        who: str | None = None,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.clock = clock
        self.who = who or _username()
        self._db: Database | None = None
        self.supervisor_problem: str | None = None  # the last start failure after a change
        self._feed = change_feed_for(reader.db)
        self._store: RunStore | None = None
        self._store_lock = threading.Lock()
        self._served: tuple[float, bool, str | None] | None = (
            None  # (when asked, the answer, why not)
        )
        self._kicked_at: float | None = None  # when a supervisor was last seen or started
        # config.toml when the settings were read, and those settings (see _current_settings)
        self._config_seen = (self.config_stamp(), settings)

    @classmethod
    def open(cls, settings: Settings, *, clock: Callable[[], float] | None = None) -> LocalService:
        ensure_private_dir(settings.home)
        path = settings.db_path
        if not settings.shared:
            check_database_file(path)
        reader = Reader(database_for(settings, clock=clock, for_people=True))
        service = cls(settings, reader, clock=clock)
        if not settings.shared and (not path.exists() or path.stat().st_size == 0):
            service.warm_up()  # creates the database
        else:
            try:
                current = reader.schema_version() == LATEST_VERSION
            except TuiAgentError:
                current = False  # the store's open says what is wrong, in its words
            if not current:
                service.warm_up()  # migrates an older schema, refuses a newer one
        return service

    @property
    def db(self) -> Database:
        """The database for writing, opened on first use (it checks and migrates the schema;
        plain `sqlite3` unless a migration is due)."""
        with self._store_lock:
            if self._db is None:
                db = self.reader.db  # the same engine object: it connects per thread
                db.prepare()
                self._db = db
            return self._db

    @property
    def store(self) -> RunStore:
        """The person-driven writes (approve, cancel, resume …), on the same database; this
        loads SQLAlchemy, which starting a run does not need."""
        db = self.db
        with self._store_lock:
            if self._store is None:
                from tui_agent.store.run_store import RunStore

                self._store = RunStore(db)
            return self._store

    def warm_up(self) -> None:
        """Open the writing store now (the TUI calls this after its first frame)."""
        self.store  # noqa: B018 - opening is the point

    def close(self) -> None:
        self.reader.close()
        if self._store is not None:
            self._store.close()
        elif self._db is not None:
            self._db.dispose()

    def now(self) -> float:
        return self.reader.now()

    # ---- starting --------------------------------------------------------------------

    def build_spec(self, request: StartRequest) -> RunSpec:
        """Validate a start request completely before anything is written."""
        for name, value in (
            ("the goal", request.goal),
            ("--workspace", request.workspace),
            ("--model", request.model),
            ("--key", request.key),
            ("--queue", request.queue),
            ("--callback-url", request.callback_url),
        ):
            check_storable_text(name, value)
        goal = request.goal.strip()
        if not goal:
            raise BadInput("the goal must not be empty")
        if len(goal) > MAX_GOAL_CHARS:
            raise BadInput(f"the goal is longer than {MAX_GOAL_CHARS} characters")
        model_wanted = (request.model or default_model()).strip()
        if request.workspace is None and model_wanted == "demo":
            workspace = self.demo_workspace()  # a first run must not litter the user's repo
        else:
            workspace = Path(request.workspace or os.getcwd()).expanduser()
        if not workspace.exists():
            raise BadInput(f"workspace {workspace} does not exist")
        if not workspace.is_dir():
            raise BadInput(f"workspace {workspace} is not a directory")
        resolved = os.path.realpath(workspace)
        self._check_not_ours(workspace, resolved)
        if request.model is not None and not request.model.strip():
            raise BadInput("--model must not be empty (leave it out for the default model)")
        model = (request.model or default_model()).strip()
        if not model or any(c.isspace() for c in model):
            raise BadInput(f"model name {request.model!r} is not valid")
        check_positive("--max-steps", request.max_steps)
        check_positive("--max-tokens", request.max_llm_tokens)
        check_positive("--max-wall-time", request.max_wall_time_s)
        check_context_limit(request.max_context_tokens)
        for risk in request.auto_approve:
            if risk not in RISKS:
                raise BadInput(f"--auto-approve takes one of {', '.join(RISKS)}, not {risk!r}")
        sandbox = request.sandbox or DEFAULT_SANDBOX
        if sandbox not in SANDBOX_MODES:
            raise BadInput(f"--sandbox takes one of {', '.join(SANDBOX_MODES)}, not {sandbox!r}")
        if request.key is not None and not request.key.strip():
            raise BadInput("--key must not be empty")
        callback_url = check_callback_url(request.callback_url)
        queue = "default" if request.queue is None else request.queue
        if not QUEUE_NAME.fullmatch(queue):
            raise BadInput(
                f"--queue takes a name of 1-64 letters, digits, '.', '_' or '-', not {queue!r}"
            )
        current = self._current_settings()  # config.toml as it is now, as `run` reads it
        budget = current.default_budget()
        changes = {
            "max_steps": request.max_steps,
            "max_llm_tokens": request.max_llm_tokens,
            "max_wall_time_s": request.max_wall_time_s,
            "max_context_tokens": request.max_context_tokens,
        }
        budget = replace(budget, **{k: v for k, v in changes.items() if v is not None})
        policy = Policy(
            approval_risks=tuple(
                r for r in DEFAULT_APPROVAL_RISKS if r not in request.auto_approve
            ),
            approval_timeout_s=current.approval_timeout_s,
            sandbox=sandbox,
        )
        base_url = None if model == "demo" else os.environ.get("OPENAI_BASE_URL") or None
        return RunSpec(
            goal=goal,
            workspace=resolved,
            model=model,
            budget=budget,
            policy=policy,
            base_url=base_url,
            idem_key=request.key.strip() if request.key else None,
            queue=queue,
            callback_url=callback_url,
        )

    def _current_settings(self) -> Settings:
        """The settings a start takes its defaults from: read again when config.toml has
        changed since (an open app or server starts runs as a new `run` would; a file that
        cannot be used refuses the start in its one line, as `run` does)."""
        stamp = self.config_stamp()
        if stamp != self._config_seen[0]:
            self._config_seen = (stamp, with_config(self.settings))
        return self._config_seen[1]

    def _check_not_ours(self, workspace: Path, resolved: str) -> None:
        """A run's tools may read and write its whole workspace: it must not be, or lie
        within, tui-agent's own data (its API token, its database). A workspace that holds
        it (your home folder) is fine: the tools and the sandbox keep out of it."""
        demo, *ours = self._own_paths
        if _within(resolved, demo):
            return  # the demo's own scratch folder: the one place of ours a run may use
        for path in ours:
            if _within(resolved, path):
                raise BadInput(
                    f"workspace {workspace} holds tui-agent's own data ({path}); "
                    "choose a folder of your project"
                )

    @functools.cached_property
    def _own_paths(self) -> list[str]:
        """The demo's folder, then the home and (on SQLite) the database file, resolved
        once: every start checks its workspace against them."""
        paths = [self.settings.demo_workspace, self.settings.home]
        if not self.settings.shared:
            paths.append(self.settings.db_path)
        return [os.path.realpath(path) for path in paths]

    def demo_workspace(self) -> Path:
        """The demo model's scratch folder in the home, with a few files for it to read."""
        path = self.settings.demo_workspace
        if not path.is_dir():
            try:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
                write_atomically(path / "README.md", DEMO_README.encode())
                write_atomically(path / "todo.txt", b"- try the demo\n- approve its write (y)\n")
            except OSError as exc:
                raise HomeUnwritable(f"cannot create {path}: {exc.strerror or exc}") from None
        return path

    def start_run(self, request: StartRequest) -> tuple[Run, bool]:
        run, event = self._create(request)
        return run, event is not None

    def start_run_view(self, request: StartRequest) -> tuple[RunView, bool]:
        run, event = self._create(request)
        if event is None:  # the key's live run: as it is now
            return self.run_view(run.id), False
        # A new run is shown as its transaction committed it: nothing else is its yet.
        view = RunView(
            run=run,
            steps=[],
            events=[event],
            pending=None,
            approvals=[],
            in_doubt=None,
            reason=self._reason(run, None, None),
        )
        return view, True

    def _create(self, request: StartRequest) -> tuple[Run, Event | None]:
        run, event = create_run_and_event(self.db, self.build_spec(request), uuid.uuid4().hex)
        self._kick_supervisor()
        return run, event

    # ---- reading -----------------------------------------------------------------------

    def resolve_ref(self, ref: str) -> str:
        return self.reader.resolve_id(ref)

    def list_runs(
        self,
        *,
        statuses: list[str] | None = None,
        text: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[Run]:
        return self.reader.list_runs(statuses=statuses, text=text, limit=limit, before=before)

    def reason(self, run: Run) -> str | None:
        return self._reason(run, None, None)

    def _reason(self, run: Run, pending: Approval | None, in_doubt: Step | None) -> str | None:
        running, other_store = self._supervisor_running(run)
        return run_reason(
            run,
            now=self.now(),
            pending=pending,
            in_doubt=in_doubt,
            supervisor_running=running,
            served_queues=self.settings.queues,
            supervisor_problem=self.supervisor_problem or other_store,
        )

    def _supervisor_running(self, run: Run) -> tuple[bool | None, str | None]:
        """Asked only for runs whose reason depends on it, and at most once a second (a
        list of queued runs asks for each of them); with why not, when the home's
        supervisor serves another store."""
        if run.status.value not in ("queued", "running"):
            return None, None
        now = time.monotonic()
        if self._served is None or now - self._served[0] > 1.0:
            self._served = (now, *self._served_now())
        return self._served[1], self._served[2]

    def _served_now(self) -> tuple[bool, str | None]:
        """This store has a supervisor: this home's (if it serves this store), or on a
        shared store a live executor of any machine (another machine may take the run).
        When it has none and the home's supervisor serves another store, that is said
        (a `supervisor start` would be refused for it)."""
        other_store = None
        pid = spawn.supervisor_pid(self.settings)
        if pid:
            try:
                spawn.check_same_store(self.settings, pid)
                return True, None
            except spawn.OtherStore as exc:
                other_store = str(exc)
        if self.settings.shared and self._live_executors():
            return True, None
        return False, other_store

    def _live_executors(self) -> list[dict[str, object]]:
        return spawn.live_executors(self.reader.executors(), self.settings.lease_s, self.now())

    def get_run(self, run_id: str) -> Run:
        return self.reader.get_run(run_id)

    def run_view(self, run_id: str) -> RunView:
        run, steps, events, approvals = self.reader.history(run_id)
        pending = next((a for a in approvals if a.status == "pending"), None)
        # The call journaled as started but never finished (the first, should there be two).
        in_doubt = next((s for s in steps if s.status is StepStatus.STARTED), None)
        return RunView(
            run=run,
            steps=steps,
            events=events,
            pending=pending,
            approvals=approvals,
            in_doubt=in_doubt,
            reason=self._reason(run, pending, in_doubt),
        )

    def steps_since(self, run_id: str, after_seq: int) -> list[Step]:
        return self.reader.steps(run_id, after_seq=after_seq)

    def run_delta(self, run_id: str, after_seq: int, after_event: int) -> RunDelta:
        with self.reader.snapshot():  # the run row and its new steps from one moment
            run = self.reader.get_run(run_id)
            waiting = run.status in WAITING_STATUSES
            pending = self.reader.pending_approval(run_id) if waiting else None
            in_doubt = self.reader.in_doubt_step(run_id) if waiting else None
            steps = self.reader.steps(run_id, after_seq=after_seq)
            events = self.reader.events(run_id, after_id=after_event)
        return RunDelta(
            run=run,
            steps=steps,
            events=events,
            pending=pending,
            in_doubt=in_doubt,
            reason=self._reason(run, pending, in_doubt),
        )

    def database_size(self) -> int:
        """Bytes of the store (SQLite: its pages, not the log's reused space)."""
        size = self.reader.sqlite_bytes()
        return self._feed.size() if size is None else size

    def store_label(self) -> str:
        """Where the runs are kept, for the status bar (never a URL: it may hold a password)."""
        return str(self.reader.db.label)

    def changes(self) -> AsyncIterator[None]:
        """The store's change feed: wakes whenever another process may have committed."""
        return self._feed.changes()

    def change_token(self) -> tuple[int, ...]:
        """A cheap fingerprint of the store: the safety net where the feed is silent."""
        return self._feed.token()

    def live_output(self, run_id: str) -> LiveOutput | None:
        """The run's live text, read from the live channel's file (tui_agent/live.py)."""
        return read_live(self.settings.live_dir, run_id)

    async def live_changes(self) -> AsyncIterator[None]:
        """inotify on the live directory (through watchfiles); silent where the directory
        cannot be made (a read-only home: the safety tick still re-reads)."""
        from watchfiles import awatch

        try:
            ensure_private_dir(self.settings.live_dir)
        except TuiAgentError:
            return
        async for _ in awatch(
            self.settings.live_dir,
            watch_filter=lambda _change, path: not Path(path).name.startswith("."),
            debounce=100,
            step=10,
            recursive=False,
        ):
            yield None

    def events_since(self, run_id: str, after_id: int) -> list[Event]:
        return self.reader.events(run_id, after_id=after_id)

    def run_marks(self, run_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        return self.reader.run_marks(run_ids)

    def api_token(self) -> str:
        from tui_agent.api_token import api_token

        return api_token(self.settings)

    def count_waiting(self) -> int:
        return self.reader.count_waiting()

    def callbacks_pending(self) -> int:
        """Callbacks still to be delivered (a supervisor delivers them)."""
        return self.reader.callbacks_pending()

    def needs_execution(self) -> bool:
        """Runs this machine's supervisor would serve want one now."""
        return self.reader.needs_execution(self.settings.queues)

    # ---- deciding ------------------------------------------------------------------------

    def approve(self, run_id: str, *, always: bool = False) -> Approval:
        try:
            approval = self.store.decide_approval(run_id, approve=True, by=self.who, always=always)
        except ApprovalTimedOut:
            self._kick_supervisor()  # recorded as denied: the run goes on without the call
            raise
        self._kick_supervisor()
        return approval

    def deny(self, run_id: str, *, reason: str | None = None) -> Approval:
        check_storable_text("the reason", reason)
        if reason is not None and len(reason) > MAX_REASON_CHARS:
            raise BadInput(f"the reason is longer than {MAX_REASON_CHARS:,} characters")
        approval = self.store.decide_approval(
            run_id, approve=False, by=self.who, reason=reason or None
        )
        self._kick_supervisor()
        return approval

    def cancel(self, run_id: str) -> Run:
        return self.store.cancel(run_id, by=self.who)

    def resume(
        self,
        run_id: str,
        *,
        max_steps: int | None = None,
        max_llm_tokens: int | None = None,
        max_wall_time_s: float | None = None,
        max_context_tokens: int | None = None,
    ) -> Run:
        check_positive("--max-steps", max_steps)
        check_positive("--max-tokens", max_llm_tokens)
        check_positive("--max-wall-time", max_wall_time_s)
        check_context_limit(max_context_tokens)
        run = self.get_run(run_id)
        if run.resumable:  # (any other status is told so by the store, in its words)
            self._check_can_go_on(run)
        limit = run.budget.max_context_tokens
        if (
            limit
            and (run.pause_reason or "").startswith(CONTEXT_TOO_SMALL)
            and (max_context_tokens or 0) <= limit
        ):
            raise BadInput(
                f"run {run_id[:8]} paused because {run.pause_reason.split(' (')[0]}; resume it "
                f"with --max-context-tokens above {limit:,}"
            )
        run = self.store.resume(
            run_id,
            max_steps=max_steps,
            max_llm_tokens=max_llm_tokens,
            max_wall_time_s=max_wall_time_s,
            max_context_tokens=max_context_tokens,
        )
        self._kick_supervisor()
        return run

    def resolve(self, run_id: str, choice: str) -> Run:
        if choice in ("retry", "skip"):
            run = self.get_run(run_id)
            if run.status is RunStatus.NEEDS_ATTENTION:
                self._check_can_go_on(run)
        run = self.store.resolve(run_id, choice, by=self.who)
        if not run.status.is_final:
            self._kick_supervisor()
        return run

    def _check_can_go_on(self, run: Run) -> None:
        """BadInput, nothing written, when a run a person lets go on could not: its
        workspace gone, its model or policy unusable (`engine/preflight.py`; the executor
        asks the same, with its own environment, and pauses the run)."""
        if Path(run.workspace) == self.settings.demo_workspace.resolve():
            self.demo_workspace()  # the demo's scratch folder is ours to make again
        # On a shared store, a queue this machine does not serve runs elsewhere: the
        # workspace is looked for there.
        here = not self.settings.shared or run.queue in self.settings.queues
        obstacle = run_obstacle(run, workspace=here)
        if obstacle:
            raise BadInput(f"run {run.id[:8]} cannot go on: {obstacle}")

    # ---- the supervisor ------------------------------------------------------------------

    def supervisor_state(self) -> SupervisorState:
        data = spawn.supervisor_status(self.settings, self.reader.executors())
        return SupervisorState(
            running=data["running"],
            pid=data["pid"],
            executors=data["executors"],
            other_machines=data["other_machines"],
            serves=data["serves"],
            problem=None if data["running"] else self.supervisor_problem,
        )

    def config_stamp(self) -> tuple[int, int] | None:
        """When config.toml last changed (and its size), None without one: a supervisor
        that could not start is tried again as soon as the file is edited."""
        try:
            st = os.stat(self.settings.config_path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def ensure_supervisor(self) -> int:
        """The supervisor's pid, started if none runs; a start that fails is kept in
        `supervisor_problem` (the runs' reasons say it) until one succeeds."""
        try:
            pid = spawn.ensure_supervisor(self.settings)
        except TuiAgentError as exc:
            self.supervisor_problem = str(exc)
            raise
        self.supervisor_problem = None
        return pid

    def _kick_supervisor(self) -> None:
        """After a committed change: start the supervisor if none runs. Its failure must not
        make the change look undone (a person would start the run a second time): it is kept
        in `supervisor_problem` for the caller to say, and the change stands.

        A long-lived caller (the HTTP API, the TUI) looks at most once a second: its many
        changes find the supervisor it just saw (and its keeper starts one that died)."""
        now = time.monotonic()
        if self._kicked_at is not None and now - self._kicked_at < KICK_EVERY_S:
            return
        try:
            self.ensure_supervisor()
            self._kicked_at = now
        except TuiAgentError:
            self._kicked_at = None  # kept in supervisor_problem

    def stop_supervisor(self) -> int | None:
        self._kicked_at = None
        return spawn.stop_supervisor(self.settings)

    def interrupted_calls(self, since: float) -> list[Step]:
        return self.reader.interrupted_calls(since)

    # ---- moving runs -----------------------------------------------------------------

    def copy_store_to(self, url: str) -> CopyReport:
        """Copy every run into the empty store at `url` (sqlite:///PATH or PostgreSQL).

        Nothing may change the runs meanwhile: this machine's supervisor must be stopped
        (and, on a shared store, every machine's executors idle)."""
        from tui_agent.settings import db_file_from_url, postgres_url
        from tui_agent.store.copy import copy_store
        from tui_agent.store.factory import open_database_for

        target_settings = replace(
            self.settings, db_file=db_file_from_url(url), db_url=postgres_url(url)
        )
        if target_settings.db_file is None and target_settings.db_url is None:
            raise BadInput("--to needs a database URL: sqlite:///PATH or postgresql+psycopg://…")
        if database_for(target_settings).label == self.reader.db.label:
            raise BadInput("--to names the store the runs are already in")
        if spawn.supervisor_pid(self.settings):
            raise BadInput(
                "stop the supervisor first (`tui-agent supervisor stop`): runs must not "
                "change during the copy"
            )
        if self._live_executors():
            raise BadInput("executors of another machine are still working on this store")
        target = open_database_for(target_settings)
        try:
            return copy_store(self.db, target)
        finally:
            target.dispose()


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "user"


def _within(path: str, folder: str) -> bool:
    """`path` is `folder` or lies inside it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
