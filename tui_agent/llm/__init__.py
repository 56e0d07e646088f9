"""Model adapters. Only `openai_client` imports `openai`, and only when a run needs it."""
