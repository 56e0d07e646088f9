"""Every key path with Pilot, against a real store and a real supervisor process. Nothing
is refreshed by hand: what the supervisor commits must reach the screen by itself."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.widgets import Button, Input

from tests.conftest import FAST_CONFIG, Home, hold_write_lock
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tui_agent.llm.factory import default_model
from tui_agent.service.local import LocalService
from tui_agent.settings import load_settings
from tui_agent.ui.app import AgentApp
from tui_agent.ui.screens.fork_form import ForkScreen
from tui_agent.ui.widgets.timeline import Timeline

pytestmark = pytest.mark.slow


@pytest.fixture
def make_app(home: Home, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], AgentApp]]:
    services: list[LocalService] = []

    def build() -> AgentApp:
        for key, value in home.env.items():
            monkeypatch.setenv(key, value)
        service = LocalService.open(load_settings())
        services.append(service)
        settings = load_settings()
        return AgentApp(
            service,
            ui_state_path=settings.ui_state_path,
            default_workspace=str(home.workspace),
            default_model=default_model(),
        )

    yield build
    for service in services:
        service.close()


async def until(
    pilot: Any, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def footer_keys(app: AgentApp) -> set[str]:
    """The keys the footer shows now (check_action decides)."""
    return {k for k, b in app.active_bindings.items() if b.enabled and b.binding.show}


async def start_from_form(pilot: Any, goal: str) -> None:
    await pilot.press("s")
    await pilot.pause()
    await pilot.press(*goal)
    await pilot.press("enter")
    await pilot.pause()


@pytest.mark.both_stores
async def test_start_from_form_then_approve_with_y(make_app: Any, home: Home) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        assert "y" not in footer_keys(app)
        await start_from_form(pilot, "Summarise the workspace")
        assert app.selected is not None
        await until(pilot, lambda: app.run_status == "waiting_approval", what="approval")
        assert "y" in footer_keys(app) and "n" in footer_keys(app)
        request = app.query_one("#run-request")
        assert "write_file" in str(request.render()) and "write_local" in str(request.render())
        await pilot.press("y")
        await until(pilot, lambda: app.run_status == "completed", what="completion")
        assert "y" not in footer_keys(app)
    run = home.show(app.selected)
    assert run["status"] == "completed" and run["approvals"][0]["status"] == "approved"


@pytest.mark.both_stores
async def test_enter_in_goal_starts_with_defaults_and_errors_stay_in_form(
    make_app: Any, home: Home
) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("enter")  # empty goal
        await pilot.pause()
        assert "goal must not be empty" in str(app.screen.query_one("#start-error").render())
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert app.screen is app.screen_stack[0]
        await start_from_form(pilot, "defaults please")
        run = home.show(app.selected)
        assert run["model"] == "demo" and run["workspace"] == str(home.workspace.resolve())
        assert run["budget"]["max_steps"] == 50


@pytest.mark.both_stores
async def test_deny_with_reason(make_app: Any, home: Home) -> None:
    run_id = home.start("Summarise")
    home.wait_status(run_id, "waiting_approval")
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.run_status == "waiting_approval", what="selection")
        await pilot.press("n")
        await pilot.pause()
        await pilot.press(*"not today")
        await pilot.press("enter")
        await until(pilot, lambda: app.run_status == "completed", what="completion")
    run = home.show(run_id)
    write = next(s for s in run["steps"] if s.get("tool") == "write_file" and s["kind"] == "tool")
    assert write["status"] == "denied" and "not today" in write["result"]
    assert run["approvals"][0]["decision_reason"] == "not today"


@pytest.mark.both_stores
async def test_always_allow_with_a(make_app: Any, home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.script = [
        Reply("One.", [call("write_file", {"path": "a.txt", "content": "1"})]),
        Reply("Two.", [call("write_file", {"path": "b.txt", "content": "2"})]),
        Reply("Done."),
    ]
    run_id = home.start()
    home.wait_status(run_id, "waiting_approval")
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.run_status == "waiting_approval", what="selection")
        await pilot.press("a")
        await until(pilot, lambda: app.run_status == "completed", what="completion")
    view = home.show(run_id)
    summary = [(s["kind"], s.get("tool"), s["status"]) for s in view["steps"]]
    assert (home.workspace / "b.txt").exists(), summary
    assert [a["status"] for a in view["approvals"]] == ["approved"], view["approvals"]
    assert view["approvals"][0]["always"] is True


@pytest.mark.both_stores
async def test_cancel_asks_for_confirmation(make_app: Any, home: Home) -> None:
    run_id = home.start("to cancel")
    home.wait_status(run_id, "waiting_approval")
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.run_status == "waiting_approval", what="selection")
        await pilot.press("c")
        await until(pilot, lambda: len(app.screen_stack) == 2, what="the confirmation")
        await pilot.press("n")  # no: nothing happens
        await until(pilot, lambda: len(app.screen_stack) == 1, what="the dialog to close")
        await pilot.pause(0.5)  # a cancel, had one been sent, would have been written by now
        assert home.show(run_id)["status"] == "waiting_approval"
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("y")
        await until(pilot, lambda: app.run_status == "cancelled", what="cancel")
        assert "c" not in footer_keys(app)
        tree = app.query_one("#run-timeline")
        await until(
            pilot,
            lambda: any("cancelled by" in str(n.label) for n in tree.root.children),
            what="the cancel in the timeline",
        )


@pytest.mark.both_stores
async def test_resume_after_budget_pause_extends_the_budget(
    make_app: Any, home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.default = Reply("Again.", [call("list_dir", {})])
    run_id = home.start("loop", "--max-steps", "4")
    home.wait_status(run_id, "paused")
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.run_status == "paused", what="selection")
        assert "r" in footer_keys(app)
        await pilot.press("r")
        await pilot.pause()
        assert app.screen.query_one("#resume-steps").value == "8"  # prefilled: doubled
        await pilot.press("enter")
        await until(pilot, lambda: home.show(run_id)["usage"]["steps"] == 8, what="8 steps")
        await until(pilot, lambda: app.run_status == "paused", what="paused again")
        assert "8/8" in str(app.query_one("#gauge-steps .gauge-value").render())


@pytest.mark.both_stores
async def test_r_on_a_run_paused_by_its_context_limit_offers_a_larger_one(
    make_app: Any, home: Home, llm: ScriptedLLM
) -> None:
    """The limit is raised where the run is resumed (at 80x24, its field on screen): `r`
    resuming with the same limit would only pause it again (a stranger's walk)."""
    home.use_server(llm)
    facts = [f"fact {n}: " + "many words " * 120 for n in range(4)]
    llm.script = [
        Reply("Noting.", [call("update_state", {"patch": {"add_facts": facts}})]),
        Reply("Done."),
    ]
    run_id = home.start("remember it", "--max-context-tokens", "1000")
    home.wait_status(run_id, "paused")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.run_status == "paused", what="selection")
        await pilot.press("r")
        await until(pilot, lambda: bool(app.screen.query("#resume-context")), what="the dialog")
        field = app.screen.query_one("#resume-context")
        assert field.value == "2000" and field.region.bottom <= 24  # doubled, on screen
        await pilot.press("enter")
        await until(pilot, lambda: app.run_status == "completed", what="the run to go on")
    assert home.show(run_id)["budget"]["max_context_tokens"] == 2000


@pytest.mark.both_stores
async def test_the_resume_dialog_keeps_a_too_small_budget_open_with_the_reason(
    make_app: Any, home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.default = Reply("Again.", [call("list_dir", {"path": "."})])
    run_id = home.start("loop", "--max-steps", "3")
    home.wait_status(run_id, "paused")
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.run_status == "paused", what="selection")
        await pilot.press("r")
        await until(pilot, lambda: len(app.screen_stack) == 2, what="the dialog")
        assert "s" not in footer_keys(app) and "r" not in footer_keys(app)  # not its keys
        steps = app.screen.query_one("#resume-steps")
        steps.value = "2"
        await pilot.press("enter")
        await pilot.pause()
        assert len(app.screen_stack) == 2, "a too small budget closed the dialog"
        error = str(app.screen.query_one("#resume-error").render())
        assert "max steps must be more than the 3 already used" in error
        assert app.screen.query_one("#resume-go").display  # a button to press
        steps.value = "5"
        await pilot.click("#resume-go")
        await until(pilot, lambda: len(app.screen_stack) == 1, what="the dialog to close")
    view = home.wait_status(run_id, "paused")
    assert view["budget"]["max_steps"] == 5 and view["usage"]["steps"] == 5


@pytest.mark.both_stores
async def test_skip_an_in_doubt_call_with_k(make_app: Any, home: Home) -> None:
    from tests.ui.seed import Seeder
    from tui_agent.domain.models import RunStatus

    home.cli("ls", check=True)
    seeder = Seeder(home.db_url or home.path / "tui-agent.db")
    run_id = seeder.run("shell work", workspace=str(home.workspace))
    seq = seeder.llm(run_id, "Deploying.", [("run_shell", {"command": "echo deploy"})])
    seeder.journal.journal_tool_start(
        run_id,
        llm_seq=seq,
        call_id="c0-Dep",
        tool="run_shell",
        arguments='{"command": "echo deploy"}',
        wall=0,
    )
    seeder.finish(run_id, RunStatus.NEEDS_ATTENTION, pause_reason="call in doubt")
    seeder.close()
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.run_status == "needs_attention", what="selection")
        assert {"t", "k"} <= footer_keys(app) and "y" not in footer_keys(app)
        assert "Call in doubt" in str(app.query_one("#run-request").render())
        await pilot.press("k")
        await until(pilot, lambda: app.run_status != "needs_attention", what="resolution")
    step = next(s for s in home.show(run_id)["steps"] if s["kind"] == "tool")
    assert step["status"] == "skipped"


@pytest.mark.both_stores
async def test_filter_by_text_and_status(make_app: Any, home: Home) -> None:
    a = home.start("alpha task")
    home.wait_status(a, "waiting_approval")
    b = home.start("beta task")
    home.wait_status(b, "waiting_approval")
    home.cli("cancel", b, check=True)
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        table = app.query_one("#history-table")
        await until(pilot, lambda: table.row_count == 2, what="two rows")
        await pilot.press("slash")
        await pilot.press(*"alpha")
        await pilot.pause()
        assert table.row_count == 1
        await pilot.press("escape")
        await pilot.pause()
        assert table.row_count == 2
        await pilot.press("slash")
        await pilot.press(*"status:cancelled")
        await pilot.pause()
        assert table.row_count == 1 and app.query_one("#history").selected_id == b


@pytest.mark.both_stores
async def test_filter_words_all_match_in_any_order_and_say_what_is_wrong(
    make_app: Any, home: Home
) -> None:
    notes = home.start("Write release notes")
    home.wait_status(notes, "waiting_approval")
    other = home.start("Write the changelog")
    home.wait_status(other, "waiting_approval")
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        table = app.query_one("#history-table")
        await until(pilot, lambda: table.row_count == 2, what="two rows")
        assert "escape" not in footer_keys(app)
        await pilot.press("slash")
        await pilot.pause()
        assert "escape" in footer_keys(app)  # the footer says how to leave the filter
        await pilot.press(*"notes release")  # both words, the other order
        await until(pilot, lambda: table.row_count == 1, what="one match")
        assert app.query_one("#history").selected_id == notes
        await pilot.press(*" zzz")  # a word nothing has: no row, and no stale detail
        await until(pilot, lambda: table.row_count == 0, what="no match")
        await until(pilot, lambda: app.selected is None, what="the detail pane to clear")
        header = str(app.query_one("#run-header").render())
        assert "No run matches the filter" in header
        assert "y" not in footer_keys(app)  # nothing to approve on an empty selection
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == 2, what="the filter cleared")
        assert "escape" not in footer_keys(app)
        await pilot.press("slash")
        await pilot.press(*"status:bogus")
        await pilot.pause()
        note = str(app.query_one("#history-filter-note").render())
        assert "bogus: not a status" in note and "waiting_approval" in note


@pytest.mark.both_stores
async def test_screen_tells_always_and_lists_written_files(
    make_app: Any, home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [
        Reply("One.", [call("write_file", {"path": "docs/a.txt", "content": "1"})]),
        Reply("Done."),
    ]
    run_id = home.start()
    home.wait_status(run_id, "waiting_approval")
    app = make_app()
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: app.run_status == "waiting_approval", what="selection")
        await pilot.press("a")
        await until(pilot, lambda: app.run_status == "completed", what="completion")
        await pilot.pause(0.3)
        tree = app.query_one("#run-timeline")
        timeline = "\n".join(str(node.label) for node in tree.root.children)
        assert "approved write_file (always, for the rest of the run)" in timeline
        state = str(app.query_one("#run-state").render())
        assert "docs/a.txt (1 bytes)" in state and "(none)" in state.split("Artifacts")[0]
    view = home.show(run_id)
    assert view["state"]["artifacts"] == [{"type": "file", "path": "docs/a.txt", "bytes": 1}]


@pytest.mark.both_stores
async def test_reattach_after_closing_the_app_while_a_run_goes_on(
    make_app: Any, home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.latency_s = 0.25
    llm.script = [Reply(f"step {i}", [call("list_dir", {})]) for i in range(8)]
    llm.script.append(Reply("finished all"))
    first = make_app()
    async with first.run_test(size=(140, 40)) as pilot:
        await start_from_form(pilot, "long job")
        run_id = first.selected
        await until(pilot, lambda: home.show(run_id)["usage"]["steps"] >= 2, what="progress")
    # The app is closed; the supervisor keeps running the run.
    steps_at_close = home.show(run_id)["usage"]["steps"]
    assert home.show(run_id)["status"] == "running"
    second = make_app()
    async with second.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        assert second.selected == run_id  # put back where we were
        timeline = second.query_one("#run-timeline")
        await until(pilot, lambda: timeline.last_seq > steps_at_close, what="live steps")
        await until(pilot, lambda: second.run_status == "completed", 30, "completion")
        assert "finished all" in str(second.query_one("#run-header").render())
        assert "supervisor: running" in str(second.query_one("#status-bar").render())


@pytest.mark.both_stores
async def test_quitting_never_stops_a_run(make_app: Any, home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.latency_s = 0.2
    llm.script = [Reply(f"s{i}", [call("list_dir", {})]) for i in range(5)] + [Reply("end")]
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await start_from_form(pilot, "keeps going")
        run_id = app.selected
        await pilot.press("q")
        await until(pilot, lambda: app.return_code == 0, what="q to quit the app")
    home.wait_status(run_id, "completed", timeout=30)


def seed_runs(home: Home, n: int) -> list[str]:
    """n completed runs written straight into the store, newest last; returns their ids."""
    home.cli("ls", check=True)
    rows = [
        (
            f"{i:032x}",
            "completed",
            f"goal number {i}",
            "/w",
            "demo",
            "{}",
            "{}",
            "{}",
            i % 50,
            i * 3,
            1.0,
            False,  # cancel_requested
            0,
            0,
            1,
            1,
            1_700_000_000.0 + i,
            1_700_000_000.0 + i,
        )
        for i in range(n)
    ]
    home.execute_many(
        "INSERT INTO runs (id, status, goal, workspace, model, budget_json, policy_json, "
        "state_json, usage_steps, usage_tokens, usage_wall_s, cancel_requested, "
        "retry_attempt, retry_max, next_seq, revision, created_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    return [r[0] for r in rows]


@pytest.mark.both_stores
@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
async def test_relaunch_returns_to_a_run_deep_in_the_history(
    make_app: Any, home: Home, size: tuple[int, int]
) -> None:
    """Not the newest run, not on the first page: after a relaunch (and its first
    refreshes, a resize, live updates) the same run is selected and remembered."""
    ids = seed_runs(home, 400)
    deep = ids[150]  # 250th from the top: beyond the first page of 100
    state = home.path / "ui-state.json"
    state.write_text(json.dumps({"selected_run": deep}))
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.selected == deep, what="the restored selection")
        await pilot.resize_terminal(size[0] + 30, size[1] + 6)
        await pilot.pause(0.3)
        await pilot.resize_terminal(*size)
        await pilot.pause(1.5)  # first refreshes, safety ticks and supervisor polls
        assert app.selected == deep
        assert app.query_one("#history").selected_id == deep
        assert json.loads(state.read_text())["selected_run"] == deep
        await pilot.press("down")
        await until(pilot, lambda: app.selected == ids[149], what="moving down")
    assert json.loads(state.read_text())["selected_run"] == ids[149]
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await pilot.pause(1.0)
        assert app.selected == ids[149]


@pytest.mark.both_stores
async def test_history_of_100k_runs_is_paged(make_app: Any, home: Home) -> None:
    seed_runs(home, 100_000)
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        table = app.query_one("#history-table")
        await pilot.pause()
        assert table.row_count == 100  # one page, not 100,000 rows
        assert app.query_one("#history").selected_id == f"{99_999:032x}"
        await pilot.press("ctrl+end")
        await pilot.pause()
        assert 100 < table.row_count <= 300  # the next page, loaded on demand
        await pilot.press("slash")
        await pilot.press(*"number 99998")
        await pilot.pause()
        assert table.row_count == 1


@pytest.mark.both_stores
@pytest.mark.parametrize("warm_up_fails", [False, True], ids=["warm-up ok", "warm-up fails"])
async def test_the_collector_is_back_on_after_the_first_frame(
    make_app: Any, warm_up_fails: bool
) -> None:
    """`tui-agent` starts with the GC off (faster first paint); it must never stay off,
    not even when the store's warm-up fails in a way nobody foresaw."""
    import gc

    from tui_agent.ui.gc_policy import hold_until_first_frame

    threshold = gc.get_threshold()
    hold_until_first_frame()
    try:
        app = make_app()
        if warm_up_fails:

            def broken_warm_up() -> None:
                raise OSError("the disk went away")

            app.service.warm_up = broken_warm_up
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, gc.isenabled, what="the collector back on")
            assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == 5000
    finally:
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.both_stores
async def test_a_locked_database_never_freezes_the_keys(make_app: Any, home: Home) -> None:
    """Another process holds the write lock: `y` waits for it in a worker while the screen
    goes on answering keys; the approval lands once the lock is free."""
    home.configure(FAST_CONFIG + "busy_timeout_s = 12\n")
    run_id = home.start("Summarise")
    home.wait_status(run_id, "waiting_approval")
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.run_status == "waiting_approval", what="selection")
        held_s = 6.0
        holder = hold_write_lock(home, held_s)
        pressed = time.monotonic()
        await pilot.press("y")
        await pilot.press("slash")
        await pilot.press(*"abc")
        await pilot.pause()
        assert app.query_one("#history-filter").value == "abc"
        # Keys that waited for the lock would take the whole hold; a loaded machine (CI with
        # coverage) takes up to about 2 s to type them, so the bound is well between.
        assert time.monotonic() - pressed < held_s * 0.7, "the keys waited for the database"
        assert home.show(run_id)["status"] == "waiting_approval"  # still locked out
        holder.join()
        await until(
            pilot, lambda: home.show(run_id)["status"] != "waiting_approval", what="approval"
        )


def _layout(app: AgentApp) -> dict[str, object]:
    table = app.query_one("#history-table")
    return {
        "classes": sorted(c for c in app.classes if c.startswith("-") and "theme" not in c),
        "columns": [(c.key.value, c.width) for c in table.columns.values()],
        "history": app.query_one("#history").region.width,
        "timeline": app.query_one("#run-timeline").region.size,
        "request": app.query_one("#run-request").region.size,
    }


@pytest.mark.both_stores
async def test_one_layout_per_size_whether_started_there_or_resized_there(
    make_app: Any, home: Home
) -> None:
    run_id = home.start("Write a changelog entry for the release")
    home.wait_status(run_id, "waiting_approval")
    layouts = []
    for start in ((80, 24), (150, 45)):
        app = make_app()
        async with app.run_test(size=start) as pilot:
            await until(pilot, lambda a=app: a.run_status == "waiting_approval", what="load")
            await pilot.resize_terminal(80, 24)
            await pilot.pause(0.5)
            layouts.append(_layout(app))
            if start == (80, 24):
                # the approval request and the newest steps are on screen together
                assert app.query_one("#run-request").region.height >= 4
                assert app.query_one("#run-timeline").region.height >= 3
                goal = dict(layouts[-1]["columns"])["goal"]  # type: ignore[call-overload]
                assert goal >= 12, layouts[-1]
    assert layouts[0] == layouts[1]


@pytest.mark.both_stores
async def test_the_palette_offers_the_app_s_commands_and_v_shows_the_whole_call(
    make_app: Any, home: Home, llm: ScriptedLLM
) -> None:
    """At 80x24 the approval card is cut: `v` shows the whole call, and it can be decided
    there; every key that applies is also in the command palette."""
    home.use_server(llm)
    content = "line one of a long file\n" * 30
    llm.script = [Reply("Saving.", [call("write_file", {"path": "a.txt", "content": content})])]
    llm.script.append(Reply("Done."))
    run_id = home.start()
    home.wait_status(run_id, "waiting_approval")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.run_status == "waiting_approval", what="selection")
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Start", "Approve", "Deny", "Always", "View", "Filter"} <= set(commands)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: len(app.screen_stack) == 2, what="the palette")
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Approve" in commands, "the palette screen must not hide the app's commands"
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, what="the palette to close")
        await pilot.press("v")
        await until(pilot, lambda: len(app.screen_stack) == 2, what="the call")
        body = "\n".join(str(w.render()) for w in app.screen.query("#call-body Static"))
        assert body.count("line one of a long file") == 30  # the whole content, not cut
        await pilot.press("y")
        await until(pilot, lambda: app.run_status == "completed", what="approved from the view")


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_the_app_rides_out_a_postgresql_outage(
    make_app: Any, home: Home, llm: ScriptedLLM
) -> None:
    """The server stops for longer than a lease with the app open and a run under way: the
    app says so in its status bar (no crash, no toast a second), and once the server is
    back everything picks up: the run completes, nobody was killed for the outage."""
    from tests.pg import cluster

    home.use_server(llm)
    llm.latency_s = 0.3
    llm.script = [Reply(f"step {i}", [call("list_dir", {})]) for i in range(8)]
    llm.script.append(Reply("made it"))
    run_id = home.start("through an outage")
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        bar = app.query_one("#status-bar")
        await until(pilot, lambda: home.show(run_id)["usage"]["steps"] >= 2, what="progress")
        cluster().pause()
        try:
            await until(pilot, lambda: "cannot be reached" in str(bar.render()), 10, "outage")
            await pilot.pause(3.0)  # longer than lease_s: every lease runs out meanwhile
            assert app.is_running
        finally:
            cluster().resume()
        await until(pilot, lambda: "supervisor: running" in str(bar.render()), 20, "recovery")
        await until(pilot, lambda: app.run_status == "completed", 60, "completion")
    assert home.show(run_id)["result"] == "made it"
    logs = home.path / "logs"
    assert "missed its heartbeats" not in (logs / "supervisor.log").read_text()
    assert " exited (" not in (logs / "supervisor.log").read_text()


@pytest.mark.both_stores
async def test_the_tui_and_the_http_api_drive_one_run_at_once(make_app: Any, home: Home) -> None:
    """Approve over HTTP, see it in the open TUI; approve in the TUI, see it over HTTP."""
    import asyncio

    from tests.web.conftest import Api

    api = await asyncio.to_thread(Api, home)
    try:
        app = make_app()
        async with app.run_test(size=(140, 40)) as pilot:
            await start_from_form(pilot, "Summarise the workspace")
            await until(pilot, lambda: app.run_status == "waiting_approval", what="approval")
            first = app.selected
            assert first is not None
            answer = await asyncio.to_thread(api.client.post, f"/v1/runs/{first}/approve")
            assert answer.status_code == 200, answer.text
            await until(pilot, lambda: app.run_status == "completed", what="the TUI to see it")

            await start_from_form(pilot, "Summarise it again")
            await until(pilot, lambda: app.run_status == "waiting_approval", what="approval")
            second = app.selected
            assert second is not None and second != first
            seen = await asyncio.to_thread(api.wait_status, second, "waiting_approval")
            assert seen["pending_approvals"][0]["tool"] == "write_file"
            await pilot.press("y")
            done = await asyncio.to_thread(api.wait_status, second, "completed")
            assert done["approvals"][0]["status"] == "approved"
    finally:
        await asyncio.to_thread(api.stop)


def _completed_demo_run(home: Home) -> tuple[str, dict[str, Any]]:
    """A demo run that asked to write, was approved and completed: (its id, `show`)."""
    run_id = home.start("Summarise the workspace")
    home.wait_status(run_id, "waiting_approval")
    home.cli("approve", run_id, check=True)
    return run_id, home.wait_status(run_id, "completed")


@pytest.mark.both_stores
async def test_fork_from_the_step_under_the_cursor_lists_the_calls_asked_again(
    make_app: Any, home: Home
) -> None:
    """The timeline's cursor picks the step (the newest one until it is moved); the form
    lists the write recorded after it; enter forks and selects the new run, which has to
    have the write approved again."""
    original, shown = _completed_demo_run(home)
    write = next(s for s in shown["steps"] if s.get("tool") == "write_file" and s["kind"] == "tool")
    at = write["seq"] - 2  # the reply that asked for the write
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.run_status == "completed", what="selection")
        assert {"f", "g"} <= footer_keys(app)
        timeline = app.query_one(Timeline)
        assert timeline.step_under_cursor() == shown["steps"][-1]["seq"]
        timeline.focus()
        for _ in range(len(shown["steps"]) + 2):
            if timeline.step_under_cursor() == at:
                break
            await pilot.press("up")
        assert timeline.step_under_cursor() == at
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, ForkScreen), what="the fork form")
        form = app.screen
        listed = form.query_one("#fork-again-list")
        await until(pilot, lambda: "write_file" in str(listed.render()), what="the calls")
        assert f"step {at}" in str(listed.render())  # the reply that asks for it
        assert "write_local" in str(listed.render())
        assert form.query_one("#fork-step", Input).value == str(at)
        assert form.focused is form.query_one("#fork-step", Input)
        await pilot.press("tab")  # to the goal
        await pilot.press(*"fork it")
        await pilot.press("enter")
        await until(
            pilot,
            lambda: app.selected not in (None, original) and len(app.screen_stack) == 1,
            what="the new run selected",
        )
        new_id = app.selected
        header = app.query_one("#run-header")
        await until(
            pilot,
            lambda: f"fork of {original[:8]}@{at}" in str(header.render()),
            what="the header to say it is a fork",
        )
        app.query_one("#history-table").move_cursor(row=1)  # back to the original
        await until(pilot, lambda: app.selected == original, what="the original again")
        await until(pilot, lambda: timeline.last_seq == shown["steps"][-1]["seq"], what="steps")
        assert timeline.step_under_cursor() == shown["steps"][-1]["seq"]  # newest again
    assert new_id is not None
    forked = home.wait_status(new_id, "waiting_approval")
    assert forked["goal"] == "fork it"
    assert [a["status"] for a in forked["approvals"]] == ["pending"]  # asked again, not copied

    def summary(steps: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(s["seq"], s["kind"], s["status"], s.get("tool")) for s in steps[:at]]

    assert summary(forked["steps"]) == summary(shown["steps"])  # steps 1..at, copied
    assert home.show(original)["steps"] == shown["steps"]


@pytest.mark.both_stores
async def test_focusing_the_timeline_shows_the_newest_step_and_each_arrow_moves_one(
    make_app: Any, home: Home
) -> None:
    """A stranger counted arrow presses from the newest step and forked one step late: the
    first arrow only revealed the cursor. Now tab shows it on the newest step."""
    _, shown = _completed_demo_run(home)
    seqs = [s["seq"] for s in shown["steps"]]
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.run_status == "completed", what="selection")
        timeline = app.query_one(Timeline)
        for _ in range(6):
            if app.focused is timeline:
                break
            await pilot.press("tab")
        assert app.focused is timeline
        assert timeline.cursor_line >= 0, "the cursor is shown"
        assert timeline.step_under_cursor() == seqs[-1]
        await pilot.press("up", "up")
        await pilot.pause()
        assert timeline.step_under_cursor() == seqs[-3]


@pytest.mark.both_stores
async def test_o_opens_the_step_under_the_cursor_in_full(make_app: Any, home: Home) -> None:
    """A row shows one line of a step; `o` shows all of it, wrapped (a stranger could not
    read a whole reply or result in the app)."""
    from textual.widgets import Static

    from tui_agent.ui.screens.dialogs import CallScreen

    _, shown = _completed_demo_run(home)
    read = next(s for s in shown["steps"] if s.get("tool") == "write_file" and s["kind"] == "tool")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.run_status == "completed", what="selection")
        timeline = app.query_one(Timeline)
        timeline.focus()
        await pilot.pause()
        while timeline.step_under_cursor() != read["seq"]:
            await pilot.press("up")
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, CallScreen), what="the step's screen")
        body = "\n".join(str(w.render()) for w in app.screen.query(Static))
        assert f"Step {read['seq']}" in body and "write_file" in body
        assert "Written by the tui-agent demo model" in body  # the end of a long argument
        assert read["result"] in body
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, what="back to the run")


@pytest.mark.both_stores
async def test_the_fork_form_follows_its_step_field_and_escape_writes_nothing(
    make_app: Any, home: Home
) -> None:
    """At 80x24: after the newest step nothing is asked again; an earlier step lists the
    write; a step the run does not have is refused in the form (no Fork), and escape
    closes it with nothing written."""
    _, shown = _completed_demo_run(home)
    write = next(s for s in shown["steps"] if s.get("tool") == "write_file" and s["kind"] == "tool")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.run_status == "completed", what="selection")
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, ForkScreen), what="the fork form")
        form = app.screen
        listed, go = form.query_one("#fork-again-list"), form.query_one("#fork-go", Button)
        await until(pilot, lambda: "none" in str(listed.render()), what="an empty list")
        assert not go.disabled and go.region.bottom <= 24  # the button is on screen
        form.query_one("#fork-step", Input).value = str(write["seq"] - 2)  # its reply
        await until(pilot, lambda: "write_file" in str(listed.render()), what="the write")
        error = form.query_one("#fork-error")
        form.query_one("#fork-step", Input).value = str(write["seq"] - 1)  # its approval
        await until(pilot, lambda: "is a decision" in str(error.render()), what="a refusal")
        assert go.disabled
        form.query_one("#fork-step", Input).value = "999"
        await until(pilot, lambda: "has steps 1 to" in str(error.render()), what="the refusal")
        assert go.disabled
        await pilot.press("enter")  # refused: nothing happens
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, what="the form to close")
    assert len(home.json("ls")) == 1


@pytest.mark.both_stores
async def test_g_plots_the_statistics_and_escape_goes_back(make_app: Any, home: Home) -> None:
    """The plots are drawn from the store's figures (the selected run's steps and tokens
    among them); the main keys rest while the screen is open."""
    from textual_plotext import PlotextPlot

    from tui_agent.ui.screens.stats import StatsScreen

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:  # an empty home first
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, StatsScreen), what="the statistics")
        caption = app.screen.query_one("#stats-run-caption")
        await until(pilot, lambda: "No run selected" in str(caption.render()), what="figures")
        days = str(app.screen.query_one("#stats-per-day-caption").render())
        assert "(the last 10 of 14 days)" in days, days  # all the room 80 columns have
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, what="the main screen")
    run_id, _ = _completed_demo_run(home)
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.run_status == "completed", what="selection")
        assert {"Fork", "Stats"} <= {c.title for c in app.get_system_commands(app.screen)}
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, StatsScreen), what="the statistics")
        screen = app.screen
        caption = screen.query_one("#stats-run-caption")
        await until(pilot, lambda: run_id[:8] in str(caption.render()), what="the figures")
        assert "1 final run" in str(screen.query_one("#stats-durations-caption").render())
        assert "done" in str(screen.query_one("#stats-per-day-caption").render())
        plots = list(screen.query(PlotextPlot))
        assert len(plots) == 4 and all("┤" in str(p.render()) for p in plots)
        assert "s" not in footer_keys(app) and "escape" in footer_keys(app)
        days = screen.query_one("#stats-per-day-caption")
        assert "of 14 days" not in str(days.render())  # all 14 fit at 120 columns
        await pilot.resize_terminal(80, 24)  # the plots follow the terminal's size
        await until(pilot, lambda: "(the last 10 of 14 days)" in str(days.render()), what="fit")
        await pilot.resize_terminal(120, 36)
        await until(pilot, lambda: "of 14 days" not in str(days.render()), what="all days")
        home.cli("prune", "--older-than", "0", check=True)  # from another terminal
        await pilot.press("r")
        await until(pilot, lambda: "is gone" in str(caption.render()), what="the run gone")
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, what="the main screen")
        assert "s" in footer_keys(app)


@pytest.mark.both_stores
async def test_runs_pruned_from_under_the_open_app_vanish_and_it_is_no_outage(
    make_app: Any, home: Home
) -> None:
    """Another terminal prunes the selected run and others shown: their rows go, the
    cursor lands on a run that exists, and the store is not reported as unreadable."""
    kept = home.start("wait here")
    home.wait_status(kept, "waiting_approval")
    done = []
    for n in range(2):
        run_id = home.start(f"done {n}", "--auto-approve", "write_local")
        home.wait_status(run_id, "completed")
        done.append(run_id)
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        table = app.query_one("#history-table")
        await until(pilot, lambda: table.row_count == 3, what="three rows")
        table.move_cursor(row=0)
        await until(pilot, lambda: app.selected == done[-1], what="the newest selected")
        notes: list[str] = []
        real_notify = app.notify

        def notify(message: str, **kwargs: Any) -> None:
            notes.append(f"{kwargs.get('severity', 'information')}: {message}")
            real_notify(message, **kwargs)

        app.notify = notify  # type: ignore[method-assign]
        pruned = home.json("prune", "--older-than", "0", "--status", "completed")
        assert pruned["runs"] == 2
        await until(pilot, lambda: table.row_count == 1, what="the pruned rows gone")
        await until(pilot, lambda: app.selected == kept, what="the cursor on the run left")
        await until(pilot, lambda: app.run_status == "waiting_approval", what="its view")
        await pilot.pause(0.5)
        assert not [n for n in notes if n.startswith("error")], notes
        assert "can be read again" not in " ".join(notes), notes
        assert "no run" not in str(app.query_one("#status-bar").render())


@pytest.mark.both_stores
async def test_m_sends_a_message_and_a_completed_run_continues_with_it(
    make_app: Any, home: Home
) -> None:
    """`m` opens a small dialog (an empty message stays in it, escape sends nothing);
    enter adds the message as a step, shown in the timeline, and the run goes on."""
    run_id, shown = _completed_demo_run(home)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.run_status == "completed", what="selection")
        assert "m" in footer_keys(app)
        assert "Message" in {c.title for c in app.get_system_commands(app.screen)}
        await pilot.press("m")
        await until(pilot, lambda: len(app.screen_stack) == 2, what="the message dialog")
        assert "continues with it" in str(app.screen.query_one("#say-dialog Static").render())
        await pilot.press("enter")  # empty: said in the dialog, which stays open
        await pilot.pause()
        assert "type a message" in str(app.screen.query_one("#say-error").render())
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, what="the dialog to close")
        assert len(home.show(run_id)["steps"]) == len(shown["steps"])  # nothing sent
        await pilot.press("m")
        await until(pilot, lambda: len(app.screen_stack) == 2, what="the message dialog")
        await pilot.press(*"mention the todo list")
        await pilot.press("enter")
        timeline = app.query_one(Timeline)

        def said() -> bool:
            rows = [str(node.label) for node in timeline.root.children]
            return any("you  says: mention the todo list" in row for row in rows)

        await until(pilot, said, what="the message in the timeline")
        await until(pilot, lambda: timeline.last_seq > len(shown["steps"]) + 1, what="replies")
        await until(pilot, lambda: app.run_status == "completed", what="completion again")
    view = home.wait_status(run_id, "completed")
    assert "mention the todo list" in view["result"]
    assert [s["text"] for s in view["steps"] if s["kind"] == "user"] == ["mention the todo list"]


@pytest.mark.both_stores
async def test_m_yields_the_full_footer_to_a_waiting_call_and_is_gone_once_cancelled(
    make_app: Any, home: Home
) -> None:
    """At 80 columns a call waiting for approval fills the footer with its decision keys:
    `m` leaves the footer but still works, and the palette lists it."""
    run_id = home.start("to cancel")
    home.wait_status(run_id, "waiting_approval")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.run_status == "waiting_approval", what="selection")
        assert "m" not in footer_keys(app) and "q" in footer_keys(app)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert titles.count("Message") == 1
        await pilot.press("m")
        await until(pilot, lambda: len(app.screen_stack) == 2, what="the message dialog")
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, what="the dialog to close")
        await pilot.resize_terminal(120, 36)
        await until(pilot, lambda: "m" in footer_keys(app), what="m back in the footer")
        home.cli("cancel", run_id, check=True)
        await until(pilot, lambda: app.run_status == "cancelled", what="the cancel")
        assert "m" not in footer_keys(app)
        await pilot.press("m")
        await pilot.pause(0.2)
        assert len(app.screen_stack) == 1


@pytest.mark.both_stores
@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_the_reply_shows_as_it_streams_then_gives_way_to_the_recorded_step(
    make_app: Any, home: Home, llm: ScriptedLLM, size: tuple[int, int]
) -> None:
    home.use_server(llm)
    text = "Reading the workspace first, then I will write a short and careful summary."
    llm.script = [Reply(text)]
    llm.chunk_delay_s = 0.12
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await start_from_form(pilot, "stream it")
        box = app.query_one("#run-live")
        timeline = app.query_one(Timeline)

        def partial() -> bool:
            shown = str(box.render())
            return bool(box.display) and "writing…" in shown and "Reading the" in shown

        await until(pilot, partial, what="the partial reply")
        assert timeline.last_seq == 0, "the reply was recorded before it was shown"
        assert "careful summary" not in str(box.render())
        assert box.region.bottom <= app.size.height - 1 and box.region.width > 20
        await until(pilot, lambda: app.run_status == "completed", what="completion")
        await until(pilot, lambda: not box.display, what="the live box to go")
        assert timeline.last_seq == 1
