"""Allow `python -m tui_agent` (used to spawn the supervisor and executors)."""

from tui_agent.cli import main

raise SystemExit(main())
