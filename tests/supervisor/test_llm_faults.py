"""Promise 6 over real HTTP: transient errors retried with backoff and Retry-After, each
attempt an event; permanent errors fail at once with the server's message; resume retries."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.conftest import FAST_CONFIG, Home, wait_for
from tests.fakes.llm_server import Fault, Reply, ScriptedLLM, call

pytestmark = [pytest.mark.slow, pytest.mark.both_stores]


def test_429_and_500_are_retried_honouring_retry_after(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.script = [Reply("Hello.")]
    llm.fail(0, Fault(429, retry_after=0.4, message="slow down"), Fault(500, message="boom"))
    run_id = home.start()
    view = home.wait_status(run_id, "completed")
    assert llm.requests_for(0) == 3
    retries = [e for e in view["events"] if e["kind"] == "retry"]
    assert len(retries) == 2
    assert "HTTP 429: slow down" in retries[0]["message"]
    assert "attempt 1 of 6" in retries[0]["message"]
    assert "HTTP 500: boom" in retries[1]["message"]
    gap = llm.requests[1]["at"] - llm.requests[0]["at"]
    assert gap >= 0.38, f"Retry-After 0.4 s not honoured (waited {gap:.2f}s)"
    assert view["result"] == "Hello."


def test_timeout_and_malformed_reply_are_transient(home: Home, llm: ScriptedLLM) -> None:
    home.configure(FAST_CONFIG + "llm_timeout_s = 0.5\n")
    home.use_server(llm)
    llm.script = [Reply("Fine.")]
    llm.fail(
        0,
        Fault(delay_s=1.5, status=200, body="{}"),
        Fault(status=200, body='{"id": "x", "object": "chat.completion", "choices": []}'),
    )
    run_id = home.start()
    view = home.wait_status(run_id, "completed")
    messages = [e["message"] for e in view["events"] if e["kind"] == "retry"]
    assert any("timed out" in m for m in messages)
    assert any("no choices" in m for m in messages)


def test_401_fails_at_once_with_server_message_and_resume_retries(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [Reply("Works now.")]
    llm.fail(0, Fault(401, message="Incorrect API key provided"))
    run_id = home.start()
    view = home.wait_status(run_id, "failed")
    assert llm.requests_for(0) == 1
    assert "Incorrect API key provided" in view["error"]
    assert "Incorrect API key provided" in view["reason"]
    home.cli("resume", run_id, check=True)
    view = home.wait_status(run_id, "completed")
    assert view["result"] == "Works now."


def test_unknown_model_400_fails_the_run(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.fail(0, Fault(404, message="The model `nope` does not exist"))
    run_id = home.start("x", "--model", "nope")
    view = home.wait_status(run_id, "failed")
    assert "does not exist" in view["error"]


def test_malformed_tool_calls_are_answered_as_errors_not_crashes(
    home: Home, llm: ScriptedLLM
) -> None:
    home.use_server(llm)
    llm.script = [
        Reply("Broken JSON.", [call("list_dir", '{"path": ')]),
        Reply("Unknown tool.", [call("launch_rockets", {})]),
        Reply("Wrong args.", [call("read_file", {"offset": "zero"})]),
        Reply("Escape.", [call("read_file", {"path": "../../etc/passwd"})]),
        Reply("No usage in this reply.", usage={}),
    ]
    run_id = home.start()
    view = home.wait_status(run_id, "completed")
    tools = [s for s in view["steps"] if s["kind"] == "tool"]
    assert [t["status"] for t in tools] == ["error"] * 4
    assert "not valid JSON" in tools[0]["result"]
    assert "unknown tool 'launch_rockets'" in tools[1]["result"]
    assert "needs the argument 'path'" in tools[2]["result"]
    assert "outside the workspace" in tools[3]["result"]
    # The model saw each error as the tool's answer.
    last_request = llm.requests[-1]["body"]["messages"]
    tool_msgs = [m["content"] for m in last_request if m["role"] == "tool"]
    assert len(tool_msgs) == 4 and all(m.startswith("error:") for m in tool_msgs)


def test_large_tool_result_becomes_an_artifact_read_in_slices(home: Home, llm: ScriptedLLM) -> None:
    import re

    home.configure(FAST_CONFIG + "max_artifact_bytes_in_context = 300\n")
    home.use_server(llm)
    (home.workspace / "big.txt").write_text("x" * 100 + "MARKER" + "y" * 1000)

    def read_slice(messages: list[dict[str, object]]) -> Reply:
        summary = str(messages[-1]["content"])
        found = re.search(r"artifact ([0-9a-f]+)", summary)
        assert found, summary
        return Reply(
            "Slice.",
            [call("read_file", {"path": f"artifact:{found.group(1)}", "offset": 100, "limit": 6})],
        )

    llm.script = [
        Reply("Read.", [call("read_file", {"path": "big.txt", "limit": 5000})]),
        read_slice,
        Reply("Got it."),
    ]
    run_id = home.start()
    view = home.wait_status(run_id, "completed")
    first, second = [s for s in view["steps"] if s["kind"] == "tool"]
    aid = first["artifact_id"]
    assert aid and f"artifact {aid}" in first["result"] and len(first["result"]) < 800
    assert second["result"].startswith("MARKER")
    assert view["state"]["artifacts"][0] == {
        "artifact_id": aid,
        "type": "tool_result",
        "summary": "read_file result, 1106 bytes",
        "bytes": 1106,
    }
    # Another run cannot read this run's artifacts.
    llm.script = [Reply("Peek.", [call("read_file", {"path": f"artifact:{aid}"})])]
    other = home.start("peek")
    tool = next(s for s in home.wait_status(other, "completed")["steps"] if s["kind"] == "tool")
    assert tool["result"].startswith("error: no artifact")


def test_replies_with_missing_fields_never_crash_a_run(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    llm.default = Reply("Fine after all that.")
    nameless_call = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "tool_calls": [{"type": "function", "function": {}}],
                },
            }
        ],
    }
    llm.fail(
        0,
        Fault(status=200, body="<html>502 bad gateway</html>"),
        Fault(status=200, body='{"id": "x", "choices": [{"index": 0}]}'),
        Fault(status=200, body='{"id": "x", "choices": [{"index": 0, "message": null}]}'),
        Fault(status=200, body="[1, 2, 3]"),
        Fault(status=200, body=json.dumps(nameless_call)),  # taken as the reply: answered
    )
    run_id = home.start("survive odd replies", "--max-steps", "20")
    view = home.wait_status(run_id, "completed", "failed", timeout=60)
    assert view["status"] == "completed", view
    retries = [e["message"] for e in view["events"] if e["kind"] == "retry"]
    assert len(retries) == 4 and all("malformed reply" in m for m in retries), retries
    tools = [s for s in view["steps"] if s["kind"] == "tool"]
    assert len(tools) == 1 and tools[0]["status"] == "error", tools
    assert "unknown tool" in tools[0]["result"]
    assert view["result"] == "Fine after all that."
    assert view["usage"]["steps"] == len(view["steps"])


def test_a_transient_fault_on_every_attempt_fails_after_n_attempts(
    home: Home, llm: ScriptedLLM
) -> None:
    home.configure(FAST_CONFIG + "llm_max_attempts = 3\n")
    home.use_server(llm)
    llm.script = [Reply("Never reached.")]
    llm.fail(0, *[Fault(503, message="overloaded")] * 5)
    run_id = home.start()
    view = home.wait_status(run_id, "failed")
    assert llm.requests_for(0) == 3
    assert view["error"].startswith("LLM error after 3 attempts") and "overloaded" in view["error"]
    assert len([e for e in view["events"] if e["kind"] == "retry"]) == 2


def start_in_backoff(home: Home, llm: ScriptedLLM, reply: str, retry_after: float) -> str:
    """A run whose first request got a 429 with Retry-After: it sleeps in its backoff."""
    home.configure(FAST_CONFIG.replace("retry_max_s = 0.5", "retry_max_s = 60"))
    home.use_server(llm)
    llm.script = [Reply(reply)]
    llm.fail(0, Fault(429, retry_after=retry_after, message="slow down"))
    run_id = home.start()
    wait_for(lambda: "retrying at" in (home.show(run_id)["reason"] or ""), 20, "the backoff")
    return run_id


def test_cancel_during_the_backoff_sleep_cancels_at_once(home: Home, llm: ScriptedLLM) -> None:
    run_id = start_in_backoff(home, llm, "Never reached.", retry_after=30)
    home.cli("cancel", run_id, check=True)
    view = home.wait_status(run_id, "cancelled", timeout=5)
    assert llm.requests_for(0) == 1, "it was asked again after the cancel"
    assert view["status"] == "cancelled"


def test_executor_killed_during_the_backoff_sleep_resumes_the_retries(
    home: Home, llm: ScriptedLLM
) -> None:
    run_id = start_in_backoff(home, llm, "Got there.", retry_after=3)
    (pid,) = home.query("SELECT owner_pid FROM runs WHERE id = ?", (run_id,))[0]
    os.kill(pid, signal.SIGKILL)
    view = home.wait_status(run_id, "completed")
    assert llm.requests_for(0) == 2  # the failed attempt, then one after the restart
    assert view["result"] == "Got there."


def test_a_bug_in_a_run_thread_fails_the_run_with_one_readable_line(
    home: Home, llm: ScriptedLLM
) -> None:
    """The internal-error handler: an unexpected exception fails the run with its type and
    first line (the traceback goes to the executor's log), and nothing is half-written."""
    home.use_server(llm)
    llm.script = [Reply("Listing.", [call("list_dir", {})]), Reply("Done.")]
    home.arm("llm.after_record=raise@1")
    run_id = home.start()
    view = home.wait_status(run_id, "failed")
    assert view["error"] == "internal error: RuntimeError: failpoint llm.after_record raised"
    assert [s["kind"] for s in view["steps"]] == ["llm"]  # the reply was recorded before
    log = (home.path / "logs" / "executor.log").read_text()
    assert "Traceback" in log and "crashed" in log
    home.cli("supervisor", "stop", check=True)
    home.arm("")
    home.cli("resume", run_id, check=True)
    view = home.wait_status(run_id, "completed")
    assert llm.requests_for(0) == 1  # resume goes on from the recorded reply


def test_a_tool_that_hangs_is_timed_out_and_answered_as_an_error(
    home: Home, llm: ScriptedLLM
) -> None:
    home.configure(FAST_CONFIG + "tool_timeout_s = 0.5\n")
    home.use_server(llm)
    llm.script = [Reply("Listing.", [call("list_dir", {"path": "."})]), Reply("Gave up.")]
    home.arm("tool.running=pause@1")  # the tool's thread never returns (a hung filesystem)
    run_id = home.start()
    view = home.wait_status(run_id, "completed", timeout=30)
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["status"] == "error" and tool["result"] == "error: list_dir timed out after 0.5s"
