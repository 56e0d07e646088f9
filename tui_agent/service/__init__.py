"""The small API the UI and the CLI use; it hides the store, engine and supervisor."""
