#!/usr/bin/env python3
"""The two commands of the README, needing nothing but Python 3.11+.

    python3 dev.py app    install into .venv (once) and open the app
    python3 dev.py test   install into .venv (once) and run the whole test suite

Extra arguments go to the app or to pytest.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def _install() -> None:
    if not (BIN / "python").exists():
        print("creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = VENV / ".tui-agent-installed"
    if stamp.exists() and stamp.read_text() == digest:
        return
    print("installing tui-agent and its dependencies into .venv (about a minute) …", flush=True)
    _pip_with_progress(
        [
            str(BIN / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-e",
            f"{ROOT}[test]",
        ]
    )
    stamp.write_text(digest)


def _pip_with_progress(argv: list[str]) -> None:
    """Run pip, showing one short line per package instead of silence or pip's full log.

    pip's own output is kept and shown whole if it fails."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tty = sys.stdout.isatty()  # on a terminal one line is rewritten in place
    started = time.monotonic()
    seen: list[str] = []
    count = 0
    for line in proc.stdout:
        seen.append(line)
        text = line.strip()
        if text.startswith("Collecting "):
            count += 1
            name = text.split()[1]
            status = f"  resolving {count:3d}: {name}"
        elif text.startswith("Installing collected packages"):
            status = f"  installing {count} packages …"
        elif text.startswith("Successfully installed"):
            took = time.monotonic() - started
            status = f"  installed {len(text.split()) - 2} packages in {took:.0f} s"
        else:
            continue
        if tty:
            print(f"\r\033[K{status[:78]}", end="", flush=True)
        elif not text.startswith("Collecting "):  # a log (CI) gets the two lines that matter
            print(status, flush=True)
    code = proc.wait()
    if tty:
        print(flush=True)
    if code != 0:
        sys.stdout.write("".join(seen))
        raise SystemExit(f"pip failed (exit {code}); its output is above")


def _compile_sources() -> None:
    """Write the package's bytecode, which the editable install does not.

    With PYTHONDONTWRITEBYTECODE set (common in containers) every process would otherwise
    compile tui_agent again: about 50 ms for each supervisor, executor and CLI start."""
    cfg = (VENV / "pyvenv.cfg").read_text()
    mine = ".".join(map(str, sys.version_info[:2]))
    if any(line.replace(" ", "").startswith(f"version={mine}.") for line in cfg.splitlines()):
        compileall.compile_dir(str(ROOT / "tui_agent"), quiet=2)  # a speed-up only: never noisy


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("app", "test"):
        print(__doc__)
        return 2
    _install()
    _compile_sources()
    if argv[0] == "app":
        return subprocess.call([str(BIN / "tui-agent"), *argv[1:]])
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    # pytest takes this process's place, so a signal (CI's time limit, Ctrl+C) reaches it.
    os.chdir(ROOT)
    os.execve(BIN / "python", [str(BIN / "python"), "-m", "pytest", *argv[1:]], env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
