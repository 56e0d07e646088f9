"""First token → visible in the running TUI (headless): the time from the scripted server
sending a reply's first content chunk to that text on screen, through the executor's path
(the OpenAI client streaming into the live channel) and the service's live feed, beside
the commit-to-screen floor (a bare watchfiles watcher woken by commits) of the same run."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

from bench.commit_to_screen import _floor_run, _seed
from bench.common import emit, median, p95, scratch
from tests.fakes.llm_server import Reply, ScriptedLLM
from tui_agent.live import LiveChannel, LiveOutput
from tui_agent.llm.openai_client import OpenAIClient
from tui_agent.service.local import LocalService
from tui_agent.settings import Settings
from tui_agent.store.journal import StepJournal
from tui_agent.store.run_store import open_store
from tui_agent.ui.app import AgentApp
from tui_agent.ui.widgets.run_pane import RunPane


def _ask(server: ScriptedLLM, home: Path, run_id: str, n: int, done: threading.Event) -> None:
    """The executor's side: n streamed replies, each into the run's live file."""
    client = OpenAIClient("scripted", server.base_url)
    channel = LiveChannel(Settings(home=home).live_dir)
    time.sleep(1.0)  # the app is up and watching
    for i in range(n):
        messages = [{"role": "user", "content": "go"}]
        messages += [{"role": "assistant", "content": "x"}] * i  # turn i
        publisher = channel.publisher(run_id, "reply", 0)
        assert publisher is not None
        client.complete(messages, [], 30, on_text=publisher)
        publisher.clear()
        time.sleep(random.uniform(0.1, 0.2))
    done.set()


async def _app_run(home: Path, n: int) -> list[float]:
    server = ScriptedLLM().start()
    server.script = [Reply(f"w{i}x and then some more words") for i in range(n)]
    server.chunk_delay_s = 0.08  # the first word stays alone on screen for a while
    run_id = _seed(home)
    store = open_store(home / "tui-agent.db")
    StepJournal(store.db, "bench", 1).claim(1, 3600)  # running, as under an executor
    store.close()
    shown: dict[int, float] = {}

    original = RunPane.show_live

    def probe(pane: RunPane, live: LiveOutput | None) -> None:
        original(pane, live)
        if live is not None and pane._live is not None:
            word = live.text.split(" ")[0]
            if word.startswith("w") and word.endswith("x"):
                shown.setdefault(int(word[1:-1]), time.monotonic())

    service = LocalService.open(Settings(home=home))
    app = AgentApp(service, start_supervisor=False, live=True)
    RunPane.show_live = probe  # type: ignore[method-assign]
    done = threading.Event()
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            asker = threading.Thread(target=_ask, args=(server, home, run_id, n, done))
            asker.start()
            while not done.is_set():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            asker.join()
    finally:
        RunPane.show_live = original  # type: ignore[method-assign]
        service.close()
        server.stop()
    return [(shown[i] - at) * 1000 for i, at in server.first_chunk_at.items() if i in shown]


def run(quick: bool) -> None:
    n = 30 if quick else 150
    floor_home = scratch("ft-floor")
    floor = asyncio.run(_floor_run(floor_home, _seed(floor_home), n))
    app_home = scratch("ft-app")
    app_home.chmod(0o700)
    values = asyncio.run(_app_run(app_home, n))
    ok = len(values) >= n * 0.9 and p95(values) <= 2 * max(p95(floor), 50)
    emit(
        "first_token_to_screen",
        p95(values),
        "ms",
        p95(floor),
        "p95 <= 2x the commit-to-screen floor's p95 (at least 100 ms)",
        ok,
        median=median(values),
        floor_median=median(floor),
        samples=len(values),
        replies=n,
    )


if __name__ == "__main__":
    run(quick=True)
