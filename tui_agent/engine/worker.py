"""One run, advanced step by step by one executor thread.

The protocol, per step: look for the recorded result and replay it; otherwise do the work
once and commit its record together with the run's checkpoint. Tool calls are journaled as
started before they run; a call found started after a crash is *in doubt*: idempotent tools
run again, others wait for a person (`needs_attention`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tenacity import RetryCallState

from tui_agent import failpoints
from tui_agent.domain.compaction import CONTEXT_TOO_SMALL
from tui_agent.domain.errors import LeaseLost, StoreUnavailable
from tui_agent.domain.models import (
    AgentState,
    Run,
    RunStatus,
    StepStatus,
    ToolCall,
    Usage,
    arguments_hash,
    spent_budget,
)
from tui_agent.domain.reason import describe_call
from tui_agent.engine.context import (
    SYSTEM_TOKENS,
    estimate_tokens,
    plan_compaction,
    request_tokens,
)
from tui_agent.engine.conversation import (
    build_messages,
    last_reply,
    unanswered_calls,
    unheard_messages,
)
from tui_agent.engine.preflight import run_obstacle
from tui_agent.engine.retry import llm_retrying
from tui_agent.live import LiveChannel, Publisher
from tui_agent.llm.base import LLMClient, LLMReply, PermanentLLMError, TransientLLMError
from tui_agent.store.protocols import ArtifactData, Journal
from tui_agent.tools.processes import call_marker, end_call
from tui_agent.tools.registry import (
    CallInDoubt,
    ToolContext,
    ToolInputError,
    ToolRegistry,
    parse_arguments,
)

# A request over max_context_tokens is compacted at most this often before the run pauses.
COMPACTIONS_PER_REQUEST = 3
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    initial_s: float = 0.5
    max_s: float = 30.0


class _Interrupted(Exception):
    """The executor is stopping or the run was cancelled while waiting."""


class _Stop(Exception):
    """The run left the executor's hands (waiting, paused, final)."""


class _Either:
    """Set when either event is: the executor stops, or this run's lease is lost."""

    def __init__(self, a: threading.Event, b: threading.Event) -> None:
        self._a, self._b = a, b

    def is_set(self) -> bool:
        return self._a.is_set() or self._b.is_set()


class RunWorker:
    def __init__(
        self,
        journal: Journal,
        run_id: str,
        tools: ToolRegistry,
        client_for: Callable[[Run], LLMClient],
        retry: RetryPolicy,
        stopping: threading.Event,
        private: tuple[Path, ...] = (),
        obstacle: Callable[[Run], str | None] = run_obstacle,
        live: LiveChannel | None = None,
        stream: bool = True,
    ) -> None:
        self.journal = journal
        # The live view (the reply as it streams, a command's output as it runs); None: none.
        self.live = live
        self.stream = stream
        self._live_reply: Publisher | None = None
        self.private = private
        # Why the run cannot go on here (None: it can); the executor's also knows its
        # environment (engine/preflight.py).
        self.obstacle = obstacle
        self.run_id = run_id
        self.tools = tools
        self.client_for = client_for
        self.retry = retry
        self.stopping = stopping
        self.cancel = threading.Event()
        # Set by the executor when this run's lease is gone (taken over, or not renewable):
        # its work here ends at once and it writes nothing more.
        self.lost = threading.Event()
        self._halt = _Either(stopping, self.lost)
        self._wall_lock = threading.Lock()
        self._mark = time.monotonic()
        self._wall_total = 0.0

    # ---- active time ---------------------------------------------------------------------

    def take_wall(self) -> float:
        """Active time since the last checkpoint; each second is recorded exactly once."""
        with self._wall_lock:
            now = time.monotonic()
            elapsed, self._mark = now - self._mark, now
            self._wall_total += elapsed
            return elapsed

    def _usage(self) -> Usage:
        with self._wall_lock:
            pending = time.monotonic() - self._mark
        return replace(self.usage, wall_time_s=self.usage.wall_time_s + self._wall_total + pending)

    # ---- main ----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._advance()
        except (_Stop, LeaseLost):
            pass
        except _Interrupted:
            self._let_go()
        except StoreUnavailable as exc:
            # Nothing was half-written. Hand the run back (or let its lease run out) so it
            # is picked up again once the database takes writes.
            log.warning("run %s: %s; handing it back", self.run_id, exc)
            with contextlib.suppress(LeaseLost, StoreUnavailable):
                self.journal.release_to_queue(self.run_id, self.take_wall())
        except Exception as exc:  # a bug must not leave the run silently stuck
            log.error("run %s crashed:\n%s", self.run_id, traceback.format_exc())
            first_line = (str(exc).splitlines() or [""])[0]
            exc = RuntimeError(f"{type(exc).__name__}: {first_line}")
            with contextlib.suppress(LeaseLost):
                self.journal.finish_run(
                    self.run_id,
                    RunStatus.FAILED,
                    wall=self.take_wall(),
                    message=f"internal error: {exc}",
                    error=f"internal error: {exc}",
                )

    def _let_go(self) -> None:
        if self.lost.is_set():
            return  # the run is no longer ours: whoever holds it now records what follows
        try:
            if self.cancel.is_set():
                self.journal.finish_run(
                    self.run_id,
                    RunStatus.CANCELLED,
                    wall=self.take_wall(),
                    message="cancelled by user",
                )
            else:
                self.journal.release_to_queue(self.run_id, self.take_wall())
        except LeaseLost:
            pass

    def _advance(self) -> None:
        run, steps = self.journal.load(self.run_id)
        self.run_obj = run
        self.usage = run.usage
        self.steps = steps
        if self.live is not None:
            self.live.clear(self.run_id)  # what a dead executor left is not under way
        # Before anything is re-run or asked: a run that cannot go on waits for a person,
        # and says why, instead of failing step after step (or killing its executor). A
        # cancel asked for goes through all the same.
        obstacle = None if run.cancel_requested else self.obstacle(run)
        if obstacle:
            self._finish(RunStatus.PAUSED, f"paused: {obstacle}", pause_reason=obstacle)
        self._handle_in_doubt()
        client: LLMClient | None = None
        while True:
            if self._halt.is_set():
                raise _Interrupted
            if self.cancel.is_set() or self.run_obj.cancel_requested:
                self.cancel.set()
                raise _Interrupted
            spent = spent_budget(self.run_obj.budget, self._usage())
            if spent:
                self._finish(RunStatus.PAUSED, spent, pause_reason=spent)
            pending = unanswered_calls(self.steps)
            if pending is not None and pending[2]:
                llm_seq, text, calls = pending
                self._handle_call(llm_seq, text, calls[0])
                continue
            found = last_reply(self.steps)
            if found is not None and not found[1].tool_calls and not unheard_messages(self.steps):
                self._complete(found[1].content or "")
                continue  # a person's message arrived meanwhile: the model answers it
            client = client or self.client_for(self.run_obj)
            with self._streaming_reply():
                self._ask_model(client)

    @contextlib.contextmanager
    def _streaming_reply(self) -> Iterator[None]:
        """While the model is asked, its reply so far goes to the live view; gone once the
        reply is recorded (or the ask ends otherwise)."""
        if self.live is None or not self.stream:
            yield
            return
        seen = self.steps[-1].seq if self.steps else 0
        self._live_reply = self.live.publisher(self.run_id, "reply", seen)
        try:
            yield
        finally:
            if self._live_reply is not None:
                self._live_reply.clear()
            self._live_reply = None

    def _streamed(self) -> dict[str, Publisher]:
        """`complete`'s streaming argument, only when there is a live view to feed."""
        return {"on_text": self._live_reply} if self._live_reply is not None else {}

    def _finish(self, status: RunStatus, message: str, **fields: str | None) -> None:
        self.journal.finish_run(
            self.run_id, status, wall=self.take_wall(), message=message, **fields
        )
        raise _Stop

    def _complete(self, answer: str) -> None:
        """Complete with the last reply as the answer, unless a person's message came after
        the steps read here (then read it, and go on)."""
        last = self.steps[-1].seq if self.steps else 0
        done = self.journal.finish_run(
            self.run_id,
            RunStatus.COMPLETED,
            wall=self.take_wall(),
            message="completed",
            result=answer,
            unless_message_after=last,
        )
        if done:
            raise _Stop
        self._reload()

    def _reload(self) -> None:
        """Refresh the run and the steps that may have changed (new ones, or still open)."""
        open_seqs = [s.seq for s in self.steps if s.status is StepStatus.STARTED]
        last = self.steps[-1].seq if self.steps else 0
        after = min([*open_seqs, last + 1]) - 1
        self.run_obj, tail = self.journal.load(self.run_id, after_seq=after)
        self.steps = [s for s in self.steps if s.seq <= after] + tail
        self.usage = self.run_obj.usage
        with self._wall_lock:
            self._wall_total = 0.0

    # ---- LLM -----------------------------------------------------------------------------

    def _ask_model(self, client: LLMClient) -> None:
        # A person may have said something (another process) since the last step read
        # here: one cheap read of the steps after it, so the request includes it.
        self._reload()
        seen = self.steps[-1].seq if self.steps else 0
        messages = build_messages(self.run_obj, self.steps)
        budget = self.run_obj.budget
        if budget.max_context_tokens:
            messages = self._bounded(messages, budget.max_context_tokens)
        retrying = llm_retrying(
            attempts=self.retry.attempts,
            initial_s=self.retry.initial_s,
            max_s=self.retry.max_s,
            sleep=self._sleep,
            before_sleep=self._on_retry,
        )
        try:
            reply: LLMReply | None = None
            for attempt in retrying:
                with attempt:
                    asked = time.monotonic()  # the answer's latency (for stats and metrics)
                    reply = client.complete(
                        messages, self.tools.schemas(), budget.llm_timeout_s, **self._streamed()
                    )
                    latency = time.monotonic() - asked
            assert reply is not None
        except PermanentLLMError as exc:
            self._finish(RunStatus.FAILED, f"failed: {exc}", error=f"LLM error: {exc}")
        except TransientLLMError as exc:
            self._finish(
                RunStatus.FAILED,
                f"failed: {exc}",
                error=f"LLM error after {self.retry.attempts} attempts: {exc}",
            )
        failpoints.hit("llm.before_record", self.run_id)
        payload = {**reply.to_payload(), "latency_s": round(latency, 4), "seen_seq": seen}
        if budget.max_context_tokens:  # what the measured prompt held of the agent state
            payload[SYSTEM_TOKENS] = estimate_tokens(messages[0])
        self.journal.record_llm_reply(self.run_id, payload, reply.total_tokens, self.take_wall())
        failpoints.hit("llm.after_record", self.run_id)
        self._reload()

    def _bounded(self, messages: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
        """The request within `limit` tokens: older turns folded into compaction steps
        (recorded, so never folded again), or the run paused when even that is too big."""
        tools = self.tools.schemas()
        size = request_tokens(messages, tools, self.steps)
        for _ in range(COMPACTIONS_PER_REQUEST):
            if size <= limit:
                return messages
            plan = plan_compaction(self.run_obj, self.steps, tools, limit)
            if plan is None or plan.payload["tokens_after"] >= size:
                break  # folding more would not make it smaller: say so instead
            payload = {**plan.payload, "tokens_before": size, "limit": limit}
            self.journal.record_compaction(self.run_id, payload, self.take_wall())
            self.run_obj, self.steps = self.journal.load(self.run_id)
            self.usage = self.run_obj.usage
            with self._wall_lock:
                self._wall_total = 0.0
            messages = build_messages(self.run_obj, self.steps)
            size = request_tokens(messages, tools, self.steps)
        if size <= limit:
            return messages
        why = (
            f"{CONTEXT_TOO_SMALL} {size:,} tokens even after compaction, over "
            f"max_context_tokens {limit:,}; resume it with a larger --max-context-tokens "
            "(what is never folded: the system message with the agent state, the tools and "
            "the newest turn)"
        )
        self._finish(RunStatus.PAUSED, f"paused: {why}", pause_reason=why)
        raise AssertionError("unreachable")  # _finish raises

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._halt.is_set() or self.cancel.is_set():
                raise _Interrupted
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _on_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        if self._live_reply is not None:
            self._live_reply.clear()  # the next attempt writes its reply from the start
        self.journal.set_retry(
            self.run_id,
            attempt=state.attempt_number,
            max_attempts=self.retry.attempts,
            retry_at=self.journal.now() + delay,
            error=str(exc),
        )

    # ---- tools ---------------------------------------------------------------------------

    def _handle_in_doubt(self) -> None:
        for step in self.steps:
            if step.status is not StepStatus.STARTED:
                continue
            # In doubt only once nothing of it runs: whatever the dead executor left of the
            # call ends before it is re-run or shown to a person.
            ended = end_call(self.run_id, step.seq)
            if ended:
                self.journal.event(
                    self.run_id,
                    "in_doubt",
                    f"ended {ended} leftover process(es) of step {step.seq} before deciding",
                )
            tool = self.tools.get(step.tool or "")
            if tool is not None and (tool.idempotent or step.payload.get("resolution") == "retry"):
                why = "idempotent" if tool.idempotent else "retry chosen by the user"
                self.journal.restart_in_doubt(self.run_id, step.seq, why)
                self._execute(
                    step.seq,
                    step.tool or "",
                    parse_arguments(tool, step.arguments or ""),
                    rerun=True,
                )
                continue
            text = (
                f"call in doubt: {describe_call(step.tool, step.arguments)} (step {step.seq}) "
                "was interrupted; choose retry, skip or fail"
            )
            self._finish(RunStatus.NEEDS_ATTENTION, text, pause_reason=text)

    def _handle_call(self, llm_seq: int, model_text: str, call: ToolCall) -> None:
        tool = self.tools.get(call.name)
        if tool is None:
            available = ", ".join(self.tools.names())
            self._answer(
                llm_seq,
                call,
                StepStatus.ERROR,
                f"error: unknown tool {call.name!r}; available tools: {available}",
            )
            return
        try:
            args = parse_arguments(tool, call.arguments)
        except ToolInputError as exc:
            self._answer(llm_seq, call, StepStatus.ERROR, f"error: {exc}")
            return
        policy = self.run_obj.policy
        if policy.needs_approval(tool.name, tool.risk.value):
            digest = arguments_hash(tool.name, args)
            approval = self.journal.approval_for(self.run_id, llm_seq, call.id)
            if approval is None or approval.args_hash != digest or approval.status == "pending":
                # Never decided, or decided for other arguments: a person must look (again).
                text = (
                    f"waiting for approval: {describe_call(tool.name, call.arguments)} "
                    f"[{tool.risk.value}]"
                )
                self.journal.request_approval(
                    self.run_id,
                    llm_seq=llm_seq,
                    call_id=call.id,
                    tool=tool.name,
                    arguments=call.arguments,
                    args_hash=digest,
                    risk=tool.risk.value,
                    model_reason=model_text,
                    wall=self.take_wall(),
                    reason_text=text,
                )
                raise _Stop
            if approval.status != "approved":
                who = approval.decided_by or "user"
                why = f": {approval.decision_reason}" if approval.decision_reason else ""
                self._answer(llm_seq, call, StepStatus.DENIED, f"denied by {who}{why}")
                return
        failpoints.hit("tool.before_start", self.run_id)
        seq = self.journal.journal_tool_start(
            self.run_id,
            llm_seq=llm_seq,
            call_id=call.id,
            tool=tool.name,
            arguments=call.arguments,
            wall=self.take_wall(),
        )
        failpoints.hit("tool.after_start", self.run_id)
        self._execute(seq, tool.name, args)

    def _in_doubt_now(
        self, seq: int, name: str, args: dict[str, object], why: str, *, again: bool
    ) -> None:
        """The call was cut off where it ran (its MCP server died): the in-doubt rules of a
        killed executor's call, applied at once. An idempotent tool runs once more; any
        other (or a second cut) waits for a person: its step stays open, for `resolve`."""
        if again:
            self.journal.restart_in_doubt(self.run_id, seq, f"idempotent ({why})")
            self._execute(seq, name, args, rerun=True)
            return
        text = (
            f"call in doubt: {describe_call(name, json.dumps(args))} (step {seq}) was "
            f"interrupted ({why}); choose retry, skip or fail"
        )
        self._finish(RunStatus.NEEDS_ATTENTION, text, pause_reason=text)

    def _answer(self, llm_seq: int, call: ToolCall, status: StepStatus, result: str) -> None:
        self.journal.record_tool_outcome(
            self.run_id,
            llm_seq=llm_seq,
            call_id=call.id,
            tool=call.name,
            arguments=call.arguments,
            status=status,
            result=result,
            wall=self.take_wall(),
        )
        self._reload()

    def _execute(
        self, seq: int, name: str, args: dict[str, object], *, rerun: bool = False
    ) -> None:
        tool = self.tools.get(name)
        assert tool is not None
        budget = self.run_obj.budget
        ctx = ToolContext(
            workspace=Path(self.run_obj.workspace),
            timeout_s=budget.tool_timeout_s,
            read_artifact=self._read_artifact,
            cancel=self.cancel,
            stop=self._halt,  # type: ignore[arg-type]
            sandbox=self.run_obj.policy.sandbox,
            call_mark=call_marker(self.journal.owner, self.run_id, seq),
            private=self.private,
        )
        shown = self.live.publisher(self.run_id, "shell", seq) if self.live else None
        ctx.on_output = shown
        status, state, patch_text = StepStatus.FINISHED, None, None
        try:
            output = _run_with_timeout(tool.run, ctx, args, budget.tool_timeout_s)
            text = output.text
            if output.failed:
                status = StepStatus.ERROR
            if output.patch is not None:
                state = output.patch.apply(self.run_obj.state)
                patch_text = text
            if output.produced is not None:
                state = _with_artifact(state or self.run_obj.state, output.produced)
        except ToolInputError as exc:
            status, text = StepStatus.ERROR, f"error: {exc}"
        except CallInDoubt as exc:
            self._in_doubt_now(seq, name, args, str(exc), again=tool.idempotent and not rerun)
            return
        except TimeoutError:
            end_call(self.run_id, seq)  # the tool's thread may have left processes behind
            status, text = (
                StepStatus.ERROR,
                f"error: {name} timed out after {budget.tool_timeout_s:g}s",
            )
        except OSError as exc:
            status, text = StepStatus.ERROR, f"error: {exc.strerror or exc}"
        failpoints.hit("tool.before_finish", self.run_id)
        artifact = None
        limit = budget.max_artifact_bytes_in_context
        if patch_text is None and len(text.encode()) > limit:
            artifact_id = uuid.uuid4().hex[:12]
            content = text.encode()
            preview = text[: max(100, min(500, limit // 2))]
            summary = f"{name} result, {len(content)} bytes"
            artifact = ArtifactData(artifact_id, content, summary)
            text = (
                f"[{summary}: stored as artifact {artifact_id}. Read it in slices with "
                f"read_file(path='artifact:{artifact_id}', offset, limit).]\n{preview}"
            )
        self.journal.finish_tool(
            self.run_id,
            seq,
            status=status,
            result=text,
            wall=self.take_wall(),
            artifact=artifact,
            state=state,
        )
        if shown is not None:
            shown.clear()
        failpoints.hit("tool.after_finish", self.run_id)
        self._reload()

    def _read_artifact(self, artifact_id: str) -> bytes | None:
        found = self.journal.artifact(artifact_id)
        if found is None or found[0] != self.run_id:
            return None
        return found[1]


def _with_artifact(state: AgentState, produced: dict[str, object]) -> AgentState:
    """The state with a written file listed once (a file written again is listed anew)."""
    new = AgentState.from_dict(state.to_dict())
    new.artifacts = [
        a
        for a in new.artifacts
        if not (a.get("type") == "file" and a.get("path") == produced["path"])
    ] + [dict(produced)]
    return new


def _run_with_timeout(fn, ctx, args, timeout_s):  # type: ignore[no-untyped-def]
    """Run a tool in a helper thread so a hung read cannot hold the run forever."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            failpoints.hit("tool.running")  # crash tests: a tool that hangs
            box["out"] = fn(ctx, args)
        except BaseException as exc:  # re-raised in the caller
            box["exc"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    # run_shell enforces its own timeout and kills its process group; give it a margin.
    thread.join(timeout_s + 5.0)
    if thread.is_alive():
        raise TimeoutError
    if "exc" in box:
        raise box["exc"]  # type: ignore[misc]
    return box["out"]
