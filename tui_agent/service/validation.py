"""The checks on what a person gives a run (goal, budgets, message, callback URL …), made
before anything is written; `LocalService` and its run operations share them."""

from __future__ import annotations

from tui_agent.domain.compaction import MIN_CONTEXT_TOKENS
from tui_agent.domain.errors import BadInput
from tui_agent.domain.models import Risk

MAX_GOAL_CHARS = 20_000
MAX_MESSAGE_CHARS = 20_000
MAX_REASON_CHARS = 2_000


def check_storable_text(name: str, value: str | None) -> None:
    """Text a store can keep and a terminal can show: no NUL, no lone surrogate (JSON's
    `\\ud800` decodes to one; it cannot be written as UTF-8)."""
    if value is None:
        return
    if "\x00" in value:
        raise BadInput(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{name} contains characters that are not valid text") from None


RISKS = [r.value for r in Risk]


# Far beyond any real run, yet small enough that no budget sum can overflow SQLite's integers.
BUDGET_CEILINGS = {
    "--max-steps": 1_000_000,
    "--max-tokens": 10**12,
    "--max-wall-time": 10**8,
    "--max-context-tokens": 10**8,
}


def check_context_limit(value: int | None) -> None:
    """A context limit is a budget, and one a request can still be made within."""
    check_positive("--max-context-tokens", value)
    if value is not None and value < MIN_CONTEXT_TOKENS:
        raise BadInput(f"--max-context-tokens must be at least {MIN_CONTEXT_TOKENS}, not {value}")


def check_positive(name: str, value: float | None) -> None:
    """A budget given as option `name`: absent, or above 0 and under its ceiling."""
    if value is None:
        return
    if value != value or value <= 0:
        raise BadInput(f"{name} must be greater than 0, not {value:g}")
    if value > BUDGET_CEILINGS[name]:
        raise BadInput(f"{name} must be at most {BUDGET_CEILINGS[name]:,}, not {value:,}")


MAX_URL_CHARS = 2048


def check_callback_url(url: str | None) -> str | None:
    """An absolute http(s) URL with a host, or nothing (checked before anything is written)."""
    if url is None:
        return None
    from urllib.parse import urlsplit

    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or len(url) > MAX_URL_CHARS
        or any(c.isspace() for c in url)
    ):
        raise BadInput(f"--callback-url must be an http:// or https:// URL, not {url[:80]!r}")
    return url
