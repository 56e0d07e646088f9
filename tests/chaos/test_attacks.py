"""Targeted attacks: a database held locked past busy_timeout, two supervisors at once,
model output too big to be polite, a full disk and a home that turns read-only."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.conftest import FAST_CONFIG, Home, hold_write_lock, wait_for
from tests.fakes.llm_server import Reply, ScriptedLLM, call

pytestmark = pytest.mark.slow


def skip_outside_ci(why: str) -> NoReturn:
    """Skip on a developer's machine that lacks the means; in CI (which installs them) fail."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this attack: {why}")
    pytest.skip(why)


@pytest.mark.both_stores
def test_locked_database_is_a_clear_retryable_error_and_writes_nothing(home: Home) -> None:
    home.configure(FAST_CONFIG + "busy_timeout_s = 0.5\n")
    home.cli("ls", check=True)
    holder = hold_write_lock(home, 3.0)
    proc = home.cli("run", "blocked", "--workspace", str(home.workspace))
    holder.join()
    assert proc.returncode == 1
    where = "the database" if home.backend == "sqlite" else "PostgreSQL "
    assert proc.stderr.startswith(f"tui-agent: {where}"), proc.stderr
    assert proc.stderr.endswith(" is locked by another process; try again\n"), proc.stderr
    assert proc.stderr.count("\n") == 1
    assert home.json("ls") == []


@pytest.mark.both_stores
def test_a_run_survives_the_database_being_locked_under_it(home: Home, llm: ScriptedLLM) -> None:
    home.configure(FAST_CONFIG + "busy_timeout_s = 0.3\n")
    home.use_server(llm)
    llm.latency_s = 0.3
    llm.script = [Reply(f"step {i}", [call("list_dir", {})]) for i in range(6)]
    llm.script.append(Reply("made it"))
    run_id = home.start()
    wait_for(lambda: home.show(run_id)["usage"]["steps"] >= 2, 20, "progress")
    hold_write_lock(home, 2.5).join()
    log = (home.path / "logs" / "executor.log").read_text()
    assert "is locked by another process" in log, "the executor never met the lock"
    view = home.wait_status(run_id, "completed", "failed", timeout=60)
    assert view["status"] == "completed", view["error"]
    assert view["result"] == "made it"
    assert len([s for s in view["steps"] if s["kind"] == "llm"]) == 7
    assert view["usage"]["steps"] == 13


@pytest.mark.both_stores
def test_two_supervisors_started_at_once_only_one_runs(home: Home) -> None:
    home.cli("ls", check=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tui_agent", "supervisor", "run"],
            env=home.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    loser = None
    deadline = time.monotonic() + 20
    while loser is None and time.monotonic() < deadline:
        loser = next((p for p in procs if p.poll() is not None), None)
        time.sleep(0.05)
    assert loser is not None, "both supervisors kept running"
    assert loser.returncode == 2
    assert "already running" in loser.stderr.read()  # type: ignore[union-attr]
    winner = next(p for p in procs if p is not loser)
    assert winner.poll() is None
    assert home.json("supervisor", "status")["pid"] == winner.pid
    winner.terminate()
    winner.wait(20)


@pytest.mark.both_stores
def test_huge_reply_and_huge_tool_output_are_recorded_whole(home: Home, llm: ScriptedLLM) -> None:
    home.use_server(llm)
    big = "x" * 2_000_000
    llm.script = [
        Reply(big, [call("run_shell", {"command": "head -c 3000000 /dev/zero | tr '\\0' y"})]),
        Reply("done"),
    ]
    run_id = home.start("big", "--auto-approve", "external_action", "--max-tokens", "9000000")
    view = home.wait_status(run_id, "completed", timeout=60)
    llm_step = view["steps"][0]
    assert len(llm_step["content"]) == 2_000_000
    tool = next(s for s in view["steps"] if s["kind"] == "tool")
    assert tool["artifact_id"] and len(tool["result"]) < 2000
    ((size, content),) = home.query(
        "SELECT size, content FROM artifacts WHERE id = ?", (tool["artifact_id"],)
    )
    assert bytes(content) == b"exit code 0\n" + b"y" * 3_000_000  # the whole output, exactly
    assert size == len(content)


@pytest.fixture
def tiny_home(home: Home) -> Iterator[Path]:
    """The home on a 2 MB tmpfs (needs root to mount; skipped where that is refused)."""
    import shutil

    mount_point = home.path.parent / "tiny"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if done.returncode != 0:
        skip_outside_ci("cannot mount a tmpfs here")
    shutil.copy(home.path / "config.toml", mount_point / "config.toml")
    home.path = mount_point
    home.env["TUI_AGENT_HOME"] = str(mount_point)
    yield mount_point
    home.kill_all()
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_disk_full_pauses_nothing_loses_nothing_and_recovers(
    home: Home, llm: ScriptedLLM, tiny_home: Path
) -> None:
    home.use_server(llm)
    chunk = "z" * 150_000
    llm.script = [
        Reply(
            f"{i} {chunk}",
            [call("list_dir", {})],
            usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        )
        for i in range(30)
    ]
    llm.script.append(Reply("finished after the disk grew"))
    run_id = home.start("fill the disk", "--max-steps", "100", "--max-tokens", "100000000")

    def stuck_on_full_disk() -> bool:
        log = tiny_home / "logs" / "executor.log"
        return log.exists() and b"full" in log.read_bytes()

    wait_for(stuck_on_full_disk, 60, "the disk to fill")
    proc = home.cli("run", "another", "--workspace", str(home.workspace))
    assert proc.returncode == 1, proc.stderr  # the README: a full disk is exit 1, try again
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    before = home.show(run_id)
    assert before["status"] in ("running", "queued")  # handed back, never failed
    steps_before = {(s["seq"], s["kind"]) for s in before["steps"]}

    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_home)], check=True)
    view = home.wait_status(run_id, "completed", "failed", timeout=90)
    assert view["status"] == "completed", view["error"]
    assert steps_before <= {(s["seq"], s["kind"]) for s in view["steps"]}
    assert view["usage"]["steps"] == len(view["steps"])
    with sqlite3.connect(tiny_home / "tui-agent.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _pids_using(mount_point: Path) -> set[int]:
    """Every process with a file open under the mount (the standby executor included)."""
    found: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if any(link.startswith(str(mount_point)) for link in links):
            found.add(int(proc.name))
    return found


class ReadOnlyHome:
    """The home on an ext4 loop filesystem mounted errors=remount-ro, so the kernel itself
    turns it read-only under running processes, as after a disk error."""

    def __init__(self, root: Path) -> None:
        self.image = root / "home.img"
        self.mount_point = root / "ext4"
        self.mount_point.mkdir()
        with self.image.open("wb") as fh:
            fh.truncate(64 * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)

    def mount(self) -> bool:
        done = subprocess.run(
            ["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mount_point)],
            capture_output=True,
        )
        return done.returncode == 0

    def fail(self) -> None:
        """An ext4 error: the kernel remounts the filesystem read-only at once."""
        device = subprocess.run(
            ["findmnt", "-no", "SOURCE", str(self.mount_point)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("chaos\n")

    def kill_users(self) -> None:
        for pid in _pids_using(self.mount_point):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _pids_using(self.mount_point), 10, "the home's users to die")

    def reboot(self) -> None:
        """Everything using the home dies, the filesystem is checked and mounted again."""
        self.kill_users()
        subprocess.run(["umount", str(self.mount_point)], check=True)
        subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True)
        assert self.mount(), "the repaired filesystem did not mount"

    def unmount(self) -> None:
        self.kill_users()
        subprocess.run(["umount", "-l", str(self.mount_point)], capture_output=True)


@pytest.fixture
def read_only_home(home: Home, tmp_path: Path) -> Iterator[ReadOnlyHome]:
    """Needs root, loop devices and ext4's trigger_fs_error; skipped where refused."""
    import shutil

    if not all(shutil.which(tool) for tool in ("mkfs.ext4", "e2fsck", "findmnt")):
        skip_outside_ci("no ext4 tools here")
    fs = ReadOnlyHome(tmp_path)
    if not fs.mount():
        skip_outside_ci("cannot mount a loop filesystem here")
    device = subprocess.run(
        ["findmnt", "-no", "SOURCE", str(fs.mount_point)], capture_output=True, text=True
    ).stdout.strip()
    if not Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").exists():
        fs.unmount()
        skip_outside_ci("this kernel cannot inject an ext4 error")
    home.path = fs.mount_point / "home"
    home.env["TUI_AGENT_HOME"] = str(home.path)
    home.configure()
    yield fs
    fs.unmount()


def test_read_only_home_reads_still_work_and_nothing_is_lost_or_repeated(
    home: Home, llm: ScriptedLLM, read_only_home: ReadOnlyHome
) -> None:
    home.use_server(llm)
    llm.script = [Reply(f"step {i}", [call("list_dir", {})], delay_s=0.1) for i in range(25)]
    llm.script.append(Reply("finished after the disk was repaired"))
    run_id = home.start("survive a read-only home", "--max-steps", "200")
    wait_for(lambda: len(home.show(run_id)["steps"]) >= 6, 60, "a few steps")

    read_only_home.fail()
    # Nothing observable to wait for: the logs are on the same read-only filesystem.
    time.sleep(1.0)  # the executor meets the read-only filesystem on its next step
    supervisor = home.supervisor_pid()

    # Reads still work, and say the truth: the run was handed back, not failed.
    before = home.show(run_id)
    assert before["status"] in ("running", "queued"), before
    assert home.cli("ls").returncode == 0
    # Every write is one clear line, exit 1 (try again later), nothing written.
    for args in (
        ("run", "another", "--workspace", str(home.workspace)),
        ("cancel", run_id),
    ):
        proc = home.cli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "read-only" in proc.stderr, proc.stderr
    # The headless TUI opens on it, shows the history and does not crash.
    tui = subprocess.Popen(
        [sys.executable, "-m", "tui_agent"],
        env={**home.env, "TEXTUAL_DRIVER": "textual.drivers.headless_driver:HeadlessDriver"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(3.0)  # it must stay up: nothing to wait for but time
    assert tui.poll() is None, tui.communicate()[1]
    tui.kill()
    assert b"Traceback" not in tui.communicate()[1]
    # The background processes met the error without dying in a loop.
    assert supervisor is not None and _pids_using(read_only_home.mount_point) >= {supervisor}

    # With every process gone (a reboot onto the still-broken disk): reads work, and the
    # supervisor refuses to start in one line instead of a traceback.
    read_only_home.kill_users()
    assert home.cli("ls").returncode == 0
    proc = home.cli("supervisor", "start")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "Read-only file system" in proc.stderr

    read_only_home.reboot()
    assert home.cli("supervisor", "start").returncode == 0
    view = home.wait_status(run_id, "completed", "failed", timeout=90)
    assert view["status"] == "completed", view["error"]

    def identity(step: dict[str, Any]) -> tuple[Any, ...]:
        return (step["seq"], step["kind"], step.get("call_id"), step.get("content"))

    assert {identity(s) for s in before["steps"]} <= {identity(s) for s in view["steps"]}
    assert view["usage"]["steps"] == len(view["steps"])
    # A reply recorded before the filesystem failed was never requested again.
    for turn in range(sum(1 for s in before["steps"] if s["kind"] == "llm")):
        assert llm.requests_for(turn) == 1, turn
    with sqlite3.connect(home.path / "tui-agent.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.both_stores
def test_workspace_deleted_during_a_run_is_an_answer_not_a_crash(
    home: Home, llm: ScriptedLLM
) -> None:
    import shutil

    home.use_server(llm)
    llm.script = [
        Reply("look", [call("list_dir", {})]),
        Reply("write", [call("write_file", {"path": "notes/a.txt", "content": "x"})], delay_s=1.5),
        Reply("shell", [call("run_shell", {"command": "touch made-it"})]),
        Reply("the workspace is gone; stopping"),
    ]
    run_id = home.start(
        "lose the workspace", "--auto-approve", "write_local", "--auto-approve", "external_action"
    )
    wait_for(lambda: any(s["kind"] == "tool" for s in home.show(run_id)["steps"]), 30, "list_dir")
    shutil.rmtree(home.workspace)

    view = home.wait_status(run_id, "completed", "failed", "waiting_approval", timeout=60)
    assert view["status"] == "completed", view
    results = [s["result"] for s in view["steps"] if s["kind"] == "tool"]
    assert len(results) == 3
    assert all("no longer exists" in r for r in results[1:]), results
    assert not home.workspace.exists()  # no tool re-created it


@pytest.mark.both_stores
def test_a_run_let_go_during_a_slow_model_reply_does_not_end_its_executor(
    home: Home, llm: ScriptedLLM
) -> None:
    """A run taken from its executor (its claim's epoch moved on) while a model reply is
    slow: the executor lets it go, but its thread waits on a request that ends by its own
    timeout, so it is not taken for stuck (that would end the executor and every run in
    it): the executor lives on and the run completes, its turn asked again by the
    executor that took it over."""
    home.configure(FAST_CONFIG)
    home.use_server(llm)
    llm.script = [Reply("the answer", delay_s=8.0)]
    run_id = home.start("slow model")
    wait_for(lambda: len(llm.requests) >= 1, 20, "the model request")
    home.execute("UPDATE runs SET epoch = epoch + 1 WHERE id = ?", (run_id,))
    view = home.wait_status(run_id, "completed", "failed", timeout=60)
    assert view["status"] == "completed" and view["result"] == "the answer", view
    log = (home.path / "logs" / "executor.log").read_text()
    assert "lease lost; ending its work here" in log, "the run was never let go of"
    assert "did not stop within" not in log, log[-2000:]


@pytest.mark.both_stores
def test_an_executor_stuck_holding_the_write_lock_is_still_killed(
    home: Home, llm: ScriptedLLM
) -> None:
    """An executor's run thread stops inside a write transaction. On SQLite it holds the
    write lock, so its heartbeats stop behind it: the supervisor must still see the silence
    and kill it, though its own writes may wait behind that lock. On PostgreSQL the run's
    row is locked until the server ends the idle transaction (after the store's timeout,
    2 s here); the executor lets the run go, its heartbeats go on, and the thread that
    cannot be stopped ends the executor once it outlasted every bound of what it could be
    waiting on (12 s with these timeouts). Either way the run then goes on, its write done
    once."""
    from tui_agent.supervisor.lock import pid_alive

    home.configure(FAST_CONFIG + "busy_timeout_s = 1\nllm_timeout_s = 1\ntool_timeout_s = 1\n")
    home.use_server(llm)
    llm.script = [Reply("Writing.", [call("write_file", {"path": "a.txt", "content": "A"})])]
    llm.script.append(Reply("done"))
    home.arm("txn.finish_tool=pause@1")
    run_id = home.start("stuck", "--auto-approve", "write_local")
    stuck = home.marker("txn.finish_tool")  # paused inside finish_tool's transaction
    stuck_at = time.monotonic()
    wait_for(lambda: not pid_alive(stuck), 30, "the stuck executor to be killed or to end")
    took = time.monotonic() - stuck_at
    if home.backend == "sqlite":
        assert took < 2.0 + 1.0 + 2.0  # lease_s, a blocked write, slack
    else:  # let go (¾ lease_s), a heartbeat, patience (lease_s + 2·1 s + 2·4 s), slack
        assert took < 1.5 + 0.3 + 12.0 + 4.0
    view = home.wait_status(run_id, "completed", timeout=30)
    assert (home.workspace / "a.txt").read_text() == "A" and view["result"] == "done"
