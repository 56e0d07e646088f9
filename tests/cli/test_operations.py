"""Operations on the store from the CLI: export, prune, stats, on both engines."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Home, wait_for

pytestmark = pytest.mark.both_stores

DAY = 86400


def _completed(home: Home) -> str:
    run_id = home.start("summarise the workspace", "--auto-approve", "write_local")
    home.wait_status(run_id, "completed")
    return run_id


def _age(home: Home, run_id: str, days: float) -> None:
    home.execute(
        "UPDATE runs SET updated_at = updated_at - ?, created_at = created_at - ? WHERE id = ?",
        (days * DAY, days * DAY, run_id),
    )


def test_export_md_is_a_readable_transcript_and_json_is_show(home: Home) -> None:
    run_id = home.start("summarise the workspace")
    home.wait_status(run_id, "waiting_approval")
    home.cli("approve", run_id, check=True)
    home.wait_status(run_id, "completed")
    text = home.cli("export", run_id[:8], check=True).stdout
    shown = home.json("show", run_id)
    assert text.startswith(f"# Run {run_id[:8]}: summarise the workspace")
    assert "**Status:** completed" in text and "## Goal" in text and "## Result" in text
    for step in shown["steps"]:
        assert f"### {step['seq']}. " in text
        if step["kind"] == "tool":
            assert f"`{step['tool']}`" in text
        if step["kind"] == "approval":
            assert f"### {step['seq']}. Approved: `write_file` by " in text
    assert "`None`" not in text
    assert "| `write_file` | write_local | approved |" in text  # who, when and why follow
    assert f"{shown['usage']['steps']} of {shown['budget']['max_steps']} steps" in text
    assert "## History" in text
    exported = json.loads(home.cli("export", run_id, "--format", "json", check=True).stdout)
    assert exported == home.json("show", run_id)


def test_prune_deletes_only_old_final_runs_with_everything_of_theirs(home: Home) -> None:
    old = _completed(home)
    recent = _completed(home)
    waiting = home.start("wait for me")
    home.wait_status(waiting, "waiting_approval")
    _age(home, old, 10)
    _age(home, waiting, 10)  # old, but not final: never pruned
    steps_of_old = len(home.json("show", old)["steps"])
    dry = home.json("prune", "--older-than", "5", "--dry-run")
    assert dry["runs"] == 1 and dry["steps"] == steps_of_old and dry["bytes_freed"] > 0
    assert len(home.json("ls")) == 3  # a dry run deletes nothing
    said = home.cli("prune", "--older-than", "5", "--dry-run", check=True).stdout
    assert said.startswith("would delete 1 run(s)") and "about " in said, said  # an estimate
    done = home.json("prune", "--older-than", "5")
    assert done["runs"] == 1 and done["steps"] == steps_of_old and done["bytes_freed"] >= 0
    ids = {r["id"] for r in home.json("ls")}
    assert ids == {recent, waiting}
    for table in ("steps", "approvals", "artifacts", "events", "deliveries"):
        assert home.query(f"SELECT count(*) FROM {table} WHERE run_id = ?", (old,))[0][0] == 0
    assert home.json("prune", "--older-than", "5")["runs"] == 0
    only_failed = home.json("prune", "--older-than", "0", "--status", "failed")
    assert only_failed["runs"] == 0 and len(home.json("ls")) == 2


def test_prune_refuses_what_it_cannot_do_in_one_line(home: Home) -> None:
    _completed(home)
    for args, said in (
        ((), "--older-than"),
        (("--older-than", "-1"), "0 or more"),
        (("--older-than", "soon"), "number of days"),
        (("--older-than", "1", "--status", "queued"), "invalid choice"),
    ):
        proc = home.cli("prune", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert said in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert len(home.json("ls")) == 1


def test_retention_days_is_the_default_age(home: Home) -> None:
    old = _completed(home)
    _age(home, old, 3)
    home.configure((home.path / "config.toml").read_text() + "retention_days = 2\n")
    assert home.json("prune")["runs"] == 1


def test_the_supervisors_daily_pass_prunes_by_retention_days(home: Home) -> None:
    """With `retention_days` set the supervisor prunes by itself, first
    `maintenance_delay_s` after it starts: old final runs go, a waiting one never."""
    old = _completed(home)
    waiting = home.start("wait for me")
    home.wait_status(waiting, "waiting_approval")
    _age(home, old, 3)
    _age(home, waiting, 3)
    home.cli("supervisor", "stop", timeout=30)
    home.configure(
        (home.path / "config.toml").read_text() + "retention_days = 2\nmaintenance_delay_s = 0.5\n"
    )
    home.cli("supervisor", "start", timeout=30)
    wait_for(lambda: old not in {r["id"] for r in home.json("ls")}, 20, "the daily pass")
    assert {r["id"] for r in home.json("ls")} == {waiting}
    assert home.query("SELECT count(*) FROM steps WHERE run_id = ?", (old,))[0][0] == 0
    assert "retention: pruned 1 run(s)" in (home.path / "logs" / "supervisor.log").read_text()


def test_stats_counts_what_happened(home: Home) -> None:
    _completed(home)
    waiting = home.start("wait")
    home.wait_status(waiting, "waiting_approval")
    stats = home.json("stats")
    assert stats["runs"] == {"completed": 1, "waiting_approval": 1}
    assert stats["steps"]["llm"] >= 4 and stats["steps"]["tool"] >= 3
    assert stats["llm_tokens"] > 0 and stats["retries"] == 0
    assert stats["approvals"]["pending"] == 1
    for key in ("run_duration_s", "llm_latency_s"):
        assert set(stats[key]) == {"n", "p50", "p95", "max"}
    assert stats["llm_latency_s"]["p50"] is not None
    assert home.json("stats", "--since", "1") == stats  # all of it is from today
    assert home.json("stats", "--since", "0")["runs"] == {}  # nothing is newer than now
    text = home.cli("stats", check=True).stdout
    assert "1 completed" in text and "1 pending" in text


def _rows(home: Home, run_id: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row the store holds of a run, as plain tuples (compared byte for byte)."""
    out = {}
    for table, key in (
        ("runs", "id"),
        ("steps", "run_id"),
        ("approvals", "run_id"),
        ("artifacts", "run_id"),
        ("events", "run_id"),
    ):
        rows = home.query(f"SELECT * FROM {table} WHERE {key} = ? ORDER BY 1, 2", (run_id,))
        out[table] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
    return out


def test_fork_copies_steps_and_state_and_never_touches_the_original(home: Home) -> None:
    original = home.start("summarise the workspace")
    home.wait_status(original, "waiting_approval")
    home.cli("approve", original, check=True)
    home.wait_status(original, "completed")
    shown = home.json("show", original)
    write = next(s for s in shown["steps"] if s["kind"] == "tool" and s["tool"] == "write_file")
    at = write["seq"] - 2  # before the write was asked for
    before = _rows(home, original)
    fork = home.json("fork", original[:8], "--from-step", str(at))
    assert _rows(home, original) == before  # byte for byte
    assert fork["id"] != original and fork["forked_from"] == {"run": original, "step": at}
    assert [s["seq"] for s in fork["steps"]] == list(range(1, at + 1))
    for mine, theirs in zip(fork["steps"], shown["steps"][:at], strict=True):
        assert {k: v for k, v in mine.items() if k != "artifact_id"} == {
            k: v for k, v in theirs.items() if k != "artifact_id"
        }
    # Never copied: any approval it has is its own, asked since (the running supervisor
    # may already have taken the fork up when `fork --json` reads it back).
    assert all(a["status"] == "pending" for a in fork["approvals"])
    assert fork["state"]["plan"] == shown["state"]["plan"]  # set by update_state at step 2
    assert fork["usage"]["steps"] == at and fork["usage"]["llm_tokens"] == sum(
        s.get("tokens", 0) for s in shown["steps"][:at]
    )
    again = fork["will_ask_again"]
    assert [a["tool"] for a in again] == ["write_file"] and again[0]["risk"] == "write_local"
    assert again[0]["arguments"] == write["arguments"]
    home.wait_status(fork["id"], "waiting_approval")  # asked again: nothing was copied
    assert home.json("show", fork["id"])["forked_from"] == {"run": original, "step": at}
    assert shown["forked_from"] is None
    said = f"forked from run {original[:8]} at step {at}"
    assert said in home.cli("show", fork["id"], check=True).stdout
    exported = home.cli("export", fork["id"], check=True).stdout
    assert f"**Forked from:** run `{original}` at step {at}" in exported
    home.cli("approve", fork["id"], check=True)
    home.wait_status(fork["id"], "completed")
    assert _rows(home, original) == before
    second = home.json("fork", fork["id"], "--from-step", "2", "--goal", "a new goal")
    assert second["goal"] == "a new goal" and len(second["steps"]) == 2
    home.wait_status(second["id"], "waiting_approval", "completed")


def test_fork_refuses_steps_it_does_not_have_in_one_line(home: Home) -> None:
    run_id = _completed(home)
    last = len(home.json("show", run_id)["steps"])
    copied = sum(s["kind"] in ("llm", "tool") for s in home.json("show", run_id)["steps"][:5])
    for args, said in (
        (("--from-step", str(last + 1)), f"has steps 1 to {last}"),
        (("--from-step", "0"), "greater than 0"),
        (("--from-step", "1", "--goal", "  "), "--goal must not be empty"),
        # A budget the copied steps have spent: the fork would pause at once (a walk).
        (("--from-step", "5", "--max-steps", str(copied)), f"give it more than {copied} steps"),
        (("--from-step", "5", "--max-tokens", "1"), "tokens (--max-tokens"),
    ):
        proc = home.cli("fork", run_id, *args)
        assert proc.returncode == 2 and said in proc.stderr, (args, proc.stderr)
    assert home.cli("fork", "nosuchrun", "--from-step", "1").returncode == 3
    assert len(home.json("ls")) == 1


def test_fork_refuses_a_decision_as_its_last_step(home: Home) -> None:
    run_id = home.start("summarise the workspace")
    home.wait_status(run_id, "waiting_approval")
    home.cli("approve", run_id, check=True)
    home.wait_status(run_id, "completed")
    decision = next(s for s in home.json("show", run_id)["steps"] if s["kind"] == "approval")
    assert decision["tool"] == "write_file"
    proc = home.cli("fork", run_id, "--from-step", str(decision["seq"]))
    assert proc.returncode == 2 and "is a decision" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert len(home.json("ls")) == 1


def test_a_fork_of_a_waiting_run_lists_the_call_it_waits_for(home: Home) -> None:
    """The original has not recorded the call yet (it waits for its approval): the fork
    copies the reply that asked for it, so it is asked again, and listed as such."""
    waiting = home.start("summarise the workspace")
    home.wait_status(waiting, "waiting_approval")
    last = home.json("show", waiting)["steps"][-1]
    assert last["kind"] == "llm"
    fork = home.json("fork", waiting, "--from-step", str(last["seq"]))
    assert [(a["seq"], a["tool"]) for a in fork["will_ask_again"]] == [(last["seq"], "write_file")]
    assert fork["will_ask_again"][0]["arguments"] == json.loads(last["tool_calls"][0]["arguments"])
    home.wait_status(fork["id"], "waiting_approval")
