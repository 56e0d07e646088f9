"""`TUI_AGENT_DB_URL`: a SQLite file anywhere (or a PostgreSQL server, see
tests/cli/test_postgres.py) is used by every process (CLI, supervisor, executor); a database
this version cannot use is refused in one line, before anything is written, and a password
in the URL is never echoed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.conftest import Home


def test_a_sqlite_url_is_the_store_of_every_process(home: Home, tmp_path: Path) -> None:
    elsewhere = tmp_path / "shared store"  # a space, percent-encoded in the URL
    elsewhere.mkdir()
    home.env["TUI_AGENT_DB_URL"] = "sqlite:///" + str(elsewhere / "runs.db").replace(" ", "%20")
    home.configure()
    out = home.cli("run", "Look around", "--auto-approve", "write_local", "--wait", "--json")
    assert out.returncode == 0, out.stderr
    db = elsewhere / "runs.db"
    assert db.exists() and stat.S_IMODE(db.stat().st_mode) == 0o600
    assert not (home.path / "tui-agent.db").exists()  # the home keeps only lock, logs, config
    listed = home.json("ls")
    assert [r["status"] for r in listed] == ["completed"]
    status = home.json("supervisor", "status")
    assert status["running"] is True
    home.cli("supervisor", "stop", check=True)


def test_a_relative_sqlite_path_is_pinned_for_the_detached_supervisor(home: Home) -> None:
    # The CLI runs in the workspace; the supervisor it starts does not share that directory.
    home.env["TUI_AGENT_DB_URL"] = "sqlite:///rel.db"
    home.configure()
    out = home.cli("run", "Look around", "--auto-approve", "write_local", "--wait")
    assert out.returncode == 0, out.stderr
    assert (home.workspace / "rel.db").exists()
    home.cli("supervisor", "stop", check=True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+asyncpg://agent:hunter2@db.example/runs", "asyncpg driver"),
        ("postgresql+psycopg://agent:hunter2@/runs", "needs a host and a database"),
        ("postgresql+psycopg://agent:hunter2@db.example", "needs a host and a database"),
        ("mysql://root:hunter2@localhost/x", "mysql databases are not supported"),
        ("postgresql+psycopg://a:hunter2@127.0.0.1:notaport/r", "port (a number from 1"),
        ("postgresql+psycopg://a:hunter2@127.0.0.1:99999/r", "port (a number from 1"),
        ("postgresql+psycopg://a:hunter2@[::1/r", "the host is not valid"),
        ("sqlite://", "in-memory database would lose every run"),
        ("sqlite:///:memory:?cache=shared", "query options"),
        ("sqlite:////no/such/dir/runs.db", "directory /no/such/dir does not exist"),
        ("runs.db", "not a database URL"),
    ],
)
def test_an_unusable_url_is_one_line_and_writes_nothing(home: Home, url: str, message: str) -> None:
    home.env["TUI_AGENT_DB_URL"] = url
    for args in (("run", "x"), ("ls",), ()):  # () is the TUI: refused before it draws
        out = home.cli(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], out.stderr
        assert "hunter2" not in out.stderr + out.stdout
    assert not home.path.exists() or not (home.path / "tui-agent.db").exists()


def test_a_postgresql_server_that_cannot_be_reached_is_one_line_without_the_password(
    home: Home,
) -> None:
    from tests.pg import free_port

    port = free_port()
    for password in ("hunter2", "hunter2 with spaces", "hunter2%ZZbad"):
        home.env["TUI_AGENT_DB_URL"] = f"postgresql+psycopg://scott:{password}@127.0.0.1:{port}/r"
        for args in (("run", "x"), ("ls",), ("show", "ab")):
            out = home.cli(*args)
            assert out.returncode == 1, (args, out.stdout, out.stderr)
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and "cannot be reached" in lines[0], out.stderr
            assert "hunter2" not in out.stderr + out.stdout and "scott" not in out.stderr
