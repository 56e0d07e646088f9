"""Persistence: the only package that knows about tables and SQL."""

from tui_agent.store.run_store import RunStore, open_store

__all__ = ["RunStore", "open_store"]
