"""Delivering callbacks from the store's outbox: POSTs signed with the API token, retried
with backoff and jitter until the receiver answers 2xx.

It runs beside the supervisor's loop in threads of its own: a slow or dead receiver holds
up one delivery worker, never a run. Each delivery is claimed for a while before it is
tried, so after a crash (even `kill -9`) it is tried again, with the same delivery id."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tenacity import RetryCallState, wait_exponential_jitter

from tui_agent.api_token import signature
from tui_agent.domain.errors import TuiAgentError
from tui_agent.store.protocols import Delivery, Outbox

log = logging.getLogger("tui_agent.callbacks")
# httpx logs each request's URL, and a callback URL may carry a secret (a password, a
# signature in its query): ours say the delivery and the run instead.
logging.getLogger("httpx").setLevel(logging.WARNING)

WORKERS = 4
TIMEOUT_S = 10.0
HOLD_S = 60.0  # a claimed delivery is left alone this long (longer than one attempt)
GIVE_UP_AFTER_S = 24 * 3600.0  # then the row stays as `failed`, with the last error
POLL_S = 0.5
_WAIT = wait_exponential_jitter(initial=1, max=300, exp_base=2, jitter=1)


def retry_delay(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: 1, 2, 4 … 300, each plus up to 1 s of jitter."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(_WAIT(state))


class Deliverer:
    def __init__(
        self,
        outbox: Outbox,
        token: Callable[[], str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.token = token
        self.now = clock
        self.stopping = threading.Event()
        self._busy = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="callback")
        self._client: Any = None  # made at the first delivery: most supervisors make none
        self._thread = threading.Thread(target=self._loop, name="callbacks", daemon=True)
        self.pending = False  # some delivery is still to be made (keeps the supervisor up)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TuiAgentError):  # the store is away: next round
                self._round()
            self.stopping.wait(POLL_S)

    def _round(self) -> None:
        with self._lock:
            free = WORKERS - self._busy
        claimed = self.outbox.claim_due(free, HOLD_S) if free > 0 else []
        for delivery in claimed:
            with self._lock:
                self._busy += 1
            self._pool.submit(self._deliver, delivery)
        with self._lock:
            busy = self._busy
        self.pending = bool(claimed) or busy > 0 or self.outbox.next_due() is not None

    def _deliver(self, delivery: Delivery) -> None:
        try:
            self._attempt(delivery)
        except Exception:  # never lose the worker; the hold runs out and it is tried again
            log.exception("callback %s: attempt failed unexpectedly", delivery.id)
        finally:
            with self._lock:
                self._busy -= 1

    def _http(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx  # not at the supervisor's start: it is on the recovery path

                self._client = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)
            return self._client

    def _attempt(self, delivery: Delivery) -> None:
        import httpx

        body = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tui-agent-callback",
            "X-TUI-Agent-Delivery": delivery.id,
            "X-TUI-Agent-Signature": signature(self.token(), body),
        }
        try:
            answer = self._http().post(delivery.url, content=body, headers=headers)
            if 200 <= answer.status_code < 300:
                self.outbox.delivered(delivery.id)
                log.info("callback %s for run %s delivered", delivery.id, delivery.run_id[:8])
                return
            error = f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        now = self.now()
        give_up = now - delivery.created_at > GIVE_UP_AFTER_S
        retry_at = None if give_up else now + retry_delay(delivery.attempts)
        self.outbox.attempt_failed(delivery.id, error, retry_at)
        if give_up:
            log.warning(
                "callback %s for run %s: gave up (%s)", delivery.id, delivery.run_id[:8], error
            )
        else:
            log.info(
                "callback %s attempt %d failed (%s); next in %.1fs",
                delivery.id,
                delivery.attempts,
                error,
                retry_at - now if retry_at else 0.0,
            )
