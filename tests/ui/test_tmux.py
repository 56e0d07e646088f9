"""End to end in a real terminal: tmux runs `tui-agent` against a real supervisor and the
scripted model server; we press `y`, quit with `q`, relaunch and read the screen."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Home
from tests.fakes.llm_server import Reply, ScriptedLLM, call

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Terminal:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False
        ).stdout

    def launch(self, home: Home, rc_file: Path) -> None:
        keep = (
            "TUI_AGENT_HOME",
            "TUI_AGENT_DEMO_DELAY",
            "OPENAI_BASE_URL",
            "OPENAI_API_KEY",
            "TUI_AGENT_MODEL",
            "PATH",
            "HOME",
            "PYTHONPATH",
        )
        env = " ".join(f"{k}={shlex.quote(home.env[k])}" for k in keep if k in home.env)
        cmd = (
            # pytest exports COLUMNS/LINES (80x24), which Textual would obey over the pane's size
            f"cd {shlex.quote(str(home.workspace))} && env -u COLUMNS -u LINES {env} "
            "TERM=xterm-256color "
            f"{shlex.quote(sys.executable)} -m tui_agent; echo $? > {shlex.quote(str(rc_file))}"
        )
        self.tmux(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "app",
            "-x",
            "120",
            "-y",
            "40",
            "-e",
            "COLORTERM=truecolor",
            cmd,
        )

    def screen(self) -> str:
        return self.tmux("capture-pane", "-t", "app", "-p")

    def wait_for(self, *texts: str, timeout: float = 20) -> str:
        """The first screen showing every one of `texts`: a frame can be captured half-drawn,
        and a run's status and its last step may land in consecutive frames."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(text in screen for text in texts):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{texts!r} never appeared together; screen:\n{self.screen()}")

    def wait_gone(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text not in screen:
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never went away; screen:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "app", *keys)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    # Unique per test process: two test sessions on one machine must not share a tmux server.
    term = Terminal(f"tui-agent-test-{os.getpid()}-{tmp_path.name}")
    yield term
    term.tmux("kill-server")


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
