"""Snapshots of the main screens from a seeded real database and a frozen clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.ui.conftest import frozen_app
from tests.ui.seed import seed_showcase


async def _settle(pilot: Any) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _select(run_key: str, ids: dict[str, str]) -> Any:
    async def run_before(pilot: Any) -> None:
        await _settle(pilot)
        app = pilot.app
        table = app.query_one("#history-table")
        table.move_cursor(row=table.get_row_index(ids[run_key]))
        await _settle(pilot)

    return run_before


def test_empty_home(snap_compare: Any, snap_home: Path) -> None:
    assert snap_compare(frozen_app(snap_home), terminal_size=(120, 36), run_before=_settle)


def test_run_waiting_for_approval(snap_compare: Any, snap_home: Path) -> None:
    ids = seed_showcase(snap_home / "tui-agent.db")
    assert snap_compare(
        frozen_app(snap_home), terminal_size=(140, 40), run_before=_select("waiting", ids)
    )


def test_completed_run_with_many_steps(snap_compare: Any, snap_home: Path) -> None:
    ids = seed_showcase(snap_home / "tui-agent.db")
    assert snap_compare(
        frozen_app(snap_home), terminal_size=(160, 48), run_before=_select("completed", ids)
    )


def test_paused_run(snap_compare: Any, snap_home: Path) -> None:
    ids = seed_showcase(snap_home / "tui-agent.db")
    assert snap_compare(
        frozen_app(snap_home), terminal_size=(120, 36), run_before=_select("paused", ids)
    )


def test_small_terminal_80x24(snap_compare: Any, snap_home: Path) -> None:
    """The approval request and the newest steps on one 80x24 screen."""
    ids = seed_showcase(snap_home / "tui-agent.db")
    assert snap_compare(
        frozen_app(snap_home), terminal_size=(80, 24), run_before=_select("waiting", ids)
    )


def test_completed_run_at_120x36(snap_compare: Any, snap_home: Path) -> None:
    ids = seed_showcase(snap_home / "tui-agent.db")
    assert snap_compare(
        frozen_app(snap_home), terminal_size=(120, 36), run_before=_select("completed", ids)
    )


def _open_form(pilot: Any) -> Any:
    async def open_form(pilot: Any) -> None:
        await _settle(pilot)
        await pilot.press("s")
        await _settle(pilot)

    return open_form


def test_start_form(snap_compare: Any, snap_home: Path) -> None:
    assert snap_compare(frozen_app(snap_home), terminal_size=(100, 32), run_before=_open_form(None))


def test_start_form_fits_80x24_with_its_buttons(snap_compare: Any, snap_home: Path) -> None:
    assert snap_compare(frozen_app(snap_home), terminal_size=(80, 24), run_before=_open_form(None))
