"""Bad input: one readable line on stderr, exit 2 (unknown run: 3), nothing written."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from tests.conftest import FAST_CONFIG, Home
from tui_agent.supervisor.lock import pid_alive


def _one_line(stderr: str) -> None:
    assert stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr


def _runs(home: Home) -> int:
    """Runs in the home's store (0 when it was never created)."""
    if home.backend == "sqlite" and not (home.path / "tui-agent.db").exists():
        return 0
    try:
        return int(home.query("SELECT count(*) FROM runs")[0][0])
    except Exception:  # no schema yet: nothing was written
        return 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", ""], "goal must not be empty"),
        (["run", "x", "--model", ""], "--model must not be empty"),
        (["run", "x", "--sandbox", "jail"], "invalid choice"),
        (["run", "   "], "goal must not be empty"),
        (["run", "x", "--max-steps", "-3"], "must be greater than 0"),
        (["run", "x", "--max-steps", "0"], "must be greater than 0"),
        (["run", "x", "--max-context-tokens", "200"], "must be at least 1000"),
        (["run", "x", "--max-context-tokens", "0"], "must be greater than 0"),
        (["run", "x", "--max-steps", "ten"], "expected a whole number"),
        (["run", "x", "--max-tokens", "-1"], "must be greater than 0"),
        (["run", "x", "--max-wall-time", "-5"], "must be greater than 0"),
        (["run", "x", "--max-wall-time", "nan"], "must be a finite number"),
        (["run", "x", "--max-wall-time", "inf"], "must be a finite number"),
        (["run", "x", "--max-wall-time", "1e400"], "must be a finite number"),
        (["run", "x", "--max-wall-time", "soon"], "expected a number of seconds"),
        (["run", "x", "--max-wall-time", "1e9"], "must be at most 100,000,000"),
        (["run", "x", "--max-steps", "100000000000000000000000"], "must be at most 1,000,000"),
        (["run", "x", "--max-tokens", "1e3"], "expected a whole number"),
        (["run", "x", "--max-tokens", "10000000000000"], "must be at most"),
        (["run", "x", "--workspace", "/etc/passwd"], "is not a directory"),
        (["run"], "the following arguments are required: goal"),
        (["resume", "abc", "--max-steps", "-1"], "must be greater than 0"),
        (["resume", "abc", "--max-wall-time", "0"], "must be greater than 0"),
        (["resume", "abc", "--max-tokens", "lots"], "expected a whole number"),
        (["ls", "--limit", "many"], "expected a whole number"),
        (["approve"], "the following arguments are required: run"),
        (["deny", "abc", "--reason"], "expected one argument"),
        (["supervisor", "reboot"], "choose start, stop, status or run"),
        (["run", "x", "--workspace", "/does/not/exist"], "does not exist"),
        (["run", "x", "--auto-approve", "everything"], "invalid choice"),
        (["run", "x", "--key", " "], "--key must not be empty"),
        (["run", "x", "--model", "two words"], "not valid"),
        (["ls", "--status", "sleeping"], "invalid choice"),
        (["ls", "--limit", "0"], "must be greater than 0"),
        (["resolve", "abc", "maybe"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
@pytest.mark.both_stores
def test_bad_flags_are_one_line_exit_2_nothing_written(
    home: Home, args: list[str], message: str
) -> None:
    proc = home.cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    _one_line(proc.stderr)
    assert _runs(home) == 0


@pytest.mark.parametrize("command", ["show", "approve", "deny", "cancel", "resume"])
@pytest.mark.both_stores
def test_unknown_run_exits_3(home: Home, command: str) -> None:
    proc = home.cli(command, "deadbeef")
    assert proc.returncode == 3 and "no run 'deadbeef'" in proc.stderr
    _one_line(proc.stderr)


@pytest.mark.both_stores
def test_actions_on_the_wrong_status_are_clear(home: Home) -> None:
    run_id = home.start()
    home.wait_status(run_id, "waiting_approval")
    for args, text in [
        (["resume", run_id], "approve or deny it instead"),
        (["resolve", run_id, "retry"], "no call in doubt"),
    ]:
        proc = home.cli(*args)
        assert proc.returncode == 2 and text in proc.stderr
        _one_line(proc.stderr)
    home.cli("cancel", run_id, check=True)
    for args in (["cancel", run_id], ["approve", run_id], ["resume", run_id]):
        proc = home.cli(*args)
        assert proc.returncode == 2
        _one_line(proc.stderr)


def test_corrupt_database_is_refused_and_left_untouched(home: Home) -> None:
    db = home.path / "tui-agent.db"
    db.write_bytes(b"this is not a database at all" * 100)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for args in (["ls"], ["run", "x"], ["show", "abc"]):
        proc = home.cli(*args)
        assert proc.returncode == 2 and "not a tui-agent database" in proc.stderr
        _one_line(proc.stderr)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_truncated_database_is_refused_clearly(home: Home) -> None:
    home.start("x")
    home.kill_all()
    db = home.path / "tui-agent.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2 + 100])
    for suffix in ("-wal", "-shm"):
        (home.path / f"tui-agent.db{suffix}").unlink(missing_ok=True)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    proc = home.cli("ls")
    assert proc.returncode == 2, proc.stderr
    _one_line(proc.stderr)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


@pytest.mark.both_stores
def test_newer_schema_is_refused(home: Home) -> None:
    home.cli("ls", check=True)
    home.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    proc = home.cli("ls")
    assert proc.returncode == 2
    assert "schema version 99 is newer" in proc.stderr
    _one_line(proc.stderr)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("max_concurrent_runs = [", "config.toml"),
        ("max_concurrent_runs = 0", "must be greater than 0"),
        ("max_concurrent_runs = 'four'", "must be a number"),
        ("colour = 'red'", "unknown setting 'colour'"),
        ("max_context_tokens = 200", "max_context_tokens must be 1,000 to 100,000,000, not 200"),
        ("max_context_tokens = 10000000000000", "must be 1,000 to 100,000,000"),
        ("max_context_tokens = 1200.5", "max_context_tokens must be a whole number"),
        ("synchronous = 'sometimes'", 'must be "full" or "normal"'),
        ("lease_s = 1\nheartbeat_s = 2", "heartbeat_s (2) must be shorter than lease_s (1)"),
    ],
)
def test_corrupt_config_is_one_clear_line(home: Home, config: str, message: str) -> None:
    home.configure(config)
    proc = home.cli("run", "x", "--workspace", str(home.workspace))
    assert proc.returncode == 2 and message in proc.stderr
    assert f"{home.path / 'config.toml'}:" in proc.stderr  # which file, wholly
    _one_line(proc.stderr)
    assert home.json("ls") == []  # nothing written (and the history can still be read)


@pytest.mark.both_stores
def test_a_misspelt_setting_is_named_with_the_one_it_resembles(home: Home) -> None:
    home.configure("max_concurent_runs = 4")
    proc = home.cli("run", "x", "--workspace", str(home.workspace))
    assert proc.returncode == 2
    assert (
        "unknown setting 'max_concurent_runs' (did you mean 'max_concurrent_runs'?)" in proc.stderr
    )


@pytest.mark.both_stores
def test_a_broken_config_still_lets_the_supervisor_be_stopped(home: Home) -> None:
    """The way out of a bad edit: `supervisor status` and `stop` work, and the history can
    be read (each says what is wrong); what starts or changes runs refuses in one line."""
    run_id = home.start("before the edit")
    home.cli("supervisor", "start", check=True)
    home.configure("max_steps = 'lots'")
    status = home.cli("supervisor", "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
    said = "max_steps must be a number (`supervisor status` goes on without config.toml;"
    assert said in status.stderr
    stopped = home.cli("supervisor", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert home.supervisor_pid() is None or not pid_alive(home.supervisor_pid() or 0)
    for args in (("ls",), ("show", run_id), ("export", run_id), ("stats",)):
        read = home.cli(*args)
        assert read.returncode == 0, (args, read.stderr)
        assert f"max_steps must be a number (`{args[0]}` goes on without" in read.stderr

    for args in (("run", "x"), ("cancel", run_id), ("prune", "--dry-run")):
        refused = home.cli(*args)
        assert refused.returncode == 2 and "max_steps must be a number" in refused.stderr, args


@pytest.mark.both_stores
def test_a_supervisor_its_config_stops_says_why_to_whoever_started_it(home: Home) -> None:
    """A long-lived TUI or server read a good config.toml; a supervisor started after an
    edit broke it cannot run: the starter hears the file's own error (not "exited, see the
    log"), and the queued run's reason says it instead of "start one"."""
    import uuid

    from tui_agent.domain.errors import TuiAgentError
    from tui_agent.service.api import StartRequest
    from tui_agent.service.local import LocalService
    from tui_agent.settings import load_settings
    from tui_agent.store.starts import create_run

    home.configure()
    service = LocalService.open(load_settings(home.env))
    try:
        # Queued while nothing ran it (the store's own insert: no supervisor started)...
        spec = service.build_spec(StartRequest(goal="x", workspace=str(home.workspace)))
        run, _ = create_run(service.db, spec, uuid.uuid4().hex)
        home.configure("max_concurent_runs = 4")  # ...then the file broke
        with pytest.raises(TuiAgentError):
            service.ensure_supervisor()  # as the open app's or server's keeper does
        said = f"{home.path / 'config.toml'}: unknown setting 'max_concurent_runs'"
        assert service.supervisor_problem is not None and said in service.supervisor_problem
        assert service.supervisor_problem.startswith("the supervisor cannot run: ")
        assert service.supervisor_state().problem == service.supervisor_problem
        assert service.reason(service.get_run(run.id)) == f"queued: {service.supervisor_problem}"
        # A reading command (which goes on without the file) says the same, not "start one".
        shown = json.loads(home.cli("show", run.id, "--json", check=True).stdout)
        assert shown["reason"].startswith("queued: the supervisor cannot run: ")
        assert "unknown setting 'max_concurent_runs'" in shown["reason"]
        stamp = service.config_stamp()
        home.configure()  # fixed: the next start works and the reason is the usual one
        assert service.config_stamp() != stamp
        service.ensure_supervisor()
        assert service.supervisor_problem is None
        home.wait_status(run.id, "waiting_approval", "completed", "failed")
    finally:
        service.stop_supervisor()
        service.close()


@pytest.mark.both_stores
def test_ls_with_nothing_to_list_says_so_and_version_prints(home: Home) -> None:
    out = home.cli("ls", check=True)
    assert out.stdout.startswith("no runs yet")
    out = home.cli("ls", "--status", "failed", check=True)
    assert out.stdout == "no runs with status failed\n"
    assert home.cli("--version", check=True).stdout.startswith("tui-agent ")


def test_the_app_without_a_terminal_is_refused_and_a_crash_exits_non_zero(home: Home) -> None:
    import subprocess
    import sys

    argv = [sys.executable, "-m", "tui_agent"]
    proc = subprocess.run(argv, env=home.env, stdin=subprocess.DEVNULL, capture_output=True)
    assert proc.returncode == 2 and proc.stdout == b""  # no escape codes written
    assert proc.stderr.decode().startswith("tui-agent: the app needs a terminal")
    env = {
        **home.env,
        "TEXTUAL_DRIVER": "textual.drivers.headless_driver:HeadlessDriver",
        "TUI_AGENT_FAILPOINTS": "ui.first_frame=raise@1",
    }
    crashed = subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60
    )
    assert crashed.returncode != 0


@pytest.mark.both_stores
def test_an_open_service_starts_runs_with_config_toml_as_it_is_now(home: Home) -> None:
    """An app or server left open starts a run as a new `run` would: with the defaults the
    file gives now, and refused in the file's one line while it cannot be used."""
    from tui_agent.service.api import StartRequest
    from tui_agent.service.local import LocalService
    from tui_agent.settings import ConfigError, load_settings

    home.configure()
    service = LocalService.open(load_settings(home.env))
    try:
        home.configure(FAST_CONFIG + "max_steps = 10\n")
        request = StartRequest(goal="x", workspace=str(home.workspace), model="demo")
        run, _ = service.start_run(request)
        assert run.budget.max_steps == 10
        home.configure(FAST_CONFIG + "max_stepz = 10\n")
        with pytest.raises(ConfigError, match="did you mean 'max_steps'"):
            service.start_run(request)
        assert len(service.list_runs()) == 1
    finally:
        service.stop_supervisor()
        service.close()
