"""What a tool is, and how a model's raw call becomes validated arguments (or an error)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_agent.domain.models import Risk, StatePatch


class ToolInputError(Exception):
    """The call cannot run as written; the message goes back to the model as the result."""


class CallInDoubt(Exception):
    """The call may or may not have taken effect (an MCP server died during it): no result
    is recorded, and its step is left open, as a killed executor leaves it. The message
    says why (`the MCP server NAME crashed`)."""


@dataclass
class ToolContext:
    workspace: Path
    timeout_s: float
    read_artifact: Callable[[str], bytes | None]
    cancel: threading.Event = field(default_factory=threading.Event)
    # The executor is stopping (`supervisor stop`): a long command ends now, not in 20 s.
    stop: threading.Event = field(default_factory=threading.Event)
    sandbox: str = "workspace"
    # Marks every process the call starts (tools/processes.py), so none outlives it.
    call_mark: str = ""
    # Never visible to a command: tui-agent's home and its database files.
    private: tuple[Path, ...] = ()
    # Called with a command's output so far while it runs (the live view; never recorded).
    on_output: Callable[[str], None] | None = None


@dataclass(frozen=True)
class ToolOutput:
    text: str
    patch: StatePatch | None = None
    # The call ran but failed (a command that timed out or was interrupted): an error step.
    failed: bool = False
    # A file the call wrote: listed in the agent state's artifacts.
    produced: dict[str, Any] | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    risk: Risk
    idempotent: bool
    description: str
    parameters: dict[str, Any]
    run: Callable[[ToolContext, dict[str, Any]], ToolOutput]

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-calling description."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
    "boolean": (bool,),
}


def parse_arguments(tool: Tool, raw: str) -> dict[str, Any]:
    """Check a raw JSON argument string against the tool's schema; ToolInputError if wrong."""
    try:
        args = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ToolInputError(
            f"arguments are not valid JSON ({exc.msg}); send a JSON object"
        ) from None
    if not isinstance(args, dict):
        raise ToolInputError("arguments must be a JSON object")
    props: dict[str, Any] = tool.parameters.get("properties", {})
    unknown = sorted(set(args) - set(props))
    if unknown and not tool.parameters.get("additionalProperties"):
        raise ToolInputError(f"unknown arguments for {tool.name}: {', '.join(unknown)}")
    for name in tool.parameters.get("required", []):
        if name not in args:
            raise ToolInputError(f"{tool.name} needs the argument {name!r}")
    for name, value in args.items():
        spec = props.get(name)
        if not isinstance(spec, dict) or not isinstance(spec.get("type", ""), str):
            continue  # an MCP server's schema may say more than we check: the server does
        expected = _TYPES.get(spec.get("type", ""), (object,))
        wrong_bool = isinstance(value, bool) and spec.get("type") in ("integer", "number")
        if not isinstance(value, expected) or wrong_bool:
            raise ToolInputError(f"{tool.name}: {name!r} must be of type {spec.get('type')}")
        if "minimum" in spec and value < spec["minimum"]:
            raise ToolInputError(f"{tool.name}: {name!r} must be at least {spec['minimum']}")
    return args


class ToolRegistry:
    """The built-in tools, and those `more` offers at each ask (MCP servers' tools, which
    come and go with their servers)."""

    def __init__(self, tools: list[Tool], more: Callable[[], list[Tool]] | None = None) -> None:
        self._tools = {t.name: t for t in tools}
        self._more = more

    def _all(self) -> dict[str, Tool]:
        if self._more is None:
            return self._tools
        extra = {t.name: t for t in self._more() if t.name not in self._tools}
        return {**self._tools, **extra}

    def get(self, name: str) -> Tool | None:
        return self._all().get(name)

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self._all().values()]

    def names(self) -> list[str]:
        return list(self._all())
