"""`tui-agent say RUN TEXT`: a person's message as a step, through the real CLI and a real
supervisor. A completed run continues with it; a paused one keeps it until resumed; bad
input and runs that take no message say so in one line, and nothing is written."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Home
from tests.fakes.llm_server import Fault, Reply, ScriptedLLM, call

pytestmark = [pytest.mark.slow, pytest.mark.both_stores]


def _messages(view: dict[str, object]) -> list[dict[str, object]]:
    return [s for s in view["steps"] if s["kind"] == "user"]  # type: ignore[index, union-attr]


def _step_count(home: Home, run_id: str) -> int:
    return int(home.query("SELECT count(*) FROM steps WHERE run_id = ?", (run_id,))[0][0])


def test_a_completed_run_continues_with_the_message(home: Home) -> None:
    run_id = home.start("summarise", "--auto-approve", "write_local")
    first = home.wait_status(run_id, "completed")
    said = home.cli("say", run_id[:8], "Please also mention the todo list")
    assert said.returncode == 0, said.stderr
    assert "message added; the completed run continues with it" in said.stdout
    view = home.wait_status(run_id, "completed")
    (message,) = _messages(view)
    assert message["text"] == "Please also mention the todo list"
    assert message["seq"] == len(first["steps"]) + 1
    assert message["by"]
    # The demo noted it, answered it, and completed again; budgets went on from their usage.
    assert "Please also mention the todo list" in view["result"]
    facts = [f["value"] for f in view["state"]["known_facts"] if isinstance(f, dict)]
    assert "Please also mention the todo list" in facts
    assert view["usage"]["steps"] == first["usage"]["steps"] + 3  # note, its result, answer
    assert view["usage"]["llm_tokens"] > first["usage"]["llm_tokens"]
    assert [s["seq"] for s in view["steps"]] == list(range(1, len(view["steps"]) + 1))
    md = home.cli("export", run_id, "--format", "md", check=True).stdout
    assert f"### {message['seq']}. Message from" in md
    assert "Please also mention the todo list" in md
    exported = json.loads(home.cli("export", run_id, "--format", "json", check=True).stdout)
    assert _messages(exported) == [message]
    shown = home.cli("show", run_id, check=True).stdout
    assert f"#{message['seq']:<4} you   Please also mention the todo list" in shown


def test_a_paused_run_keeps_the_message_until_it_is_resumed(home: Home) -> None:
    run_id = home.start("summarise", "--auto-approve", "write_local", "--max-steps", "2")
    home.wait_status(run_id, "paused")
    said = home.cli("say", run_id, "keep it short")
    assert said.returncode == 0, said.stderr
    assert "stays paused" in said.stdout and "resume" in said.stdout
    assert home.show(run_id)["status"] == "paused"
    home.cli("resume", run_id, "--max-steps", "30", check=True)
    view = home.wait_status(run_id, "completed")
    assert "keep it short" in view["result"]
    assert len(_messages(view)) == 1


def test_say_json_prints_the_run_and_the_message_seq(home: Home) -> None:
    run_id = home.start("summarise", "--auto-approve", "write_local")
    home.wait_status(run_id, "completed")
    data = home.json("say", run_id, "one more")
    assert data["id"] == run_id and data["status"] in ("queued", "running", "completed")
    assert data["message_seq"] == _messages(data)[0]["seq"]
    home.wait_status(run_id, "completed")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the message must not be empty"),
        ("   \n ", "the message must not be empty"),
        ("x" * 20_001, "longer than 20,000 characters"),
    ],
)
def test_bad_messages_are_one_line_exit_2_and_write_nothing(
    home: Home, text: str, message: str
) -> None:
    run_id = home.start("summarise", "--auto-approve", "write_local")
    home.wait_status(run_id, "completed")
    before = _step_count(home, run_id)
    said = home.cli("say", run_id, text)
    assert said.returncode == 2 and message in said.stderr
    assert said.stderr.count("\n") == 1 and "Traceback" not in said.stderr
    assert _step_count(home, run_id) == before
    assert home.show(run_id)["status"] == "completed"


def test_an_unknown_run_is_exit_3(home: Home) -> None:
    home.start("summarise", "--auto-approve", "write_local")
    said = home.cli("say", "ffffffff", "hello")
    assert said.returncode == 3 and "no run" in said.stderr


def test_failed_and_cancelled_runs_take_no_message(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.fail(0, Fault(status=400, message="bad request"))
    failed = home.start("will fail")
    home.wait_status(failed, "failed")
    said = home.cli("say", failed, "hello")
    assert said.returncode == 2 and "resume it first" in said.stderr
    assert said.stderr.count("\n") == 1
    assert _step_count(home, failed) == 0

    llm.script = [Reply("Write.", [call("write_file", {"path": "a.txt", "content": "a"})])]
    cancelled = home.start("to cancel")
    home.wait_status(cancelled, "waiting_approval")
    home.cli("cancel", cancelled, check=True)
    home.wait_status(cancelled, "cancelled")
    before = _step_count(home, cancelled)
    said = home.cli("say", cancelled, "hello")
    assert said.returncode == 2 and "cancelled" in said.stderr and "fork" in said.stderr
    assert _step_count(home, cancelled) == before


def test_a_completed_run_whose_key_another_live_run_holds_is_refused(home: Home) -> None:
    first = home.start("summarise", "--auto-approve", "write_local", "--key", "k1")
    home.wait_status(first, "completed")
    second = home.start("summarise", "--key", "k1")  # waits for an approval: not final
    assert second != first
    home.wait_status(second, "waiting_approval")
    said = home.cli("say", first, "again")
    assert said.returncode == 2 and f"held by run {second[:8]}" in said.stderr
    assert home.show(first)["status"] == "completed"
    # A run that is waiting takes a message, and sees it once the call is decided.
    said = home.cli("say", second, "write it please")
    assert said.returncode == 0 and "approved or denied" in said.stdout
    home.cli("approve", second, check=True)
    view = home.wait_status(second, "completed")
    assert "write it please" in view["result"]
