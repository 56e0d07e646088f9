"""Snapshots of the main screens from a seeded real database and a frozen clock, on each
store: the same runs must look the same, to the character."""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import frozen_app
from tests.ui.seed import seed_showcase, seed_stats

pytestmark = pytest.mark.both_stores


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


def test_empty_home(snap_compare: Any, snap_home: Path, db_url: str | None) -> None:
    assert snap_compare(frozen_app(snap_home, db_url), terminal_size=(120, 36), run_before=_settle)


def test_run_waiting_for_approval(
    snap_compare: Any, snap_home: Path, snap_store: Path | str, db_url: str | None
) -> None:
    ids = seed_showcase(snap_store)
    assert snap_compare(
        frozen_app(snap_home, db_url), terminal_size=(140, 40), run_before=_select("waiting", ids)
    )


def test_completed_run_with_many_steps(
    snap_compare: Any, snap_home: Path, snap_store: Path | str, db_url: str | None
) -> None:
    ids = seed_showcase(snap_store)
    assert snap_compare(
        frozen_app(snap_home, db_url), terminal_size=(160, 48), run_before=_select("completed", ids)
    )


def test_paused_run(
    snap_compare: Any, snap_home: Path, snap_store: Path | str, db_url: str | None
) -> None:
    ids = seed_showcase(snap_store)
    assert snap_compare(
        frozen_app(snap_home, db_url), terminal_size=(120, 36), run_before=_select("paused", ids)
    )


def test_small_terminal_80x24(
    snap_compare: Any, snap_home: Path, snap_store: Path | str, db_url: str | None
) -> None:
    """The approval request and the newest steps on one 80x24 screen."""
    ids = seed_showcase(snap_store)
    assert snap_compare(
        frozen_app(snap_home, db_url), terminal_size=(80, 24), run_before=_select("waiting", ids)
    )


def test_completed_run_at_120x36(
    snap_compare: Any, snap_home: Path, snap_store: Path | str, db_url: str | None
) -> None:
    ids = seed_showcase(snap_store)
    assert snap_compare(
        frozen_app(snap_home, db_url), terminal_size=(120, 36), run_before=_select("completed", ids)
    )


def _open_form(pilot: Any) -> Any:
    async def open_form(pilot: Any) -> None:
        await _settle(pilot)
        await pilot.press("s")
        await _settle(pilot)

    return open_form


def test_start_form(snap_compare: Any, snap_home: Path, db_url: str | None) -> None:
    assert snap_compare(
        frozen_app(snap_home, db_url), terminal_size=(100, 32), run_before=_open_form(None)
    )


def test_start_form_fits_80x24_with_its_buttons(
    snap_compare: Any, snap_home: Path, db_url: str | None
) -> None:
    assert snap_compare(
        frozen_app(snap_home, db_url), terminal_size=(80, 24), run_before=_open_form(None)
    )


@pytest.fixture
def utc() -> Iterator[None]:
    """Runs per day are local days: one time zone, so the bars fall on the same days."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


def _press_on(run_key: str, ids: dict[str, str], *keys: str) -> Any:
    async def run_before(pilot: Any) -> None:
        await _select(run_key, ids)(pilot)
        await pilot.press(*keys)
        # the figures (or the fork's preview) are read in a worker and come back as a message
        for _ in range(200):
            await _settle(pilot)
            shown = pilot.app.screen.query("#stats-title, #fork-again-list")
            if not any("reading" in str(widget.render()) for widget in shown):
                break
        await _settle(pilot)

    return run_before


@pytest.mark.usefixtures("utc")
def test_stats_screen_at_120x36(
    snap_compare: Any, snap_home: Path, snap_store: Path | str, db_url: str | None
) -> None:
    """Ten days of runs: the run's steps and tokens, durations, latency, runs per day."""
    ids = seed_stats(snap_store)
    assert snap_compare(
        frozen_app(snap_home, db_url),
        terminal_size=(120, 36),
        run_before=_press_on("notes", ids, "g"),
    )


@pytest.mark.usefixtures("utc")
def test_stats_screen_fits_80x24(
    snap_compare: Any, snap_home: Path, snap_store: Path | str, db_url: str | None
) -> None:
    ids = seed_stats(snap_store)
    assert snap_compare(
        frozen_app(snap_home, db_url),
        terminal_size=(80, 24),
        run_before=_press_on("notes", ids, "g"),
    )


def test_fork_form_lists_the_calls_asked_again_at_80x24(
    snap_compare: Any, snap_home: Path, snap_store: Path | str, db_url: str | None
) -> None:
    """From step 8 (tab shows the cursor on the newest, step 11; three rows up), the write
    at step 10 must be approved again; the form's buttons stay on screen."""
    workspace = snap_home.parent / f"{snap_home.name}-workspace"  # fixed, outside the home
    workspace.mkdir(exist_ok=True)
    try:
        ids = seed_stats(snap_store, str(workspace))
        keys = ("tab", "up", "up", "up", "f")
        assert snap_compare(
            frozen_app(snap_home, db_url),
            terminal_size=(80, 24),
            run_before=_press_on("notes", ids, *keys),
        )
    finally:
        workspace.rmdir()


SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_snapshots"


def _screen_text(svg: Path) -> list[str]:
    """The characters of a snapshot, row by row, the status bar's store (its size, and so
    how much of its path fits) left out."""
    rows = re.findall(r"<text[^>]*>([^<]*)</text>", svg.read_text(encoding="utf-8"))
    texts = (html.unescape(row).replace("\xa0", " ") for row in rows)
    return [re.sub(r"│ db [\d.]+ [KMG]?B .*", "│ db …", text) for text in texts]


def test_each_screen_is_the_same_on_both_stores() -> None:
    """The same seeded runs must look the same read from SQLite and from PostgreSQL (it
    reads the snapshot files; it needs no store)."""
    pairs = sorted(SNAPSHOTS.glob("*[[]sqlite].svg"))
    assert len(pairs) == 11
    for sqlite_svg in pairs:
        pg_svg = sqlite_svg.with_name(sqlite_svg.name.replace("[sqlite]", "[postgres]"))
        assert _screen_text(pg_svg) == _screen_text(sqlite_svg), pg_svg.name
