"""`POST /v1/runs/ID/say` through a real `tui-agent serve`: the CLI's rules, as JSON."""

from __future__ import annotations

import pytest

from tests.conftest import Home
from tests.web.conftest import Api

pytestmark = pytest.mark.both_stores


def _steps(home: Home, run_id: str) -> int:
    return int(home.query("SELECT count(*) FROM steps WHERE run_id = ?", (run_id,))[0][0])


def test_say_over_http_continues_a_completed_run(home: Home, api: Api) -> None:
    run = api.start("summarise", model="demo", auto_approve=["write_local"])
    api.wait_status(run["id"], "completed")
    answer = api.client.post(f"/v1/runs/{run['id'][:8]}/say", json={"text": "one more thing"})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["id"] == run["id"] and data["status"] in ("queued", "running", "completed")
    message = next(s for s in data["steps"] if s["seq"] == data["message_seq"])
    assert message["kind"] == "user" and message["text"] == "one more thing"
    assert message["by"].endswith("(HTTP)")
    done = api.wait_status(run["id"], "completed")
    assert "one more thing" in done["result"]
    assert "/v1/runs/{ref}/say" in api.client.get("/openapi.json").json()["paths"]


def test_bad_messages_over_http_are_4xx_json_and_write_nothing(home: Home, api: Api) -> None:
    run = api.start("summarise", model="demo", auto_approve=["write_local"])
    api.wait_status(run["id"], "completed")
    before = _steps(home, run["id"])
    for body, code, words in (
        ({"text": ""}, 400, "must not be empty"),
        ({"text": "a\x00b"}, 400, "NUL"),
        ({"text": "x" * 20_001}, 400, "longer than"),
        ({"text": 5}, 422, "text"),
        ({}, 422, "text"),
        ({"text": "hi", "extra": 1}, 422, "extra"),
    ):
        answer = api.client.post(f"/v1/runs/{run['id']}/say", json=body)
        assert answer.status_code == code, (body, answer.text)
        assert words in answer.json()["error"], (body, answer.json())
    unknown = api.client.post("/v1/runs/ffffffff/say", json={"text": "hi"})
    assert unknown.status_code == 404 and "no run" in unknown.json()["error"]
    assert _steps(home, run["id"]) == before
    assert api.client.get(f"/v1/runs/{run['id']}").json()["status"] == "completed"


def test_a_cancelled_run_refuses_a_message_with_409(home: Home, api: Api) -> None:
    run = api.start("summarise", model="demo")
    api.wait_status(run["id"], "waiting_approval")
    api.client.post(f"/v1/runs/{run['id']}/cancel")
    api.wait_status(run["id"], "cancelled")
    answer = api.client.post(f"/v1/runs/{run['id']}/say", json={"text": "hi"})
    assert answer.status_code == 409 and "cancelled" in answer.json()["error"]
