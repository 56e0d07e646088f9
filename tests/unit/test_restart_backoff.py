"""A dead executor comes back at once after an accident, and ever slower in a crash loop."""

from __future__ import annotations

from tui_agent.supervisor.backoff import RestartBackoff


def test_one_early_death_restarts_at_once() -> None:
    backoff = RestartBackoff()
    backoff.died(lived_s=0.3, clean=False, now=100.0)  # kill -9 right after a promotion
    assert backoff.ready(100.0)


def test_a_crash_loop_backs_off_exponentially_up_to_the_cap() -> None:
    backoff = RestartBackoff(first_delay_s=1.0, max_delay_s=30.0)
    waits = []
    now = 0.0
    for _ in range(8):
        backoff.died(lived_s=0.1, clean=False, now=now)
        waits.append(backoff.not_before - now)
        now = backoff.not_before
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert not backoff.ready(now - 0.01)


def test_a_child_that_lived_or_exited_cleanly_resets_the_loop() -> None:
    backoff = RestartBackoff()
    for _ in range(3):
        backoff.died(lived_s=0.1, clean=False, now=0.0)
    backoff.died(lived_s=60.0, clean=False, now=10.0)
    assert backoff.ready(10.0) and backoff.young_deaths == 0
    for _ in range(3):
        backoff.died(lived_s=0.1, clean=False, now=20.0)
    backoff.died(lived_s=0.1, clean=True, now=21.0)
    assert backoff.ready(21.0) and backoff.young_deaths == 0
