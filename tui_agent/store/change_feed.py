"""How a client learns that the store changed, without blind polling: the change feed the
service offers the TUI (and, later, the HTTP API).

SQLite: every commit of another process writes the `-wal` file, so the database's
directory is watched (inotify through watchfiles), filtered to the database's files; the
`-wal` is deleted and re-created by checkpoints, so a watch on the file itself would go
silent. A cheap stat fingerprint is the safety net where file events do not arrive
(network filesystems). A PostgreSQL store would offer the same two calls over
LISTEN/NOTIFY.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path


class SqliteChangeFeed:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    async def changes(self) -> AsyncIterator[None]:
        """Yields (coalesced) each time another process may have committed."""
        from watchfiles import awatch

        names = {self.db_path.name, f"{self.db_path.name}-wal"}
        async for _ in awatch(
            self.db_path.parent,
            watch_filter=lambda _change, path: Path(path).name in names,
            debounce=100,
            step=10,
            force_polling=False,  # polling misses commits within the same second
            recursive=False,
        ):
            yield None

    def token(self) -> tuple[int, ...]:
        """Changes whenever the database or its WAL was written (size and mtime)."""
        parts: list[int] = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(f"{self.db_path}{suffix}")  # a stat takes no descriptor
                parts += [st.st_mtime_ns, st.st_size]
            except OSError:
                parts += [0, 0]
        return tuple(parts)

    def size(self) -> int:
        """Bytes on disk of the database and its write-ahead log (the service shows the
        database's own size instead: `Reader.sqlite_bytes`)."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.stat(f"{self.db_path}{suffix}").st_size
            except OSError:
                continue
        return total
