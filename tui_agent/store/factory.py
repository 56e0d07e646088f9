"""One place that picks the engine: SQLite in the home (or at `sqlite:///PATH`), or
PostgreSQL when `TUI_AGENT_DB_URL` names one. Callers get an object with the same
transactions, reads and change feed either way (see docs/architecture.md)."""

from __future__ import annotations

from typing import Any

from tui_agent.settings import Settings
from tui_agent.store.db import Database, prepared


def database_for(
    settings: Settings, *, clock: Any = None, pool_size: int = 5, for_people: bool = False
) -> Any:
    """The store these settings name, not opened yet (`prepare()` creates or migrates it).

    `for_people`: the service's store (the app, the CLI, the HTTP API). On PostgreSQL its
    writes wait for another's row lock up to `busy_timeout_s`, as SQLite's do; a lease
    holder's (supervisor, executor) waits end within half a lease, so none outlives it."""
    if settings.db_url is not None:
        from tui_agent.store.postgres import PgDatabase

        return PgDatabase(
            settings.db_url,
            clock,
            pool_size=pool_size,
            timeout_s=max(2.0, settings.lease_s),
            lock_wait_s=settings.busy_timeout_s if for_people else None,
        )
    return Database(
        settings.db_path,
        clock,
        settings.synchronous,
        int(settings.busy_timeout_s * 1000),
        pool_size,
    )


def open_database_for(settings: Settings, *, clock: Any = None, pool_size: int = 5) -> Any:
    """The store, created or migrated and ready for writes."""
    return prepared(database_for(settings, clock=clock, pool_size=pool_size))


def change_feed_for(db: Any) -> Any:
    """How clients follow the store: the WAL watch (SQLite) or LISTEN/NOTIFY (PostgreSQL)."""
    if db.dialect == "postgresql":
        from tui_agent.store.postgres import PgChangeFeed

        return PgChangeFeed(db)
    from tui_agent.store.change_feed import SqliteChangeFeed

    return SqliteChangeFeed(db.path)
