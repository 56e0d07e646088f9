"""The run, its steps, approvals and the agent-state contract (seed 004)."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    NEEDS_ATTENTION = "needs_attention"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def needs_person(self) -> bool:
        return self in (RunStatus.WAITING_APPROVAL, RunStatus.NEEDS_ATTENTION, RunStatus.PAUSED)


FINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
# Waiting for a decision only a person can make (flagged ⚑; `waiting` in filters).
WAITING_STATUSES = frozenset({RunStatus.WAITING_APPROVAL, RunStatus.NEEDS_ATTENTION})
# What `resume` takes up again (a budget pause, a failure); a quarantined run too (below).
RESUMABLE_STATUSES = frozenset({RunStatus.PAUSED, RunStatus.FAILED})
# A run whose executor died this many times in a row at one step is not recovered again:
# it is quarantined (`needs_attention`, its reason starting with QUARANTINED) until a person
# resumes it. A run recovered one time fewer gets its next try with no other such run in
# its executor, so that a third death there is its own doing.
QUARANTINE_AFTER = 3
QUARANTINED = "quarantined:"
# A run's callback is told each time it gets here: it ended, or it needs a person.
CALLBACK_STATUSES = FINAL_STATUSES | WAITING_STATUSES | {RunStatus.PAUSED}
# The names filters accept for groups of statuses (the TUI's `/` and `ls --status`), and
# the groups the UI's keys follow.
STATUS_GROUPS: dict[str, tuple[str, ...]] = {
    "waiting": tuple(sorted(s.value for s in WAITING_STATUSES)),
    "final": tuple(sorted(s.value for s in FINAL_STATUSES)),
    "resumable": tuple(sorted(s.value for s in RESUMABLE_STATUSES)),
}


class Risk(enum.StrEnum):
    READ_ONLY = "read_only"
    WRITE_LOCAL = "write_local"
    EXTERNAL_ACTION = "external_action"


class StepKind(enum.StrEnum):
    LLM = "llm"
    TOOL = "tool"
    APPROVAL = "approval"
    USER = "user"  # a person's follow-up or steering message (`say`): not a budget step
    # Older turns folded into a summary (bounded context): requests start from the newest
    # one. Not a budget step either.
    COMPACTION = "compaction"


class StepStatus(enum.StrEnum):
    DONE = "done"  # an LLM reply or an approval decision
    STARTED = "started"  # a tool call journaled before it runs
    FINISHED = "finished"  # a tool call that ran and returned
    ERROR = "error"  # a tool call that was malformed or raised
    DENIED = "denied"  # a tool call a person (or a timeout) denied
    SKIPPED = "skipped"  # an in-doubt call the person chose to skip


TOOL_DONE_STATUSES = frozenset(
    {StepStatus.FINISHED, StepStatus.ERROR, StepStatus.DENIED, StepStatus.SKIPPED}
)

DEFAULT_APPROVAL_RISKS: tuple[str, ...] = (Risk.WRITE_LOCAL.value, Risk.EXTERNAL_ACTION.value)
# How run_shell is confined: the workspace only, the workspace plus the network, or not at all.
SANDBOX_MODES: tuple[str, ...] = ("workspace", "workspace-net", "none")
DEFAULT_SANDBOX = "workspace"
# The result of a command ended by `supervisor stop` (the run goes on at the next start).
INTERRUPTED_BY_STOP = "interrupted: the supervisor was stopped before the command finished"
UNCONFINED_FLAG = "sandbox none: run_shell commands run unconfined"


@dataclass(frozen=True)
class Budget:
    """Limits of a run; a spent one pauses it. Recorded with the run at start."""

    max_steps: int = 50
    max_llm_tokens: int = 200_000
    max_wall_time_s: float = 3600.0
    max_artifact_bytes_in_context: int = 8000
    llm_timeout_s: float = 60.0
    tool_timeout_s: float = 60.0
    # What one request may send (None: unbounded); older turns are compacted to stay under.
    max_context_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        # Not `asdict`: its recursion and deep copies are most of a run's JSON (every
        # `show --json` and HTTP answer), and every field here is a plain value.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class Usage:
    steps: int = 0
    llm_tokens: int = 0
    wall_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "llm_tokens": self.llm_tokens,
            "wall_time_s": round(self.wall_time_s, 3),
        }


def spent_budget(budget: Budget, usage: Usage) -> str | None:
    """Why the budget stops the run, or None while there is room for another step."""
    if usage.steps >= budget.max_steps:
        return f"budget spent: steps {usage.steps} of {budget.max_steps}"
    if usage.llm_tokens >= budget.max_llm_tokens:
        return f"budget spent: tokens {usage.llm_tokens} of {budget.max_llm_tokens}"
    if usage.wall_time_s >= budget.max_wall_time_s:
        return f"budget spent: wall time {usage.wall_time_s:.1f}s of {budget.max_wall_time_s:g}s"
    return None


@dataclass(frozen=True)
class Policy:
    """Which risks wait for a person and how commands are confined; recorded with the run so
    config changes never alter it."""

    approval_risks: tuple[str, ...] = DEFAULT_APPROVAL_RISKS
    always_allow: tuple[str, ...] = ()
    approval_timeout_s: float | None = None
    sandbox: str = DEFAULT_SANDBOX
    # Why the recorded policy cannot be read (None: it can). Such a policy is the strictest
    # (everything asks first) and its run may not go on until given a new one by a fork.
    problem: str | None = None

    def needs_approval(self, tool: str, risk: str) -> bool:
        return risk in self.approval_risks and tool not in self.always_allow

    def to_dict(self) -> dict[str, Any]:
        return {
            "approval_risks": list(self.approval_risks),
            "always_allow": list(self.always_allow),
            "approval_timeout_s": self.approval_timeout_s,
            "sandbox": self.sandbox,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        return cls(
            approval_risks=tuple(data.get("approval_risks", DEFAULT_APPROVAL_RISKS)),
            always_allow=tuple(data.get("always_allow", ())),
            approval_timeout_s=data.get("approval_timeout_s"),
            sandbox=str(data.get("sandbox", DEFAULT_SANDBOX)),
        )

    @classmethod
    def from_json(cls, text: str | None) -> Policy:
        """The recorded policy; one that cannot be read is never guessed at (a lax guess
        could run unasked what the person meant to approve): it is the strictest policy,
        with `problem` saying what is wrong. No text (a summary row): the default."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            return cls._unreadable("not valid JSON")
        problem = _policy_problem(data)
        return cls._unreadable(problem) if problem else cls.from_dict(data)

    @classmethod
    def _unreadable(cls, problem: str) -> Policy:
        return cls(approval_risks=tuple(r.value for r in Risk), problem=problem)


def _policy_problem(data: Any) -> str | None:
    """What makes a stored policy unusable; absent fields take their defaults (older runs)."""
    if not isinstance(data, dict):
        return "not an object"
    risks = data.get("approval_risks", list(DEFAULT_APPROVAL_RISKS))
    known = {r.value for r in Risk}
    if not isinstance(risks, list) or not all(isinstance(r, str) and r in known for r in risks):
        return "approval_risks is not a list of risks"
    if not _is_str_list(data.get("always_allow", [])):
        return "always_allow is not a list of tool names"
    timeout = data.get("approval_timeout_s")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        return "approval_timeout_s is not a positive number"
    sandbox = data.get("sandbox", DEFAULT_SANDBOX)
    if sandbox not in SANDBOX_MODES:
        return f"sandbox {str(sandbox)[:40]!r} is not one of {', '.join(SANDBOX_MODES)}"
    return None


@dataclass
class AgentState:
    """The agent-state contract of seed 004, changed only through StatePatch."""

    plan: list[str] = field(default_factory=list)
    known_facts: list[dict[str, Any]] = field(default_factory=list)
    open_questions: list[str] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    risk_flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A copy down to the facts' and artifacts' own dicts (what callers may change)."""
        return {
            "plan": list(self.plan),
            "known_facts": [dict(fact) for fact in self.known_facts],
            "open_questions": list(self.open_questions),
            "artifacts": [dict(artifact) for artifact in self.artifacts],
            "risk_flags": list(self.risk_flags),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentState:
        return cls(
            plan=list(data.get("plan", [])),
            known_facts=list(data.get("known_facts", [])),
            open_questions=list(data.get("open_questions", [])),
            artifacts=list(data.get("artifacts", [])),
            risk_flags=list(data.get("risk_flags", [])),
        )


@dataclass(frozen=True)
class StatePatch:
    """A change to AgentState requested by the model through `update_state`."""

    plan: list[str] | None = None
    add_facts: list[dict[str, Any]] = field(default_factory=list)
    add_questions: list[str] = field(default_factory=list)
    resolve_questions: list[str] = field(default_factory=list)
    add_risk_flags: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, data: Any) -> StatePatch:
        """Validate a patch from the model; raises ValueError with a message for the model."""
        if not isinstance(data, dict):
            raise ValueError("patch must be an object")
        allowed = {"plan", "add_facts", "add_questions", "resolve_questions", "add_risk_flags"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown patch fields: {', '.join(sorted(unknown))}")
        plan = data.get("plan")
        if plan is not None and not _is_str_list(plan):
            raise ValueError("plan must be a list of strings")
        facts = data.get("add_facts", [])
        if not isinstance(facts, list):
            raise ValueError("add_facts must be a list")
        norm_facts: list[dict[str, Any]] = []
        for fact in facts:
            if isinstance(fact, str):
                norm_facts.append({"key": "", "value": fact, "source": "agent"})
            elif isinstance(fact, dict) and "value" in fact:
                norm_facts.append(
                    {
                        "key": str(fact.get("key", "")),
                        "value": fact["value"],
                        "source": str(fact.get("source", "agent")),
                    }
                )
            else:
                raise ValueError("each fact must be a string or an object with a value")
        for name in ("add_questions", "resolve_questions", "add_risk_flags"):
            if not _is_str_list(data.get(name, [])):
                raise ValueError(f"{name} must be a list of strings")
        return cls(
            plan=list(plan) if plan is not None else None,
            add_facts=norm_facts,
            add_questions=list(data.get("add_questions", [])),
            resolve_questions=list(data.get("resolve_questions", [])),
            add_risk_flags=list(data.get("add_risk_flags", [])),
        )

    def apply(self, state: AgentState) -> AgentState:
        questions = [q for q in state.open_questions if q not in self.resolve_questions]
        questions += [q for q in self.add_questions if q not in questions]
        flags = state.risk_flags + [f for f in self.add_risk_flags if f not in state.risk_flags]
        return AgentState(
            plan=list(self.plan) if self.plan is not None else list(state.plan),
            known_facts=state.known_facts + list(self.add_facts),
            open_questions=questions,
            artifacts=list(state.artifacts),
            risk_flags=flags,
        )


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def arguments_hash(tool: str, arguments: dict[str, Any]) -> str:
    """Binds an approval to the exact call: the same tool with the same arguments."""
    canonical = json.dumps({"tool": tool, "arguments": arguments}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ToolCall:
    """One function call as the model wrote it (arguments kept raw: they may be broken)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Step:
    run_id: str
    seq: int
    kind: StepKind
    status: StepStatus
    created_at: float
    finished_at: float | None = None
    tool: str | None = None
    call_id: str | None = None
    arguments: str | None = None
    result: str | None = None
    artifact_id: str | None = None
    llm_seq: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    tokens: int = 0

    def parsed_arguments(self) -> Any:
        return parsed_arguments(self.arguments)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "seq": self.seq,
            "kind": self.kind.value,
            "status": self.status.value,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }
        if self.kind is StepKind.TOOL:
            data.update(
                tool=self.tool,
                call_id=self.call_id,
                arguments=self.parsed_arguments(),
                result=self.result,
                artifact_id=self.artifact_id,
            )
        elif self.kind is StepKind.LLM:
            data.update(
                content=self.payload.get("content"),
                tool_calls=self.payload.get("tool_calls", []),
                tokens=self.tokens,
                model=self.payload.get("model"),
                latency_s=self.payload.get("latency_s"),
            )
        elif self.kind is StepKind.USER:
            data.update(text=self.payload.get("text"), by=self.payload.get("by"))
        elif self.kind is StepKind.COMPACTION:
            keys = ("summary", "from_seq", "through_seq", "replies", "tool_calls", "limit")
            data.update({k: self.payload.get(k) for k in keys})
            data.update(
                tokens_before=self.payload.get("tokens_before"),
                tokens_after=self.payload.get("tokens_after"),
            )
        else:
            data.update(self.payload)
            data.setdefault("tool", self.tool)  # which call a decision was about
        return data


def parsed_arguments(arguments: str | None) -> Any:
    """A call's arguments as JSON when they are; as the model wrote them when not."""
    try:
        return json.loads(arguments) if arguments is not None else None
    except ValueError:
        return arguments


@dataclass(frozen=True)
class Approval:
    id: str
    run_id: str
    llm_seq: int
    call_id: str
    tool: str
    arguments: str
    args_hash: str
    risk: str
    model_reason: str
    status: str  # pending | approved | denied
    created_at: float
    decided_at: float | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    always: bool = False

    def to_dict(self) -> dict[str, Any]:
        try:
            args: Any = json.loads(self.arguments)
        except ValueError:
            args = self.arguments
        return {
            "id": self.id,
            "tool": self.tool,
            "arguments": args,
            "risk": self.risk,
            "reason": self.model_reason,
            "status": self.status,
            "created_at": self.created_at,
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
            "decision_reason": self.decision_reason,
            "always": self.always,
        }


@dataclass(frozen=True)
class Event:
    id: int
    run_id: str
    kind: str
    message: str
    created_at: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "message": self.message,
            "created_at": self.created_at,
            "data": self.data,
        }


@dataclass(frozen=True)
class Run:
    """A run as the store has it; everything the UI and CLI show comes from here."""

    id: str
    status: RunStatus
    goal: str
    workspace: str
    model: str
    base_url: str | None
    budget: Budget
    policy: Policy
    usage: Usage
    state: AgentState
    created_at: float
    updated_at: float
    idem_key: str | None = None
    result: str | None = None
    error: str | None = None
    pause_reason: str | None = None
    cancel_requested: bool = False
    owner: str | None = None
    owner_pid: int | None = None
    lease_until: float | None = None
    lost_at: float | None = None
    retry_attempt: int = 0
    retry_max: int = 0
    retry_at: float | None = None
    retry_error: str | None = None
    next_seq: int = 1
    revision: int = 0
    waiting_tool: str | None = None  # denormalised for the history pane
    queue: str = "default"  # the supervisors that may execute it (a shared store)
    epoch: int = 0  # grows with every claim: the fence of its executor's writes
    owner_node: str | None = None  # the machine of the executor holding it
    callback_url: str | None = None  # told by POST when it ends or needs a person

    @property
    def quarantined(self) -> bool:
        """Set aside after its executor kept dying at one step (see QUARANTINE_AFTER)."""
        return self.status is RunStatus.NEEDS_ATTENTION and (self.pause_reason or "").startswith(
            QUARANTINED
        )

    @property
    def resumable(self) -> bool:
        """`resume` takes it up again: paused, failed, or quarantined (not a call in doubt:
        that is `resolve`'s to decide)."""
        return self.status in RESUMABLE_STATUSES or self.quarantined

    @property
    def constraints(self) -> dict[str, Any]:
        return {
            "human_in_the_loop": {"required_for_risk_levels": list(self.policy.approval_risks)},
            "always_allow": list(self.policy.always_allow),
            "approval_timeout_s": self.policy.approval_timeout_s,
        }


@dataclass(frozen=True)
class RunSpec:
    """What a new run is started with; recorded whole so a resume uses the same."""

    goal: str
    workspace: str
    model: str
    budget: Budget
    policy: Policy
    base_url: str | None = None
    idem_key: str | None = None
    queue: str = "default"
    callback_url: str | None = None
