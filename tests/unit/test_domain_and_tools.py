"""Pure rules and the tools' confinement, with real files."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.values import a_run
from tui_agent.domain.models import (
    AgentState,
    Budget,
    Policy,
    Run,
    RunStatus,
    StatePatch,
    Usage,
    arguments_hash,
    spent_budget,
)
from tui_agent.domain.reason import run_reason
from tui_agent.tools.builtin import builtin_registry
from tui_agent.tools.registry import ToolContext, ToolInputError, parse_arguments
from tui_agent.tools.workspace import resolve_inside


def ctx(ws: Path) -> ToolContext:
    return ToolContext(
        workspace=ws, timeout_s=5, read_artifact=lambda _id: None, cancel=threading.Event()
    )


def test_state_patch_applies_and_validates() -> None:
    state = AgentState(plan=["a"], open_questions=["q1", "q2"])
    patch = StatePatch.parse(
        {
            "plan": ["b", "c"],
            "add_facts": ["f", {"key": "k", "value": 1}],
            "add_questions": ["q3"],
            "resolve_questions": ["q1"],
        }
    )
    new = patch.apply(state)
    assert new.plan == ["b", "c"]
    assert new.open_questions == ["q2", "q3"]
    assert new.known_facts[1] == {"key": "k", "value": 1, "source": "agent"}
    for bad in ({"plan": "x"}, {"nope": 1}, {"add_facts": [3]}, []):
        with pytest.raises(ValueError):
            StatePatch.parse(bad)


def test_budget_rules() -> None:
    b = Budget(max_steps=3, max_llm_tokens=100, max_wall_time_s=10)
    assert spent_budget(b, Usage(2, 99, 9.9)) is None
    assert spent_budget(b, Usage(3, 0, 0)) == "budget spent: steps 3 of 3"
    assert "tokens 100 of 100" in (spent_budget(b, Usage(0, 100, 0)) or "")
    assert "wall time" in (spent_budget(b, Usage(0, 0, 10)) or "")


def test_policy_and_argument_hash() -> None:
    p = Policy(always_allow=("write_file",))
    assert not p.needs_approval("write_file", "write_local")
    assert p.needs_approval("run_shell", "external_action")
    assert not p.needs_approval("read_file", "read_only")
    assert arguments_hash("t", {"a": 1, "b": 2}) == arguments_hash("t", {"b": 2, "a": 1})
    assert arguments_hash("t", {"a": 1}) != arguments_hash("t", {"a": 2})


def _run(status: RunStatus, **kw: object) -> Run:
    return a_run(status, **kw)


def test_reasons_come_from_stored_facts() -> None:
    assert run_reason(_run(RunStatus.RUNNING), now=5) is None
    lost = _run(RunStatus.RUNNING, lost_at=1.0)
    assert "executor lost since" in (run_reason(lost, now=5) or "")
    expired = _run(RunStatus.RUNNING, owner="o", lease_until=1.0)
    assert "lease expired" in (run_reason(expired, now=5) or "")
    retry = _run(
        RunStatus.RUNNING,
        owner="o",
        lease_until=99.0,
        retry_at=7.0,
        retry_attempt=2,
        retry_max=6,
        retry_error="HTTP 429: slow",
    )
    assert "retrying at" in (run_reason(retry, now=5) or "")
    assert "attempt 3 of 6" in (run_reason(retry, now=5) or "")
    paused = _run(RunStatus.PAUSED, pause_reason="budget spent: steps 3 of 3")
    assert run_reason(paused, now=0) == "budget spent: steps 3 of 3"
    assert run_reason(_run(RunStatus.COMPLETED), now=0) is None


def test_paths_cannot_escape_the_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", ws / "link.txt")
    os.symlink(tmp_path, ws / "linkdir")
    assert resolve_inside(ws, "a/b.txt") == (ws / "a/b.txt").resolve()
    assert resolve_inside(ws, str(ws / "x")) == (ws / "x").resolve()
    for bad in ("../secret.txt", "/etc/passwd", "link.txt", "linkdir/secret.txt", "a/../../x"):
        with pytest.raises(ToolInputError, match="outside the workspace"):
            resolve_inside(ws, bad)


def test_tools_refuse_escapes_and_a_deleted_workspace(tmp_path: Path) -> None:
    tools = builtin_registry()
    ws = tmp_path / "ws"
    ws.mkdir()
    write = tools.get("write_file")
    assert write is not None
    with pytest.raises(ToolInputError):
        write.run(ctx(ws), {"path": "../evil.txt", "content": "x"})
    assert not (tmp_path / "evil.txt").exists()
    write.run(ctx(ws), {"path": "sub/ok.txt", "content": "fine"})
    assert (ws / "sub/ok.txt").read_text() == "fine"
    os.rename(ws, tmp_path / "moved")
    with pytest.raises(ToolInputError, match="no longer exists"):
        tools.get("list_dir").run(ctx(ws), {"path": "."})  # type: ignore[union-attr]


def test_read_file_slices_and_run_shell_timeout(tmp_path: Path) -> None:
    tools = builtin_registry()
    (tmp_path / "f.txt").write_text("abcdefghij")
    read = tools.get("read_file")
    assert read is not None
    out = read.run(ctx(tmp_path), {"path": "f.txt", "offset": 2, "limit": 3}).text
    assert out.startswith("cde") and "continue with offset=5" in out
    shell = tools.get("run_shell")
    assert shell is not None
    c = ctx(tmp_path)
    c.timeout_s = 0.3
    out = shell.run(c, {"command": "sleep 5; echo late"}).text
    assert out.startswith("timed out after 0.3s") and "late" not in out
    assert shell.run(ctx(tmp_path), {"command": "echo hi; exit 3"}).text == "exit code 3\nhi\n"


def test_argument_validation_messages() -> None:
    read = builtin_registry().get("read_file")
    assert read is not None
    assert parse_arguments(read, '{"path": "a"}') == {"path": "a"}
    for raw, text in [
        ("{", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"path": 1}', "must be of type string"),
        ('{"path": "a", "x": 1}', "unknown arguments"),
        ('{"path": "a", "offset": -1}', "at least 0"),
        ('{"path": "a", "offset": true}', "must be of type integer"),
    ]:
        with pytest.raises(ToolInputError, match=text):
            parse_arguments(read, raw)


def test_file_tools_never_reach_tui_agents_own_data(tmp_path: Path) -> None:
    from tui_agent.tools.registry import ToolInputError
    from tui_agent.tools.workspace import resolve_inside

    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "api-token").write_text("secret")
    assert resolve_inside(tmp_path, "home2", (home,)) == tmp_path / "home2"
    for path in ("home", "home/api-token", "home/logs", "./home/../home/api-token"):
        with pytest.raises(ToolInputError, match="own data"):
            resolve_inside(tmp_path, path, (home,))


def test_a_workspace_inside_the_home_reaches_only_itself(tmp_path: Path) -> None:
    from tui_agent.tools.registry import ToolInputError
    from tui_agent.tools.workspace import resolve_inside

    home = tmp_path / "home"
    demo = home / "demo-workspace"
    demo.mkdir(parents=True)
    (home / "api-token").write_text("secret")
    assert resolve_inside(demo, "notes.md", (home,)) == demo / "notes.md"
    with pytest.raises(ToolInputError, match="outside the workspace"):
        resolve_inside(demo, "../api-token", (home,))
