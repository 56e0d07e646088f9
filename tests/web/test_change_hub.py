"""The server's change hub follows the store's feed only while someone streams: an idle
server spends nothing on other processes' commits, and a stream that comes later is still
woken by the next commit (the feed starts again, with a quick first safety round)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import FAST_CONFIG, Home
from tui_agent.service.local import LocalService
from tui_agent.settings import load_settings
from tui_agent.web import events
from tui_agent.web.events import ChangeHub


@pytest.mark.both_stores
def test_the_feed_is_followed_only_while_someone_streams(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "IDLE_FEED_S", 0.3)
    home.configure(FAST_CONFIG + 'queues = ["nobody-serves-this"]\n')
    first, second = home.start("stays queued"), home.start("stays queued too")
    service = LocalService.open(load_settings(home.env))

    async def woken_by(hub: ChangeHub, run_id: str, change: tuple[str, ...]) -> None:
        wake = hub.follow(run_id)
        try:
            await asyncio.sleep(0.5)  # the feed is set up (and its first round done)
            wake.clear()
            await asyncio.to_thread(home.cli, *change, check=True)
            await asyncio.wait_for(wake.wait(), 5)
        finally:
            hub.unfollow(run_id, wake)

    async def scenario() -> None:
        hub = ChangeHub(service)
        assert not hub.following  # nobody streams: no feed
        await woken_by(hub, first, ("cancel", first))
        assert hub.following  # kept a moment for a reconnect
        await asyncio.sleep(0.6)
        assert not hub.following  # then let go
        await woken_by(hub, second, ("cancel", second))  # a later stream is woken all the same
        await hub.stop()
        assert not hub.following

    try:
        asyncio.run(scenario())
    finally:
        service.close()
