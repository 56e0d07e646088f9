"""Built-in tools, each with a risk level and an idempotency flag, confined to a workspace."""
