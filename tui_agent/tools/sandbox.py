"""Where `run_shell` runs: a bubblewrap sandbox that sees the workspace read-write, the system
read-only, neither tui-agent's home nor the user's home, and (by default) no network.

The sandbox is also what makes a command die with its executor: bubblewrap's
`--die-with-parent` and its own PID namespace take every process of the command with them.
When the sandbox cannot be set up, the call is refused with the reason; a command never runs
unconfined unless the run was started with `--sandbox none`.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tui_agent.domain.models import SANDBOX_MODES

BWRAP = "bwrap"
# Directories a command may need to read; each is bound read-only when it exists.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/var")


class SandboxUnavailable(Exception):
    """The sandbox cannot be set up here; the message says why and what to do."""


@functools.lru_cache(maxsize=1)
def _bwrap_problem() -> str | None:
    """None when bubblewrap works on this machine, else why not (asked once per process)."""
    path = shutil.which(BWRAP)
    if path is None:
        return (
            "run_shell needs bubblewrap (bwrap) to confine commands, and it is not installed; "
            "install it (e.g. `apt-get install bubblewrap`) or start the run with --sandbox none"
        )
    try:
        probe = subprocess.run(
            [path, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap cannot start here: {exc}"
    if probe.returncode != 0:
        detail = probe.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"bubblewrap cannot set up a sandbox here: {detail[-1] if detail else 'failed'}"
    return None


def sandbox_argv(
    command: str,
    *,
    mode: str,
    workspace: Path,
    private: Sequence[Path] = (),
) -> list[str]:
    """The argv that runs `command` with `sh -c` in the workspace, confined as `mode` says.

    `private` are paths the command must never see (tui-agent's home, its database): each is
    hidden behind an empty tmpfs (directories) or /dev/null (files).
    """
    if mode not in SANDBOX_MODES:
        raise SandboxUnavailable(f"unknown sandbox mode {mode!r}")
    shell = ["sh", "-c", command]
    if mode == "none":
        return shell
    problem = _bwrap_problem()
    if problem:
        raise SandboxUnavailable(problem)
    ws = str(workspace)
    argv = [BWRAP, "--die-with-parent", "--unshare-all", "--new-session"]
    if mode == "workspace-net":
        argv.append("--share-net")
    for directory in _SYSTEM:
        if os.path.isdir(directory) and not os.path.islink(directory):
            argv += ["--ro-bind", directory, directory]
        elif os.path.islink(directory):
            argv += ["--symlink", os.readlink(directory), directory]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run"]
    # The user's home and every private path are hidden even when the system dirs hold them.
    hidden_dirs = _hidden_dirs(private)
    for hidden in hidden_dirs:
        argv += ["--tmpfs", hidden]
    for path in private:  # a database kept outside the hidden dirs is emptied in place
        if path.is_file() and not any(_inside(path, Path(d)) for d in hidden_dirs):
            argv += ["--ro-bind", "/dev/null", str(path)]
    argv += ["--bind", ws, ws]
    # The workspace bind brings back whatever private path lies inside it (a run started in
    # ~ holds ~/.local/share/tui-agent): hide those again, on top of the bind.
    root = Path(os.path.realpath(ws))
    rehidden: list[Path] = []
    for path in sorted(private, key=lambda p: len(str(p))):
        real = Path(os.path.realpath(path))
        if real == root or root not in real.parents:
            continue
        if any(_inside(real, d) for d in rehidden):
            continue  # already under an empty tmpfs
        if real.is_dir():
            argv += ["--tmpfs", str(real)]
            rehidden.append(real)
        elif real.is_file():
            argv += ["--ro-bind", "/dev/null", str(real)]
    argv += ["--chdir", ws, "--setenv", "HOME", ws, "--"]
    return argv + shell


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _hidden_dirs(private: Sequence[Path]) -> list[str]:
    homes = {os.path.expanduser("~"), "/root", "/home"}
    dirs = {str(p) for p in private if p.is_dir()} | {h for h in homes if os.path.isdir(h)}
    return sorted(dirs, key=len)  # parents first, so a nested one is mounted on top
