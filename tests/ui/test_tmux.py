"""End to end in a real terminal: tmux runs `tui-agent` against a real supervisor and the
scripted model server; we press `y`, quit with `q`, relaunch and read the screen."""

from __future__ import annotations

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
            f"cd {shlex.quote(str(home.workspace))} && env {env} TERM=xterm-256color "
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

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared; screen:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "app", *keys)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(f"tui-agent-test-{tmp_path.name}")
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
    screen = terminal.wait_for("Approval needed")
    assert "write_file" in screen and "[write_local]" in screen
    assert "supervisor: running" in terminal.wait_for("supervisor: running")
    terminal.keys("y")
    screen = terminal.wait_for("✓ completed")
    assert "Saved the notes for you." in screen
    assert (home.workspace / "notes.md").read_text() == "hi"
    terminal.keys("q")
    deadline = time.monotonic() + 10
    while not rc.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rc.read_text().strip() == "0"

    rc.unlink()
    terminal.tmux("kill-server")
    terminal.launch(home, rc)
    screen = terminal.wait_for("Save my notes")
    assert "Saved the notes for you." in terminal.wait_for("Saved the notes for you.")
    assert "✓ done" in screen or "done" in terminal.screen()
    terminal.keys("q")
