"""Errors the CLI and UI turn into one readable line (never a traceback)."""

from __future__ import annotations


class TuiAgentError(Exception):
    """Base for errors with a message meant for a person."""

    exit_code = 2


class BadInput(TuiAgentError):
    """The user asked for something malformed; nothing was written."""

    exit_code = 2


class UnknownRun(TuiAgentError):
    """No run matches the id or prefix given."""

    exit_code = 3


class InvalidTransition(TuiAgentError):
    """The run's status does not allow the requested action."""

    exit_code = 2


class ApprovalTimedOut(TuiAgentError):
    """Decided too late: the approval's deadline had passed, so it was recorded as denied."""

    exit_code = 1


class StoreError(TuiAgentError):
    """The database cannot be used (corrupt, newer schema, unwritable)."""

    exit_code = 2


class StoreUnavailable(TuiAgentError):
    """The database cannot take a write right now (locked too long, disk full, read-only).

    Nothing was half-written; the same action can be tried again later.
    """

    exit_code = 1


class HomeUnwritable(StoreUnavailable):
    """A file the background processes need cannot be written (read-only or full home)."""


class LeaseLost(Exception):
    """This executor no longer owns the run; it must stop without writing."""
