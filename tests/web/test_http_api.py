"""The HTTP API of product.md, through a real `tui-agent serve` and real HTTP clients, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import subprocess

import httpx
import pytest

from tests.conftest import Home, wait_for
from tests.web.conftest import Api, Receiver

pytestmark = pytest.mark.both_stores


def _runs(home: Home) -> int:
    return int(home.query("SELECT count(*) FROM runs")[0][0])


def test_the_token_is_private_and_every_route_but_healthz_needs_it(home: Home, api: Api) -> None:
    token_file = home.path / "api-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == api.token
    assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok"}
    body = {"goal": "nothing", "workspace": str(home.workspace)}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": api.token}):
        for method, path in (
            ("GET", "/v1/runs"),
            ("POST", "/v1/runs"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("GET", "/no/such/route"),
        ):
            answer = httpx.request(method, f"{api.url}{path}", headers=headers, json=body)
            assert answer.status_code == 401, (method, path, answer.text)
            assert "error" in answer.json() and api.token not in answer.text
    assert _runs(home) == 0  # nothing was done
    schema = api.client.get("/openapi.json").json()
    assert "/v1/runs" in schema["paths"] and "/v1/runs/{ref}/events" in schema["paths"]


def test_post_answers_202_with_the_run_and_a_key_returns_it_again(home: Home, api: Api) -> None:
    body = {"goal": "write a note", "workspace": str(home.workspace), "max_steps": 7}
    first = api.client.post("/v1/runs", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202, first.text
    run = first.json()
    assert first.headers["location"] == f"/v1/runs/{run['id']}"
    for key in (
        "id",
        "status",
        "goal",
        "created_at",
        "updated_at",
        "budget",
        "usage",
        "state",
        "steps",
        "pending_approvals",
        "result",
        "error",
    ):
        assert key in run, key
    assert run["budget"]["max_steps"] == 7 and run["key"] == "k-1"
    again = api.client.post("/v1/runs", json=body, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.json()["id"] == run["id"]
    assert _runs(home) == 1
    shown = api.client.get(f"/v1/runs/{run['id'][:10]}").json()
    assert shown["id"] == run["id"]
    cli = home.json("show", run["id"])
    assert {k: cli[k] for k in ("id", "goal", "budget", "key")} == {
        k: shown[k] for k in ("id", "goal", "budget", "key")
    }


def test_a_new_runs_202_is_what_the_store_then_shows(home: Home, api: Api) -> None:
    """A start without a key answers with the run as its transaction committed it (not
    read back): it must be exactly the run a read then shows, while nothing has moved it
    (its queue is one no supervisor serves)."""
    for extra in (
        {},
        {"sandbox": "none", "max_context_tokens": 3000, "auto_approve": ["write_local"]},
    ):
        started = api.start("stay queued", queue="nobody-serves-it", **extra)
        assert started["status"] == "queued" and len(started["events"]) == 1
        assert api.client.get(f"/v1/runs/{started['id']}").json() == started


def test_the_list_pages_with_a_cursor(home: Home, api: Api) -> None:
    ids = [api.start(f"run {i}", model="demo")["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["before"] = cursor
        page = api.client.get("/v1/runs", params=params).json()
        seen += [r["id"] for r in page["runs"]]
        for row in page["runs"]:
            assert set(row) >= {
                "id",
                "status",
                "goal",
                "created_at",
                "updated_at",
                "usage",
                "reason",
            }
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    only = api.client.get("/v1/runs", params={"status": "completed"}).json()["runs"]
    assert all(r["status"] == "completed" for r in only)


def test_a_run_is_followed_and_decided_over_http(home: Home, api: Api) -> None:
    run = api.start("summarise the workspace", model="demo")
    events = api.events(run["id"], stop_after=lambda sse: sse.event == "approval")
    assert events[-1].event == "approval"
    assert json.loads(events[-1].data)["status"] == "waiting_approval"
    wrong = api.client.post(f"/v1/runs/{run['id']}/resume")
    assert wrong.status_code == 409 and "waiting_approval" in wrong.json()["error"]
    decided = api.client.post(f"/v1/runs/{run['id']}/approve", json={"always": False})
    assert decided.status_code == 200, decided.text
    rest = api.events(run["id"], events[-1].id)
    assert rest[-1].event == "status" and json.loads(rest[-1].data)["status"] == "completed"
    everything = api.events(run["id"])  # a final run's stream replays and ends

    def kept(e: object) -> bool:  # a tool call seen open live is replayed only finished
        return not (e.event == "step" and json.loads(e.data)["status"] == "started")

    assert [(e.id, e.event, e.data) for e in everything] == [
        (e.id, e.event, e.data) for e in events + rest if kept(e)
    ]
    ids = [int(e.id) for e in everything]
    assert ids == sorted(set(ids)), "ids must grow"
    kinds = {e.event for e in everything}
    assert {"step", "status", "approval"} <= kinds
    steps = [json.loads(e.data) for e in everything if e.event == "step"]
    done = {s["seq"] for s in steps if s["status"] != "started"}
    assert done == {s["seq"] for s in home.json("show", run["id"])["steps"]}


def test_a_stream_resumed_from_any_event_loses_and_repeats_nothing(home: Home, api: Api) -> None:
    run = api.start("summarise the workspace", model="demo", auto_approve=["write_local"])
    api.wait_status(run["id"], "completed")
    everything = api.events(run["id"])
    assert len(everything) >= 6
    for cut in range(len(everything)):
        rest = api.events(run["id"], everything[cut].id)
        assert [e.id for e in rest] == [e.id for e in everything[cut + 1 :]]
    assert api.events(run["id"], "not a number")[0].id == everything[0].id


def test_a_waiting_stream_stays_open_with_keepalive_comments(home: Home, api: Api) -> None:
    run = api.start("summarise the workspace", model="demo")
    api.wait_status(run["id"], "waiting_approval")
    lines: list[str] = []
    with api.client.stream("GET", f"/v1/runs/{run['id']}/events", timeout=10) as answer:
        for line in answer.iter_lines():
            lines.append(line)
            if line.startswith(":"):  # a comment: the keep-alive (every 1 s here)
                break
    assert any(line.startswith("event: approval") for line in lines)


def test_bad_input_is_a_clear_json_error_and_writes_nothing(home: Home, api: Api) -> None:
    ws = str(home.workspace)
    wrong_types = [
        {"goal": 5},
        {"goal": "x", "workspace": 3},
        {"goal": "x", "max_steps": "5"},
        {"goal": "x", "max_steps": 2.5},
        {"goal": "x", "max_steps": True},
        {"goal": "x", "max_llm_tokens": []},
        {"goal": "x", "max_wall_time_s": "soon"},
        {"goal": "x", "max_context_tokens": "2000"},
        {"goal": "x", "auto_approve": "write_local"},
        {"goal": "x", "sandbox": 1},
        {"goal": "x", "callback_url": {}},
        {"goal": "x", "unknown_field": 1},
        {},
    ]
    for body in wrong_types:
        answer = api.client.post("/v1/runs", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"], body
    wrong_values = [
        ({"goal": "   "}, "goal"),
        ({"goal": "x", "max_steps": 0}, "max_steps"),
        ({"goal": "x", "max_wall_time_s": -1}, "max_wall_time_s"),
        ({"goal": "x", "max_context_tokens": 200}, "max_context_tokens must be at least 1000"),
        ({"goal": "x", "auto_approve": ["everything"]}, "auto_approve"),
        ({"goal": "x", "sandbox": "chroot"}, "sandbox"),
        ({"goal": "x", "queue": "no spaces"}, "queue"),
        ({"goal": "x", "callback_url": "ftp://example.com/x"}, "callback_url"),
        ({"goal": "x", "callback_url": "not a url"}, "callback_url"),
        ({"goal": "x", "workspace": "relative/dir"}, "absolute"),
        ({"goal": "x", "workspace": "/no/such/dir"}, "does not exist"),
        ({"goal": "x" * 20_001}, "longer"),
    ]
    for body, said in wrong_values:
        body = {"workspace": ws, **body}
        answer = api.client.post("/v1/runs", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert said in answer.json()["error"], (body, answer.text)
    for raw in (b"{not json", b"[1, 2]", b"", b"\xff\xfe"):
        answer = api.client.post(
            "/v1/runs", content=raw, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 422, (raw, answer.text)
    huge = api.client.post(
        "/v1/runs",
        content=b'{"goal": "' + b"x" * (2 << 20) + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413 and "larger" in huge.json()["error"]
    assert api.client.get("/v1/nothing").status_code == 404
    assert api.client.get("/v1/nothing").json()["error"]
    wrong_method = api.client.delete("/v1/runs")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]
    assert api.client.get("/v1/runs", params={"limit": 0}).status_code == 422
    assert api.client.get("/v1/runs", params={"before": "garbage"}).status_code == 400
    assert api.client.get("/v1/runs/ffffffffffff").status_code == 404
    assert _runs(home) == 0  # nothing was written by any of them
    run = api.start("x", model="demo")
    assert api.client.post(f"/v1/runs/{run['id']}/cancel").status_code == 200
    api.wait_status(run["id"], "cancelled")  # an executor may still be ending it
    before = home.query("SELECT revision FROM runs")[0][0]
    for path, body in (
        ("approve", None),
        ("deny", {"reason": "no"}),
        ("resume", None),
        ("resolve", {"choice": "retry"}),
    ):
        answer = api.client.post(f"/v1/runs/{run['id']}/{path}", json=body)
        assert answer.status_code == 409, (path, answer.text)
        assert answer.json()["error"]
    assert home.query("SELECT revision FROM runs")[0][0] == before
    bad_choice = api.client.post(f"/v1/runs/{run['id']}/resolve", json={"choice": "maybe"})
    assert bad_choice.status_code == 400
    assert (
        api.client.post(f"/v1/runs/{run['id']}/approve", json={"always": "yes"}).status_code == 422
    )


def test_cancel_over_http(home: Home, api: Api) -> None:
    run = api.start("summarise the workspace", model="demo")
    api.wait_status(run["id"], "waiting_approval")
    answer = api.client.post(f"/v1/runs/{run['id']}/cancel")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    again = api.client.post(f"/v1/runs/{run['id']}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]


def _signed(token: str, body: str) -> str:
    return "sha256=" + hmac.new(token.encode(), body.encode(), hashlib.sha256).hexdigest()


def test_callbacks_are_signed_retried_and_delivered_once_each(
    home: Home, api: Api, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    receiver.start()
    run = api.start("summarise the workspace", model="demo", callback_url=receiver.url)
    api.wait_status(run["id"], "waiting_approval")
    api.client.post(f"/v1/runs/{run['id']}/approve")
    api.wait_status(run["id"], "completed")

    def both_ok(seen: list[dict[str, object]]) -> bool:
        return len({r["delivery"] for r in seen if r["answer"] == 204}) == 2

    receiver.wait_for(both_ok, 60, "both callbacks to be delivered")
    seen = receiver.received()
    assert [r["answer"] for r in seen[:2]] == [500, 500]
    first_ok = next(r for r in seen if r["answer"] == 204)
    assert seen[0]["delivery"] == first_ok["delivery"]  # a retry keeps its delivery id
    for record in seen:
        assert record["signature"] == _signed(api.token, record["body"])
    bodies = [json.loads(r["body"]) for r in seen if r["answer"] == 204]
    assert [b["status"] for b in bodies] == ["waiting_approval", "completed"]
    assert all(b["id"] == run["id"] for b in bodies)
    assert set(bodies[0]) == {"id", "status", "reason", "result", "error"}
    assert "write_file" in bodies[0]["reason"] and bodies[1]["result"]
    rows = home.query("SELECT status, attempts FROM deliveries ORDER BY created_at")
    assert [r[0] for r in rows] == ["delivered", "delivered"]


def test_callbacks_survive_kill_9_of_the_server_the_supervisor_and_the_receiver(
    home: Home, api: Api, receiver: Receiver
) -> None:
    receiver.start()
    receiver.kill()  # dead at first: the delivery waits in the outbox
    run = api.start(
        "summarise the workspace",
        model="demo",
        auto_approve=["write_local"],
        callback_url=receiver.url,
    )
    api.wait_status(run["id"], "completed")
    wait_for(
        lambda: home.query("SELECT attempts FROM deliveries")[0][0] >= 1, 30, "a first attempt"
    )
    api.kill()
    home.kill_all()
    assert home.query("SELECT status FROM deliveries")[0][0] == "pending"
    receiver.start()
    home.execute("UPDATE deliveries SET next_at = 0")  # not wait out the backoff
    again = Api(home)  # its keeper starts a supervisor: a delivery is waiting
    try:
        delivered = receiver.wait_for(
            lambda seen: [r for r in seen if r["answer"] == 204], 60, "the delivery after the crash"
        )
        assert json.loads(delivered[0]["body"])["status"] == "completed"
    finally:
        again.stop()
    rows = home.query("SELECT id, status FROM deliveries")
    assert len(rows) == 1 and rows[0][1] == "delivered"
    assert delivered[0]["delivery"] == rows[0][0]


def test_metrics_and_stats_come_from_the_store(home: Home, api: Api) -> None:
    run = api.start("summarise the workspace", model="demo", auto_approve=["write_local"])
    api.wait_status(run["id"], "completed")
    api.start("another", model="demo")
    text = api.client.get("/metrics").text
    assert 'tui_agent_runs_total{status="completed"} 1.0' in text
    assert 'tui_agent_steps_total{kind="llm"}' in text
    for name in (
        "tui_agent_run_duration_seconds_bucket",
        "tui_agent_llm_tokens_total",
        "tui_agent_llm_retries_total",
        "tui_agent_approvals_pending",
    ):
        assert name in text, name
    other = Api(home)  # a second server of the same store says the same
    try:

        def figures(t: str) -> list[str]:
            return sorted(
                line
                for line in t.splitlines()
                if line.startswith("tui_agent_") and "callbacks" not in line
            )

        assert figures(other.client.get("/metrics").text) == figures(
            api.client.get("/metrics").text
        )
        assert other.client.get("/v1/stats").json() == api.client.get("/v1/stats").json()
    finally:
        other.stop()
    stats = api.client.get("/v1/stats").json()
    assert stats == home.json("stats")
    assert stats["runs"]["completed"] == 1 and stats["steps"]["llm"] >= 1
    assert stats["llm_latency_s"]["p50"] is not None and stats["run_duration_s"]["max"] > 0
    assert set(stats["approvals"]) == {"pending", "approved", "denied", "median_time_to_decide_s"}


def test_curl_as_the_readme_shows_it(home: Home, api: Api) -> None:
    env = {**os.environ, "TOKEN": api.token}
    started = subprocess.run(
        [
            "curl",
            "-s",
            "-H",
            "Authorization: Bearer " + api.token,
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps({"goal": "summarise", "workspace": str(home.workspace), "model": "demo"}),
            f"{api.url}/v1/runs",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    run_id = json.loads(started.stdout)["id"]
    api.wait_status(run_id, "waiting_approval")
    subprocess.run(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            "-H",
            "Authorization: Bearer " + api.token,
            f"{api.url}/v1/runs/{run_id}/approve",
        ],
        check=True,
        capture_output=True,
    )
    streamed = subprocess.run(
        [
            "curl",
            "-sN",
            "-H",
            "Authorization: Bearer " + api.token,
            f"{api.url}/v1/runs/{run_id}/events",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "event: status" in streamed.stdout and '"status": "completed"' in streamed.stdout


def test_serve_refuses_a_port_in_use_in_one_line(home: Home, api: Api) -> None:
    port = api.url.rsplit(":", 1)[1]
    proc = home.cli("serve", "--port", port, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "cannot listen" in proc.stderr


def test_what_a_new_user_found_is_refused_cleanly(home: Home, api: Api) -> None:
    """The first walk of the API found these; each is a clear 4xx now, nothing written."""
    ws = str(home.workspace)
    (home.path / "logs").mkdir(exist_ok=True)
    for body, said in (
        ({"goal": "a\ud800b"}, "not valid text"),
        ({"goal": "a\x00b"}, "NUL"),
        ({"goal": "x", "model": "m\ud800"}, "not valid text"),
        ({"goal": "x", "callback_url": "http://a/\ud800"}, "not valid text"),
        ({"goal": "x", "max_steps": -1}, "max_steps must be greater than 0"),
        ({"goal": "x", "sandbox": "open"}, "sandbox takes one of"),
        ({"goal": "x", "workspace": str(home.path)}, "tui-agent's own data"),
        ({"goal": "x", "workspace": str(home.path / "logs")}, "tui-agent's own data"),
    ):
        raw = json.dumps({"workspace": ws, **body}).encode()  # \ud800 escaped, as sent
        answer = api.client.post(
            "/v1/runs", content=raw, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400, (body, answer.text)
        assert said in answer.json()["error"] and "--" not in answer.json()["error"], answer.text
    no_type = api.client.post("/v1/runs", content=b'{"goal": "x"}', headers={"Content-Type": ""})
    assert no_type.status_code == 422 and "Content-Type" in no_type.json()["error"]
    assert (
        "not valid JSON"
        in api.client.post(
            "/v1/runs", content=b"{", headers={"Content-Type": "application/json"}
        ).json()["error"]
    )

    def chunks(size: int):  # a body with no length: sent chunked
        yield b'{"goal": "'
        yield b"x" * size
        yield b'", "workspace": "' + ws.encode() + b'", "model": "demo"}'

    as_json = {"Content-Type": "application/json"}
    big = api.client.post("/v1/runs", content=chunks(2 << 20), headers=as_json)
    assert big.status_code == 413, big.text
    small = api.client.post("/v1/runs", content=chunks(10), headers=as_json)
    assert small.status_code == 202, small.text
    assert _runs(home) == 1
    bogus = api.client.get("/v1/runs", params={"status": "bogus"})
    assert bogus.status_code == 400 and "waiting" in bogus.json()["error"]
    assert api.client.get("/v1/runs", params={"status": "waiting"}).status_code == 200
    assert httpx.head(f"{api.url}/healthz").status_code == 200
    key = "clé-✓"
    keyed = api.client.post(
        "/v1/runs",
        json={"goal": "keyed", "workspace": ws},
        headers={"Idempotency-Key": key.encode()},  # UTF-8 bytes on the wire
    )
    assert keyed.json()["key"] == key
    assert httpx.get(f"{api.url}/v1/stats?token={api.token}").status_code == 401  # not logged


def test_decisions_over_http_say_so_and_reasons_have_a_limit(home: Home, api: Api) -> None:
    run = api.start("summarise the workspace", model="demo")
    api.wait_status(run["id"], "waiting_approval")
    long = api.client.post(f"/v1/runs/{run['id']}/deny", json={"reason": "r" * 2001})
    assert long.status_code == 400 and "longer" in long.json()["error"]
    api.client.post(f"/v1/runs/{run['id']}/deny", json={"reason": "not now"})
    done = api.wait_status(run["id"], "completed")
    assert done["approvals"][0]["decided_by"].endswith("(HTTP)")


def test_a_callback_url_never_reaches_the_logs(home: Home, api: Api, receiver: Receiver) -> None:
    receiver.start()
    url = receiver.url.replace("http://", "http://user:s3cret@") + "?sig=SECRETVALUE"
    run = api.start("x", model="demo", auto_approve=["write_local"], callback_url=url)
    api.wait_status(run["id"], "completed")
    receiver.wait_for(lambda seen: [r for r in seen if r["answer"] == 204], 30, "the delivery")
    logs = "".join(p.read_text() for p in (home.path / "logs").glob("*.log"))
    assert "s3cret" not in logs and "SECRETVALUE" not in logs
    assert home.json("stats")["callbacks"]["delivered"] == 1
