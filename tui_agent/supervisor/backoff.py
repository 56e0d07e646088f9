"""When to restart a child process that died: at once after a death that looks like an
accident (a `kill -9`, an OOM kill), slower and slower while it keeps dying young (a crash
loop, e.g. a broken install), so recovery is fast and a broken executor never spins."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestartBackoff:
    young_s: float = 2.0  # a child that dies younger than this counts towards a crash loop
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    young_deaths: int = 0
    not_before: float = 0.0

    def died(self, *, lived_s: float, clean: bool, now: float) -> None:
        if clean or lived_s >= self.young_s:
            self.young_deaths = 0
            self.not_before = now
            return
        self.young_deaths += 1
        if self.young_deaths == 1:
            self.not_before = now  # one early death is not a loop yet
            return
        delay = self.first_delay_s * 2 ** (self.young_deaths - 2)
        self.not_before = now + min(self.max_delay_s, delay)

    def ready(self, now: float) -> bool:
        return now >= self.not_before
