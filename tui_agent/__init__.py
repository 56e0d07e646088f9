"""tui-agent: durable, supervised AI agent runs with a terminal UI."""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("TUI_AGENT_GUARD_DB"):  # tests: catch any process opening the live database
    from tui_agent.failpoints import guard_database_files as _guard

    _guard(_os.environ["TUI_AGENT_GUARD_DB"], _os.environ["TUI_AGENT_GUARD_DB_LOG"])
