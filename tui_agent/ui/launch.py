"""Open the TUI (placeholder entry until the app lands: starts the supervisor and lists runs)."""
