"""A long-lived server's supervisor keeper: the runs it serves go on when the supervisor dies
or idles out between requests, with no person there to start it again."""

from __future__ import annotations

import asyncio
import logging

from tui_agent.domain.errors import StoreUnavailable
from tui_agent.service.api import AgentService

SUPERVISOR_CHECK_S = 1.0


async def keep_supervisor(service: AgentService, logger: logging.Logger) -> None:
    """As the open TUI does: when runs (or callbacks) want a supervisor and none is alive
    (killed, or idle-exited), start one; a failing start is retried with backoff. Runs
    until cancelled."""
    from anyio import to_thread

    def wanted() -> bool:
        return not service.supervisor_state().running and service.needs_execution()

    backoff = 0.0
    store_away: str | None = None
    while True:
        await asyncio.sleep(max(SUPERVISOR_CHECK_S, backoff))
        try:
            want = await to_thread.run_sync(wanted)
        except StoreUnavailable as exc:  # not the supervisor's fault: said once per outage
            if store_away is None:
                logger.warning("the store cannot be read now: %s (checking again)", exc)
            store_away = str(exc)
            continue
        except Exception as exc:
            logger.warning("cannot tell whether runs need the supervisor: %s", exc)
            continue
        if store_away is not None:
            logger.info("the store can be read again")
            store_away = None
        if not want:
            backoff = 0.0
            continue
        try:
            pid = await to_thread.run_sync(service.ensure_supervisor)
            logger.info("started the supervisor (pid %d): runs were waiting for one", pid)
            backoff = 0.0
        except Exception as exc:
            backoff = min(60.0, max(2.0, backoff * 2))
            logger.warning("cannot start the supervisor: %s (again in %.0fs)", exc, backoff)
