"""A real terminal for end-to-end tests: tmux runs `tui-agent`, we send keys and read the
screen. Each test gets its own tmux server (a private socket)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Home

# In CI a missing tmux is a failure (CI installs it), never a silent skip.
needs_tmux = pytest.mark.skipif(
    shutil.which("tmux") is None and not os.environ.get("CI"), reason="tmux is not installed"
)


class Terminal:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False
        ).stdout

    def launch(self, home: Home, rc_file: Path, size: tuple[int, int] = (120, 40)) -> None:
        keep = (
            "TUI_AGENT_HOME",
            "TUI_AGENT_DEMO_DELAY",
            "OPENAI_BASE_URL",
            "OPENAI_API_KEY",
            "TUI_AGENT_MODEL",
            "PATH",
            "HOME",
            "PYTHONPATH",
            "TUI_AGENT_GUARD_DB",
            "TUI_AGENT_GUARD_DB_LOG",
            "TUI_AGENT_DB_URL",
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
            str(size[0]),
            "-y",
            str(size[1]),
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

    def pane_pid(self) -> int:
        """The pid of the process the pane runs (the shell that runs tui-agent)."""
        return int(self.tmux("display-message", "-p", "-t", "app", "#{pane_pid}").strip())
