"""The exit codes scripts may branch on (documented in the README); one place for all."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNKNOWN_RUN, EXIT_NEEDS_PERSON = 0, 1, 2, 3, 4
