"""A real, throwaway PostgreSQL cluster from the machine's own binaries (Debian's
`postgresql` package), started once per test session on a free port; each test gets a
database of its own. No mocks: the server is the one a team would run.

The server refuses to run as root, so as root it runs as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest


def find_bindir() -> Path | None:
    """The newest installed server's bin directory (or `pg_ctl` on PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _major(path: str) -> int:
    try:
        return int(Path(path).parent.parent.name)
    except ValueError:
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """initdb + pg_ctl on a free port; `stop()` is an immediate shutdown (no waiting)."""

    def __init__(
        self, bindir: Path, *, listen: str = "127.0.0.1", trust_net: str | None = None
    ) -> None:
        self.bindir = bindir
        self.listen = listen
        self.trust_net = trust_net  # another network allowed in (the multi-machine harness)
        self.base = Path(tempfile.mkdtemp(prefix="tui-agent-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        self._as: list[str] = []
        if os.geteuid() == 0:
            uid = pwd.getpwnam("postgres").pw_uid
            os.chown(self.base, uid, -1)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        proc = subprocess.run(
            [*self._as, *argv], capture_output=True, text=True, timeout=120, cwd=self.base
        )
        if proc.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {proc.stderr}{proc.stdout}\n{log}")

    def start(self) -> Cluster:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        )
        if self.trust_net:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {self.trust_net} trust\n")
        self.resume()
        return self

    def url(self, database: str = "postgres", host: str | None = None) -> str:
        return f"postgresql://postgres@{host or self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its psycopg URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def pause(self) -> None:
        """Stop the server (fast: sessions are cut), keeping its data: an outage."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start it again on the same port after `pause`."""
        options = (
            f"-k {self.base} -p {self.port} -c listen_addresses={self.listen} "
            "-c max_connections=400 -c shared_buffers=64MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        keep = os.environ.get("TUI_AGENT_TEST_PG_LOG")  # where to keep the server's log
        if keep and self.log.exists():
            shutil.copy(self.log, keep)
        with contextlib.suppress(Exception):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


_CLUSTER: Cluster | None = None


def cluster() -> Cluster:
    """The session's cluster, started on first use; without PostgreSQL the test is skipped
    (in CI it fails: `.ci/run` installs it)."""
    global _CLUSTER
    if _CLUSTER is None:
        bindir = find_bindir()
        if bindir is None:
            message = "PostgreSQL binaries not installed (apt-get install postgresql)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        _CLUSTER = Cluster(bindir).start()
    return _CLUSTER


def stop_cluster() -> None:
    global _CLUSTER
    if _CLUSTER is not None:
        _CLUSTER.stop()
        _CLUSTER = None


def connect_store(url: str, **kwargs: Any) -> Any:
    """A psycopg connection to a tui-agent store, its schema first on the search path."""
    import psycopg

    from tui_agent.store.postgres import SCHEMA

    return psycopg.connect(url, options=f"-c search_path={SCHEMA}", **kwargs)
