"""A person's message to a run (`say`): a `user` step, in plain SQL like `starts.py`, so a
follow-up from a script costs what `ls` costs.

The step takes its seq from the run's `next_seq` in the same statement that moves it, as the
executor's journal does, and in one transaction with the run's checkpoint (revision, and for
a completed run its return to the queue). An executor holding the run moves `next_seq` the
same way, under the same row lock, so a message racing its commits never collides with a
step of its own nor reorders them. A message is not a budget step (replies and calls are).
"""

from __future__ import annotations

import json
from typing import Any

from tui_agent.domain.errors import InvalidTransition
from tui_agent.domain.models import Run, RunStatus, StepKind
from tui_agent.store.db import Database
from tui_agent.store.starts import live_run_with_key_txn
from tui_agent.store.txn import add_event_txn, insert_note_step_txn, load_run_txn

_ALLOC_SEQ = (
    "UPDATE runs SET next_seq = next_seq + 1, revision = revision + 1, updated_at = ?{extra} "
    "WHERE id = ? RETURNING next_seq - 1"
)
# A completed run goes on: back to the queue, its earlier answer kept in its steps only.
_CONTINUE = ", status = ?, result = NULL, error = NULL, pause_reason = NULL"


def add_message(db: Database, run_id: str, text: str, by: str) -> tuple[Run, int]:
    """Add `text` as a user step of the run; returns the run as it now stands and the
    step's seq. A completed run is queued again (it continues with the message); a run
    that is not final keeps its status and sees the message at its next model call. A
    failed or cancelled run takes none (`InvalidTransition`, nothing written)."""
    now = float(db.clock())
    with db.raw_write() as cur:
        run = load_run_txn(cur, run_id, lock=True)
        _check_open_txn(cur, run)
        continues = run.status is RunStatus.COMPLETED
        extra, params = (_CONTINUE, (RunStatus.QUEUED.value,)) if continues else ("", ())
        seq = int(cur.execute(_ALLOC_SEQ.format(extra=extra), (now, *params, run_id)).fetchone()[0])
        body = json.dumps({"text": text, "by": by})
        insert_note_step_txn(cur, run_id, seq, StepKind.USER.value, body, now)
        message = f"message from {by} (step {seq})" + ("; the run continues" if continues else "")
        becomes = RunStatus.QUEUED if continues else None
        add_event_txn(cur, run_id, "message", message, now, {"seq": seq}, becomes=becomes)
        return load_run_txn(cur, run_id), seq


def _check_open_txn(cur: Any, run: Run) -> None:
    """A run that can take a message: not failed or cancelled, and a completed one only
    while no other live run holds its idempotency key (it would hold it twice)."""
    short = run.id[:8]
    if run.status is RunStatus.FAILED:
        raise InvalidTransition(
            f"run {short} failed; resume it first (`tui-agent resume {short}`), then say"
        )
    if run.status is RunStatus.CANCELLED:
        raise InvalidTransition(
            f"run {short} was cancelled and takes no more messages; fork it to go on "
            f"(`tui-agent fork {short} --from-step N`)"
        )
    if run.status is RunStatus.COMPLETED and run.idem_key:
        holder = live_run_with_key_txn(cur, run.idem_key)
        if holder is not None and holder.id != run.id:
            raise InvalidTransition(
                f"run {short}'s idempotency key is held by run {holder.id[:8]}, which is "
                "not final; say it there, or wait until it is"
            )
