"""The service speaks the CLI's words (`--max-steps`); the HTTP API and the MCP server say
their own field names instead."""

from __future__ import annotations

_FIELDS = {
    "--max-steps": "max_steps",
    "--max-tokens": "max_llm_tokens",
    "--max-wall-time": "max_wall_time_s",
    "--max-context-tokens": "max_context_tokens",
    "--auto-approve": "auto_approve",
    "--sandbox": "sandbox",
    "--queue": "queue",
    "--model": "model",
    "--workspace": "workspace",
    "--callback-url": "callback_url",
    "--key": "Idempotency-Key",
}


def in_field_names(message: str) -> str:
    for flag, name in _FIELDS.items():
        message = message.replace(flag, name)
    return message.replace("(leave it out for the default model)", "(leave it out for the default)")
