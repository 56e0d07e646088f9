"""Where the stylesheets are: `styles/` beside the package (a checkout) or inside it (a wheel)."""

from __future__ import annotations

from pathlib import Path

SHEETS = ("app.tcss", "start_form.tcss", "dialogs.tcss", "fork_form.tcss", "stats.tcss")


def styles_dir() -> Path:
    here = Path(__file__).resolve().parent.parent  # tui_agent/
    for candidate in (here / "styles", here.parent / "styles"):
        if (candidate / "app.tcss").exists():
            return candidate
    raise FileNotFoundError("tui-agent's styles/ directory is missing from the installation")


def stylesheets() -> list[Path]:
    base = styles_dir()
    return [base / name for name in SHEETS]
