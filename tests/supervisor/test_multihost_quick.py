"""The multi-machine harness's quick mode (60 runs, three namespaces) as part of the suite:
the full run is `python -m tests.multihost --runs 1000` (figures in docs/reliability.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_three_machines_killed_cut_off_and_frozen_lose_and_repeat_nothing() -> None:
    usable = os.geteuid() == 0 and shutil.which("ip") and shutil.which("bwrap")
    if not usable:
        if os.environ.get("CI"):
            pytest.fail("the multi-machine test needs root, iproute2 and bubblewrap")
        pytest.skip("needs root (network namespaces), iproute2 and bubblewrap")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.multihost", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.stdout, proc.stderr
    figures = json.loads(proc.stdout)
    assert figures["violations"] == [], figures
    assert proc.returncode == 0, proc.stderr
    assert all(
        t is not None and t <= 2 * figures["lease_s"] for t in figures["takeover_s"].values()
    )
