"""What the engine and the supervisor need of a store, as protocols: they depend on these,
never on a backend. `store/journal.py` and `store/leases.py` are the SQLite implementations;
a PostgreSQL backend implements the same (see docs/architecture.md).

Every method is one transaction. Writes that advance a run are fenced by its lease: a
writer that no longer owns the run commits nothing and gets `LeaseLost`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from tui_agent.domain.models import AgentState, Approval, Run, RunStatus, Step, StepStatus


@dataclass(frozen=True)
class ArtifactData:
    """A tool result too large for the model's context, stored beside its step."""

    id: str
    content: bytes
    summary: str


class Journal(Protocol):
    """A run thread's durable steps (product.md, durability promises 1-5, 7)."""

    owner: str

    def now(self) -> float: ...

    def load(self, run_id: str, *, after_seq: int | None = None) -> tuple[Run, list[Step]]: ...

    def record_compaction(self, run_id: str, payload: dict[str, Any], wall: float) -> int: ...

    def record_llm_reply(
        self, run_id: str, payload: dict[str, Any], tokens: int, wall: float
    ) -> int: ...

    def journal_tool_start(
        self, run_id: str, *, llm_seq: int, call_id: str, tool: str, arguments: str, wall: float
    ) -> int: ...

    def finish_tool(
        self,
        run_id: str,
        seq: int,
        *,
        status: StepStatus,
        result: str,
        wall: float,
        artifact: ArtifactData | None = None,
        state: AgentState | None = None,
    ) -> None: ...

    def record_tool_outcome(
        self,
        run_id: str,
        *,
        llm_seq: int,
        call_id: str,
        tool: str,
        arguments: str,
        status: StepStatus,
        result: str,
        wall: float,
    ) -> int: ...

    def restart_in_doubt(self, run_id: str, seq: int, why: str) -> None: ...

    def approval_for(self, run_id: str, llm_seq: int, call_id: str) -> Approval | None: ...

    def request_approval(
        self,
        run_id: str,
        *,
        llm_seq: int,
        call_id: str,
        tool: str,
        arguments: str,
        args_hash: str,
        risk: str,
        model_reason: str,
        wall: float,
        reason_text: str,
    ) -> Approval: ...

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        wall: float,
        message: str,
        result: str | None = None,
        error: str | None = None,
        pause_reason: str | None = None,
        unless_message_after: int | None = None,
    ) -> bool: ...

    def set_retry(
        self, run_id: str, *, attempt: int, max_attempts: int, retry_at: float, error: str
    ) -> None: ...

    def artifact(self, artifact_id: str) -> tuple[str, bytes] | None: ...

    def event(
        self, run_id: str, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> None: ...

    def release_to_queue(self, run_id: str, wall: float) -> None: ...


class Claims(Protocol):
    """An executor taking runs and keeping their leases."""

    def claim(
        self,
        limit: int,
        lease_s: float,
        working: Collection[str] = (),
        *,
        orphans: int | None = None,
    ) -> list[str]: ...

    def heartbeat(self, walls: dict[str, float], lease_s: float) -> dict[str, bool]: ...

    def holds(self, run_id: str) -> bool: ...


class Leases(Protocol):
    """The supervisor's view of ownership: executors, lost runs, approval deadlines."""

    def register_executor(self, pid: int, supervisor_pid: int) -> None: ...

    def unregister_executor(self, pid: int) -> None: ...

    def release_runs_of(self, pid: int, why: str, *, counts: bool = True) -> list[str]: ...

    def lost_executors(self, is_alive: Callable[[int], bool]) -> list[int]: ...

    def heartbeat_at(self, pid: int) -> float | None: ...

    def runnable_count(self) -> int: ...

    def active_count(self) -> int: ...

    def expire_approvals(self) -> tuple[list[str], float | None]: ...


@dataclass(frozen=True)
class Delivery:
    """One callback to make: the body was fixed when the run changed."""

    id: str
    run_id: str
    url: str
    body: str
    attempts: int
    created_at: float


class Outbox(Protocol):
    """The callbacks waiting to be delivered (the supervisor's deliverer)."""

    def claim_due(self, limit: int, hold_s: float) -> list[Delivery]: ...

    def delivered(self, delivery_id: str) -> None: ...

    def attempt_failed(self, delivery_id: str, error: str, retry_at: float | None) -> None: ...

    def next_due(self) -> float | None: ...
