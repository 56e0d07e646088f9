"""tui-agent: durable, supervised AI agent runs with a terminal UI."""

__version__ = "0.1.0"
