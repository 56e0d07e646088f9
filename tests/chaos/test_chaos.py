"""The chaos suite's quick mode, run by CI: random kill -9 rounds with a flaky model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.both_stores]


def test_random_kills_with_a_flaky_model_lose_and_repeat_nothing(
    tmp_path: Path, db_url: str | None
) -> None:
    report = run_chaos(tmp_path, rounds=8, seed=21, rotate=True, db_url=db_url)
    data = report.as_dict()
    assert report.violations == [], data
    # every kind of event happened (a kill counts only if its process was there to kill)
    assert report.kills["executor"] >= 1 and report.kills["supervisor"] >= 1, data
    assert report.kills["both"] >= 1 and report.kills["tui"] >= 1, data
    assert report.freezes >= 1 and report.stops >= 1 and report.idle_exits >= 1, data
    assert report.faults_injected > 0
    # and work was done: nothing happening would pass "nothing repeated"
    assert report.completed >= 5 and report.shell_calls >= 5, data
