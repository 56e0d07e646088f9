"""Retrying transient LLM errors with tenacity: exponential backoff, jitter, Retry-After."""

from __future__ import annotations

from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from tui_agent.llm.base import TransientLLMError

MAX_RETRY_AFTER_S = 300.0


class wait_retry_after(wait_base):
    """Exponential backoff with jitter, but never sooner than the server's Retry-After."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = float(self.fallback(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, TransientLLMError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, MAX_RETRY_AFTER_S))
        return delay


def llm_retrying(
    *,
    attempts: int,
    initial_s: float,
    max_s: float,
    sleep: Callable[[float], None],
    before_sleep: Callable[[RetryCallState], None],
) -> Retrying:
    return Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_retry_after(
            wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s)
        ),
        retry=retry_if_exception_type(TransientLLMError),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
