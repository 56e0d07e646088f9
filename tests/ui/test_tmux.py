"""End to end in a real terminal: tmux runs `tui-agent` against a real supervisor and the
scripted model server; we press `y`, quit with `q`, relaunch and read the screen."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import Home
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tests.terminal import Terminal, needs_tmux

pytestmark = [pytest.mark.slow, needs_tmux, pytest.mark.both_stores]


def test_approve_quit_and_relaunch_in_a_real_terminal(
    home: Home, llm: ScriptedLLM, terminal: Terminal, tmp_path: Path
) -> None:
    home.use_server(llm)
    llm.script = [
        Reply("I'll save the notes.", [call("write_file", {"path": "notes.md", "content": "hi"})]),
        Reply("Saved the notes for you."),
    ]
    run_id = home.start("Save my notes")
    home.wait_status(run_id, "waiting_approval")

    rc = tmp_path / "rc"
    terminal.launch(home, rc)
    terminal.wait_for("Approval needed", "write_file", "[write_local]", "supervisor: running")
    terminal.keys("y")
    terminal.wait_for("✓ completed", "Saved the notes for you.")
    terminal.wait_gone("Approve")  # the footer offers only what applies now
    view = home.show(run_id)
    assert (home.workspace / "notes.md").exists(), (view["steps"], view["approvals"])
    assert (home.workspace / "notes.md").read_text() == "hi"
    terminal.keys("q")
    deadline = time.monotonic() + 10
    while not rc.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rc.read_text().strip() == "0"

    rc.unlink()
    terminal.tmux("kill-server")
    terminal.launch(home, rc)
    terminal.wait_for("Save my notes", "Saved the notes for you.", "✓ done")
    terminal.keys("q")


def test_the_quick_start_demo_never_writes_into_the_directory_it_was_started_from(
    home: Home, terminal: Terminal, tmp_path: Path
) -> None:
    """`tui-agent` with no key, started in a checkout: `s`, a goal, `enter`, `y`. The demo
    works in its own scratch folder, the form says where, and the checkout is untouched."""
    (home.workspace / "README.md").write_text("my project\n")
    before = sorted(p.name for p in home.workspace.iterdir())
    terminal.launch(home, tmp_path / "rc", size=(80, 24))
    terminal.wait_for("supervisor")
    terminal.keys("s")
    screen = terminal.wait_for("scratch folder")
    flat = "".join(ch for ch in screen if ch not in " \n█")  # the note wraps the path
    assert "home/demo-workspace" in flat and f"{home.workspace}".replace(" ", "") not in flat
    terminal.keys("first run")
    terminal.keys("Enter")
    terminal.wait_for("Approval needed")
    terminal.keys("y")
    terminal.wait_for("completed")
    assert sorted(p.name for p in home.workspace.iterdir()) == before
    assert (home.path / "demo-workspace" / "tui-agent-demo-summary.md").exists()
    terminal.keys("q")
