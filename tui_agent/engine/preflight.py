"""Whether a run can go on, asked before it does: by `resume`, `resolve` and `fork` (which
then write nothing) and by the executor each time it starts or recovers a run (which then
pauses it with the answer as its reason). A run that cannot go on waits for a person; it
must not fail step after step, nor kill executor after executor."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from tui_agent.domain.models import Run
from tui_agent.llm.demo import DEMO_MODEL


def run_obstacle(
    run: Run, *, env: Mapping[str, str] | None = None, workspace: bool = True
) -> str | None:
    """Why `run` cannot go on here, in words fit for its reason; None when it can.

    `env` is the environment its model client would be made in (the executor's own);
    None skips that check (a person's shell is not the supervisor's environment).
    `workspace` False skips the workspace (on a shared store another machine may be the
    one to execute the run, where its path is what counts)."""
    if run.policy.problem:
        return (
            f"its recorded policy cannot be read ({run.policy.problem}); fork the run to "
            "give it a new one"
        )
    if workspace:
        problem = _workspace_problem(Path(run.workspace))
        if problem:
            return problem
    model = run.model.strip()
    if not model or any(c.isspace() for c in model):
        return f"its model name {run.model[:40]!r} is not valid; fork the run with --model NAME"
    if model == DEMO_MODEL:
        return None
    if run.base_url is not None and not _is_http_url(run.base_url):
        # (not quoted: a URL may carry a password)
        return "its recorded base URL is not an http(s) URL; fork the run with OPENAI_BASE_URL set"
    if env is not None and not (
        run.base_url or env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_KEY")
    ):
        return (
            f"model {model} cannot be reached: the supervisor's environment sets neither "
            "OPENAI_API_KEY nor OPENAI_BASE_URL; set one, restart the supervisor "
            "(`tui-agent supervisor stop`), then resume"
        )
    return None


def _workspace_problem(path: Path) -> str | None:
    try:
        if path.is_dir():
            return None
        gone = not path.exists()
    except OSError as exc:
        return f"workspace {path} cannot be reached ({exc.strerror or exc})"
    what = "no longer exists" if gone else "is no longer a directory"
    return f"workspace {path} {what}; recreate it and resume, or fork the run with --workspace DIR"


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url.strip())
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False
