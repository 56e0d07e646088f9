"""Why a run is not moving, computed from stored facts alone (no live process needed)."""

from __future__ import annotations

import json
import time

from tui_agent.domain.models import QUARANTINED, Approval, Run, RunStatus, Step

NO_SUPERVISOR = "no supervisor is running; start one with `tui-agent supervisor start`"


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def describe_call(tool: str | None, arguments: str | None, limit: int = 80) -> str:
    """A one-line `tool(arg=value, ...)` for reasons and prompts."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        args = None
    if isinstance(args, dict):
        inner = ", ".join(f"{k}={json.dumps(v)}" for k, v in args.items())
    else:
        inner = arguments or ""
    if len(inner) > limit:
        inner = inner[: limit - 1] + "…"
    return f"{tool}({inner})"


def run_reason(
    run: Run,
    *,
    now: float,
    pending: Approval | None = None,
    in_doubt: Step | None = None,
    supervisor_running: bool | None = None,
    served_queues: tuple[str, ...] | None = None,
    supervisor_problem: str | None = None,
) -> str | None:
    """The reason shown for a run that is not moving; None for a run making progress.

    `supervisor_running` False (known to be down) turns "being recovered" into how to get
    the run moving again; None (unknown) keeps the store-only wording. `served_queues` are
    the queues this machine's supervisor serves (None: unknown). `supervisor_problem` is
    why the last start of a supervisor failed: what to fix, where starting one would fail
    again."""
    no_supervisor = supervisor_problem or NO_SUPERVISOR
    status = run.status
    if status is RunStatus.WAITING_APPROVAL:
        if pending is None:
            return run.pause_reason or "waiting for approval"
        text = (
            f"waiting for approval: {describe_call(pending.tool, pending.arguments)} "
            f"[{pending.risk}]"
        )
        timeout = run.policy.approval_timeout_s
        if timeout:
            text += f", denied at {_clock(pending.created_at + timeout)} if undecided"
        return text
    if status is RunStatus.NEEDS_ATTENTION:
        if in_doubt is None or run.quarantined:  # (a quarantine may leave a call open)
            return run.pause_reason or "needs attention"
        if (run.pause_reason or "").startswith("call in doubt"):
            return run.pause_reason  # it may say why (the MCP server NAME crashed)
        return (
            f"call in doubt: {describe_call(in_doubt.tool, in_doubt.arguments)} (step "
            f"{in_doubt.seq}) was interrupted; choose retry, skip or fail"
        )
    if status is RunStatus.PAUSED:
        return run.pause_reason or "paused"
    if status is RunStatus.FAILED:
        return run.error or "failed"
    if status is RunStatus.CANCELLED:
        return run.error or "cancelled by user"
    if status is RunStatus.COMPLETED:
        return None
    if status is RunStatus.QUEUED:
        if run.cancel_requested:
            return "cancelling"
        if served_queues is not None and run.queue not in served_queues:
            here = ", ".join(served_queues)
            return (
                f"queued on queue {run.queue!r}: only a supervisor whose config.toml lists it "
                f"in `queues` takes it (this machine serves {here})"
            )
        if supervisor_running is False:
            return f"queued: {no_supervisor}"
        return "queued: waiting for an executor to take it"
    # running
    if run.cancel_requested:
        return "cancelling: stops after the current step"
    lost_at = run.lost_at if run.owner is None else None
    if lost_at is None and run.lease_until is not None and run.lease_until < now:
        lost_at = run.lease_until
    if lost_at is not None:
        if supervisor_running is False:
            return f"executor lost since {_clock(lost_at)}; {no_supervisor}"
        if run.owner is None:
            return f"executor lost since {_clock(lost_at)} (being recovered)"
        return f"executor lost since {_clock(lost_at)} (lease expired; being recovered)"
    if run.retry_at is not None and run.retry_at > now - 1:
        return (
            f"{run.retry_error or 'LLM error'}: retrying at {_clock(run.retry_at)} "
            f"(attempt {run.retry_attempt + 1} of {run.retry_max})"
        )
    return None


def quarantine_reason(
    run_id: str, deaths: int, step: int, open_call: tuple[str | None, str | None] | None
) -> str:
    """The reason of a run set aside because its executor died `deaths` times in a row at
    `step` (`open_call`: the tool and arguments it was running, None: asking the model)."""
    doing = "asking the model" if open_call is None else describe_call(*open_call, limit=60)
    return (
        f"{QUARANTINED} its executor died {deaths} times in a row at step {step} ({doing}); "
        f"see logs/executor.log, then `tui-agent resume {run_id[:8]}` to try again or cancel it"
    )


# What becomes of a person's message (`say`), by the status of the run it is sent to.
_MESSAGE_FATE = {
    RunStatus.COMPLETED: "the completed run continues with it",
    RunStatus.WAITING_APPROVAL: "the run sees it once the pending call is approved or denied",
    RunStatus.NEEDS_ATTENTION: "the run sees it once you resolve it (or resume it)",
    RunStatus.PAUSED: "the run stays paused; resume it to continue with the message",
}


def message_fate(status: RunStatus) -> str:
    """One phrase for the CLI and the TUI alike: when the run will see a message sent to it
    in `status` (queued and running runs: at the next model call)."""
    return _MESSAGE_FATE.get(status, "the run sees it at its next model call")
