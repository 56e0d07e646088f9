"""A run's Server-Sent Events, replayable from any `Last-Event-ID`.

The stream is made of what the store keeps, so a reconnect can be served from it: each
step (a tool call twice: once open, once finished) and each event row of the run. An
event's id carries both positions: `step_cursor * SPAN + events_sent`, where a step's
cursor is `2 * seq` while it is open and `2 * seq + 1` once it is finished. Steps and
events are sent in time order, each kind in its own order, so both counts only grow (and
the id with them), and the id of any event tells exactly what was sent before it: a
client that comes back with it gets every later event once. (On PostgreSQL a run's
events commit in id order: `add_event_txn`.)

One `ChangeHub` follows the store's change feed for every client and wakes only the
clients whose run changed (one query for all of them), so 200 followers cost one feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from anyio import to_thread

from tui_agent.domain.models import Event, Step, StepStatus
from tui_agent.service.api import AgentService
from tui_agent.service.views import iso

SPAN = 1_000_000_000  # events a run may have; the step cursor is counted above it
SAFETY_NET_S = 1.0  # the feed's safety net: a cheap store fingerprint, compared each second
IDLE_FEED_S = 30.0  # the feed is let go this long after the last stream ended
_EVENT_TYPES = {"approval": "approval", "retry": "retry"}


def split_id(last_event_id: str | None) -> tuple[int, int]:
    """(step cursor, events sent) from a `Last-Event-ID` (a stranger's id: from the start)."""
    try:
        value = int((last_event_id or "0").strip())
    except ValueError:
        return 0, 0
    return divmod(max(0, value), SPAN)


def _step_cursor(step: Step) -> int:
    return 2 * step.seq + (0 if step.status is StepStatus.STARTED else 1)


def _step_data(run_id: str, step: Step) -> dict[str, Any]:
    data = step.to_dict()
    for key in ("created_at", "finished_at"):
        if data.get(key) is not None:
            data[key] = iso(data[key])
    return {"run_id": run_id, **data}


def _event_type(event: Event) -> str:
    if event.kind in _EVENT_TYPES:
        return _EVENT_TYPES[event.kind]
    return "status" if "status" in event.data else event.kind


def _event_data(run_id: str, event: Event) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "kind": event.kind,
        "message": event.message,
        "status": event.data.get("status"),
        "data": event.data,
        "created_at": iso(event.created_at),
    }


class ChangeHub:
    """Wakes the followers of runs that changed; one feed and one query for all.

    The feed is followed only while someone streams (and for `IDLE_FEED_S` after the last
    one left, for a reconnect): a server nobody follows spends nothing on the store's
    commits, so it answers the requests that make them sooner."""

    def __init__(self, service: AgentService) -> None:
        self.service = service
        self._followers: dict[str, set[asyncio.Event]] = {}
        self._marks: dict[str, tuple[Any, ...]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._idle: asyncio.TimerHandle | None = None
        self._checking = asyncio.Lock()
        self._again = False

    @property
    def following(self) -> bool:
        """Whether the store's feed is followed now."""
        return bool(self._tasks)

    async def stop(self) -> None:
        self._cancel_idle()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def follow(self, run_id: str) -> asyncio.Event:
        wake = asyncio.Event()
        self._followers.setdefault(run_id, set()).add(wake)
        self._cancel_idle()
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._follow_feed()),
                asyncio.create_task(self._safety_net()),
            ]
        return wake

    def unfollow(self, run_id: str, wake: asyncio.Event) -> None:
        followers = self._followers.get(run_id)
        if followers is not None:
            followers.discard(wake)
            if not followers:
                del self._followers[run_id]
                self._marks.pop(run_id, None)
        if not self._followers and self._tasks and self._idle is None:
            self._idle = asyncio.get_running_loop().call_later(IDLE_FEED_S, self._let_go)

    def _let_go(self) -> None:
        """Nobody followed for `IDLE_FEED_S`: stop following the feed."""
        self._idle = None
        if not self._followers:
            tasks, self._tasks = self._tasks, []
            for task in tasks:
                task.cancel()

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    async def _follow_feed(self) -> None:
        while True:
            try:
                async for _ in self.service.changes():
                    await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(1.0)  # the feed broke (store away): start it again

    async def _safety_net(self) -> None:
        token: tuple[int, ...] | None = None
        # The first round comes soon: a commit made while the feed was being set up (it
        # starts with its first follower) has woken nobody.
        wait = 0.25
        while True:
            await asyncio.sleep(wait)
            wait = SAFETY_NET_S
            with contextlib.suppress(Exception):
                now = await to_thread.run_sync(self.service.change_token)
                if now != token:
                    token = now
                    await self.check()

    async def check(self) -> None:
        """Read the marks of every followed run; wake the followers of those that moved."""
        if self._checking.locked():
            self._again = True  # one more round after the one under way
            return
        async with self._checking:
            while True:
                self._again = False
                ids = list(self._followers)
                if ids:
                    marks = await to_thread.run_sync(self.service.run_marks, ids)
                    for run_id in ids:
                        mark = marks.get(run_id)
                        if mark != self._marks.get(run_id):
                            self._marks[run_id] = mark  # type: ignore[assignment]
                            for wake in self._followers.get(run_id, ()):
                                wake.set()
                if not self._again:
                    return


async def run_events(
    service: AgentService, hub: ChangeHub, run_id: str, last_event_id: str | None
) -> AsyncIterator[dict[str, Any]]:
    """The run's events after `last_event_id`, live, until the one that makes it final."""
    cursor, sent = split_id(last_event_id)
    after_event = await to_thread.run_sync(_event_id_at, service, run_id, sent)
    wake = hub.follow(run_id)
    try:
        while True:
            wake.clear()  # a change committed from here on wakes us again
            after_seq = (cursor + 1) // 2 - 1
            delta = await to_thread.run_sync(service.run_delta, run_id, after_seq, after_event)
            steps = [s for s in delta.steps if _step_cursor(s) > cursor]
            for item in _in_time_order(steps, delta.events):
                if isinstance(item, Step):
                    cursor = _step_cursor(item)
                    yield _sse(cursor * SPAN + sent, "step", _step_data(run_id, item))
                else:
                    sent += 1
                    after_event = item.id
                    yield _sse(cursor * SPAN + sent, _event_type(item), _event_data(run_id, item))
            if delta.run.status.is_final:
                return
            await wake.wait()
    finally:
        hub.unfollow(run_id, wake)


def _in_time_order(steps: list[Step], events: list[Event]) -> list[Step | Event]:
    """Both lists merged by when each thing happened, each list keeping its own order (so
    the ids stay a faithful cursor: see the module's docstring)."""
    merged: list[Step | Event] = []
    i = j = 0
    while i < len(steps) or j < len(events):
        take_step = j >= len(events) or (i < len(steps) and _when(steps[i]) <= events[j].created_at)
        if take_step:
            merged.append(steps[i])
            i += 1
        else:
            merged.append(events[j])
            j += 1
    return merged


def _when(step: Step) -> float:
    if step.status is StepStatus.STARTED or step.finished_at is None:
        return step.created_at
    return step.finished_at


def _event_id_at(service: AgentService, run_id: str, count: int) -> int:
    """The store id of the run's `count`-th event (0: before the first)."""
    if count <= 0:
        return 0
    events = service.events_since(run_id, 0)
    return events[min(count, len(events)) - 1].id if events else 0


def _sse(event_id: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(event_id), "event": kind, "data": json.dumps(data, ensure_ascii=False)}
