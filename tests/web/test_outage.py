"""The HTTP API through an outage of its PostgreSQL server (a real cluster paused)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import Home, wait_for
from tests.web.conftest import Api
from tui_agent.service.keeper import SUPERVISOR_CHECK_S


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_an_outage_of_the_store_is_logged_once_as_such(home: Home) -> None:
    """While PostgreSQL is down the server answers 503 and its log says the store is away,
    once; never that it "cannot start the supervisor" (which runs all along)."""
    from tests.pg import cluster

    server = Api(home)
    try:
        run_id = server.start("wait for me")["id"]
        server.wait_status(run_id, "waiting_approval")
        cluster().pause()
        try:
            wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 503, 10, "503")
            time.sleep(4 * SUPERVISOR_CHECK_S)
        finally:
            cluster().resume()
        wait_for(server._healthy, 20, "the store back")
        time.sleep(2 * SUPERVISOR_CHECK_S)
    finally:
        log = server.stop()
    assert log.count("the store cannot be read now") == 1, log
    assert "the store can be read again" in log and "cannot start the supervisor" not in log
    assert "Traceback" not in log
