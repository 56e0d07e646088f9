"""Process start → first paint of the TUI over 100,000 runs and 1,000,000 steps, with peak
RSS, against a tiny Textual app's first paint measured the same way (headless)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench.common import emit, median
from bench.generate import cached

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report the
# benchmark process's own peak (the generated database) instead of its own.
PEAK_RSS = """
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

CHILD_APP = (
    PEAK_RSS
    + """
import json, os, sys, time
from tui_agent.ui.gc_policy import hold_until_first_frame
hold_until_first_frame()  # what `tui-agent` does before its imports (cli._open_tui)
from pathlib import Path
from tui_agent.service.local import LocalService
from tui_agent.settings import Settings
from tui_agent.ui.app import AgentApp

class Probe(AgentApp):
    def on_mount(self):
        self.call_after_refresh(self.painted)
    def painted(self):
        rows = self.query_one("#history-table").row_count
        print(json.dumps({"t": time.time(), "rows": rows,
                          "rss_mb": peak_rss_mb()}),
              flush=True)
        self.exit()

service = LocalService.open(Settings(home=Path(sys.argv[1])))
Probe(service, start_supervisor=False, live=True).run(headless=True, size=(120, 40))
"""
)

CHILD_FLOOR = (
    PEAK_RSS
    + """
import json, time
from textual.app import App
from textual.widgets import Static

class Tiny(App):
    def compose(self):
        yield Static("hello")
    def on_mount(self):
        self.call_after_refresh(self.painted)
    def painted(self):
        print(json.dumps({"t": time.time(),
                          "rss_mb": peak_rss_mb()}),
              flush=True)
        self.exit()

Tiny().run(headless=True, size=(120, 40))
"""
)


def _measure(code: str, *args: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    start = time.time()
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    data["elapsed"] = data["t"] - start
    return data


def run(quick: bool) -> None:
    db = cached(100_000, 1_000_000)
    home = db.parent
    repeats = 3 if quick else 7
    floors = [_measure(CHILD_FLOOR) for _ in range(repeats)]
    apps = [_measure(CHILD_APP, str(home)) for _ in range(repeats)]
    value = median([a["elapsed"] for a in apps])
    rss = max(a["rss_mb"] for a in apps)
    floor = median([f["elapsed"] for f in floors])
    emit(
        "tui_cold_start",
        value,
        "s",
        floor,
        "<= 0.8 s; <= 150 MB",
        value <= 0.8 and rss <= 150,
        peak_rss_mb=rss,
        floor_rss_mb=max(f["rss_mb"] for f in floors),
        rows_loaded=apps[0]["rows"],
        runs=100_000,
        steps=1_000_000,
    )


if __name__ == "__main__":
    run(quick=True)
