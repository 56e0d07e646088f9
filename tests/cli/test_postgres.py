"""PostgreSQL through the real CLI and supervisor: the demo end to end on the server, moving
a SQLite history there with `store copy`, and queues that pin runs to supervisors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAST_CONFIG, Home

on_postgres = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def with_password(url: str, password: str = "s3cret-pw") -> str:
    """The same server URL with a password in it (the test cluster trusts; it is ignored)."""
    return url.replace("postgresql://postgres@", f"postgresql+psycopg://postgres:{password}@")


@on_postgres
def test_the_demo_runs_end_to_end_on_postgresql(home: Home) -> None:
    assert home.db_url is not None
    home.env["TUI_AGENT_DB_URL"] = with_password(home.db_url)
    out = home.cli("run", "Look around", "--auto-approve", "write_local", "--wait", "--json")
    assert out.returncode == 0, out.stderr
    assert not (home.path / "tui-agent.db").exists()  # nothing of the runs in the home
    [listed] = home.json("ls")
    assert listed["status"] == "completed"
    view = home.json("show", listed["id"])
    assert view["queue"] == "default" and view["steps"][0]["kind"] == "llm"
    status = home.json("supervisor", "status")
    assert status["running"] is True and status["executors"][0]["node"]
    everything = out.stdout + out.stderr + home.cli("supervisor", "status").stdout
    assert "s3cret-pw" not in everything
    logs = "".join(p.read_text() for p in (home.path / "logs").iterdir())
    assert "s3cret-pw" not in logs
    home.cli("supervisor", "stop", check=True)


def test_store_copy_moves_every_run_to_postgresql_where_they_go_on(home: Home) -> None:
    from tests.pg import cluster

    done = home.json("run", "Look around", "--auto-approve", "write_local", "--wait")
    asked = home.cli("run", "Look around", "--wait", "--json")  # the demo asks to write
    assert asked.returncode == 4, asked.stderr  # --wait's exit code for "waits for you"
    waiting = json.loads(asked.stdout)
    assert (done["status"], waiting["status"]) == ("completed", "waiting_approval")
    before = {r["id"]: home.json("show", r["id"]) for r in home.json("ls")}

    target = with_password(cluster().new_database())
    refused = home.cli("store", "copy", "--to", target)
    assert refused.returncode == 2 and "stop the supervisor first" in refused.stderr
    home.cli("supervisor", "stop", check=True)
    home.env["COPY_TARGET"] = target
    out = home.cli("store", "copy", "--to-env", "COPY_TARGET")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("copied 2 run(s)") and "s3cret-pw" not in out.stdout
    again = home.cli("store", "copy", "--to", target)
    assert again.returncode == 2 and "already holds 2 run(s)" in again.stderr

    home.env["TUI_AGENT_DB_URL"] = target
    for run_id, old in before.items():
        new = home.json("show", run_id)
        for key in ("status", "goal", "steps", "approvals", "events", "usage", "state"):
            assert new[key] == old[key], (run_id, key)
    assert home.json("approve", waiting["id"])["status"] == "approved"
    assert home.wait_status(waiting["id"], "completed")["result"]
    home.cli("supervisor", "stop", check=True)


def test_store_copy_refuses_a_bad_target_in_one_line(home: Home) -> None:
    home.cli("ls", check=True)
    for url, message in (
        ("mysql://root:pw@h/x", "mysql databases are not supported"),
        (f"sqlite:///{home.path / 'tui-agent.db'}", "already in"),
    ):
        out = home.cli("store", "copy", "--to", url)
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr


def test_a_run_on_a_queue_waits_for_a_supervisor_that_serves_it(home: Home) -> None:
    run_id = home.start("Look around", "--auto-approve", "write_local", "--queue", "gpu-box")
    view = home.show(run_id)
    assert view["status"] == "queued" and view["queue"] == "gpu-box"
    assert "queue 'gpu-box'" in view["reason"] and "serves default" in view["reason"]
    home.cli("supervisor", "stop", check=True)
    home.configure(FAST_CONFIG + 'queues = ["default", "gpu-box"]\n')
    home.cli("supervisor", "start", check=True)
    assert home.wait_status(run_id, "completed")["queue"] == "gpu-box"
    bad = home.cli("run", "x", "--queue", "no spaces")
    assert bad.returncode == 2 and "--queue takes a name" in bad.stderr
    home.configure(FAST_CONFIG + "queues = []\n")
    bad = home.cli("run", "x")
    assert bad.returncode == 2 and "queues must be a list of names" in bad.stderr


@on_postgres
def test_a_shell_that_forgot_the_url_is_told_the_supervisor_serves_another_store(
    home: Home,
) -> None:
    """The supervisor belongs to the home; the store to the shell. A shell without the
    PostgreSQL URL must not be served by (nor told it is served by) that supervisor."""
    assert home.db_url is not None
    home.cli("supervisor", "start", check=True)
    url = home.env.pop("TUI_AGENT_DB_URL")
    try:
        out = home.cli("run", "forgot the url", "--workspace", str(home.workspace))
        assert out.returncode == 0, out.stderr  # the run is saved in this shell's store…
        assert "saved, but the supervisor of this home" in out.stderr  # …and said unserved
        assert "serves PostgreSQL" in out.stderr and "TUI_AGENT_DB_URL" in out.stderr
        [run] = home.json("ls")  # its reason says so too (a `supervisor start` is refused)
        assert run["reason"].startswith("queued: the supervisor of this home"), run["reason"]
        assert "serves PostgreSQL" in run["reason"] and "no supervisor" not in run["reason"]
        assert home.json("show", run["id"])["reason"] == run["reason"]
        status = home.cli("supervisor", "status").stdout
        assert "but it serves PostgreSQL" in status
        stopped = home.cli("supervisor", "stop").stdout
        assert "it served PostgreSQL" in stopped
    finally:
        home.env["TUI_AGENT_DB_URL"] = url


@on_postgres
def test_a_url_the_server_refuses_is_one_line_and_exit_2(home: Home) -> None:
    """A database or role the server does not have: it answered, so waiting will not help;
    the URL must change (exit 2, as any unusable URL), never a "cannot be reached"."""
    assert home.db_url is not None
    base, _ = home.db_url.rsplit("/", 1)
    for url, said in (
        (f"{base}/no_such_db", 'database "no_such_db" does not exist'),
        (base.replace("//postgres@", "//nobody@") + "/postgres", 'role "nobody" does not exist'),
    ):
        home.env["TUI_AGENT_DB_URL"] = url
        for args in (("ls",), ("run", "x")):
            out = home.cli(*args)
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 2, (args, out.stderr)
            assert len(lines) == 1 and "refuses the connection" in lines[0], out.stderr
            assert said in lines[0] and "TUI_AGENT_DB_URL" in lines[0], out.stderr
