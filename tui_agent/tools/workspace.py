"""Confinement: every path a tool touches must resolve inside the run's workspace."""

from __future__ import annotations

import os
from pathlib import Path

from tui_agent.tools.registry import ToolInputError


def resolve_inside(workspace: Path, path: str, private: tuple[Path, ...] = ()) -> Path:
    """The real path of `path` within `workspace`; ToolInputError if it escapes, or if it
    is tui-agent's own data (`private`: its home, its database), wherever that is.

    Symlinks are resolved first, so a link pointing outside is refused like `..` is.
    """
    if not workspace.is_dir():
        raise ToolInputError(f"the workspace {workspace} no longer exists")
    if "\x00" in path:
        raise ToolInputError("path contains a NUL byte")
    root = Path(os.path.realpath(workspace))
    candidate = Path(os.path.realpath(root / path))
    if candidate != root and root not in candidate.parents:
        raise ToolInputError(
            f"path {path!r} is outside the workspace; only paths inside {root} are allowed"
        )
    for hidden in private:
        real = Path(os.path.realpath(hidden))
        if real in root.parents:
            continue  # a workspace inside it (the demo's own folder): only that is reachable
        if candidate == real or real in candidate.parents:
            raise ToolInputError(f"path {path!r} is tui-agent's own data; it is not for tools")
    return candidate
