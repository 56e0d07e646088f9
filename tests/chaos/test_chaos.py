"""The chaos suite's quick mode, run by CI: random kill -9 rounds with a flaky model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import run_chaos

pytestmark = pytest.mark.slow


def test_random_kills_with_a_flaky_model_lose_and_repeat_nothing(tmp_path: Path) -> None:
    report = run_chaos(tmp_path, rounds=8, seed=21)
    assert report.violations == [], report.as_dict()
    assert sum(report.kills.values()) >= 4
    assert report.kills["tui"] >= 1  # seed 21 (its rounds are fixed by the seed) kills the TUI too
    assert report.faults_injected > 0
