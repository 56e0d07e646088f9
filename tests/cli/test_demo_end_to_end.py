"""The demo model end to end through the real CLI, supervisor and executor."""

from __future__ import annotations

import stat

import pytest

from tests.conftest import Home

pytestmark = pytest.mark.both_stores


def test_demo_run_plans_reads_asks_approval_and_finishes(home: Home) -> None:
    (home.workspace / "notes.txt").write_text("hello from the workspace\n")
    proc = home.cli("run", "Summarise my notes", "--workspace", str(home.workspace), "--wait")
    assert proc.returncode == 4, proc.stderr  # waits for a person
    run_id = proc.stdout.splitlines()[0]
    view = home.show(run_id)
    assert view["status"] == "waiting_approval"
    assert view["model"] == "demo"
    pending = view["pending_approvals"][0]
    assert pending["tool"] == "write_file" and pending["risk"] == "write_local"
    assert "waiting for approval: write_file" in view["reason"]
    assert view["state"]["plan"][0] == "List the workspace"
    assert [s["tool"] for s in view["steps"] if s["kind"] == "tool"] == [
        "update_state",
        "list_dir",
        "read_file",
    ]

    approved = home.json("approve", run_id[:6])
    assert approved["status"] == "approved"
    done = home.wait_status(run_id, "completed")
    assert "wrote tui-agent-demo-summary.md" in done["result"]
    assert (home.workspace / "tui-agent-demo-summary.md").exists()
    assert done["usage"]["steps"] == len([s for s in done["steps"] if s["kind"] != "approval"])
    assert done["usage"]["llm_tokens"] > 0
    assert done["approvals"][0]["decided_by"]


def test_demo_denied_write_is_told_to_the_model_and_run_goes_on(home: Home) -> None:
    run_id = home.start("Summarise")
    home.wait_status(run_id, "waiting_approval")
    denied = home.json("deny", run_id, "--reason", "not now")
    assert denied["status"] == "denied" and denied["decision_reason"] == "not now"
    done = home.wait_status(run_id, "completed")
    write = next(s for s in done["steps"] if s["kind"] == "tool" and s["tool"] == "write_file")
    assert write["status"] == "denied"
    assert "not now" in write["result"]
    assert "not written" in done["result"]
    assert not (home.workspace / "tui-agent-demo-summary.md").exists()


def test_home_is_private(home: Home) -> None:
    run_id = home.start("x")
    home.wait_status(run_id, "waiting_approval")
    assert stat.S_IMODE(home.path.stat().st_mode) == 0o700
    for path in home.path.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        assert mode == expected, f"{path} is {oct(mode)}"


def test_a_demo_run_without_a_workspace_never_writes_into_the_current_directory(
    home: Home,
) -> None:
    """The quick start's first run: no --workspace, the demo model. It works in its own
    scratch folder in the home, and the directory the user stands in stays untouched."""
    before = sorted(p.name for p in home.workspace.iterdir())
    proc = home.cli("run", "Summarise", "--wait")  # cwd is home.workspace
    assert proc.returncode == 4, proc.stderr
    run_id = proc.stdout.splitlines()[0]
    home.json("approve", run_id)
    done = home.wait_status(run_id, "completed")
    demo = home.path / "demo-workspace"
    assert done["workspace"] == str(demo.resolve())
    assert (demo / "tui-agent-demo-summary.md").exists()
    assert sorted(p.name for p in home.workspace.iterdir()) == before
