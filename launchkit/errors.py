"""Exception types whose messages are meant for the user.

Deep code raises these; the edge (the CLI, an HTTP handler) turns them into an exit status or
an HTTP error. A message says what was wrong, what was expected, and how to fix it.
"""

from __future__ import annotations


class LaunchkitError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(LaunchkitError):
    """Options that contradict each other or name things that do not exist."""

    exit_code = 2


class PlanError(UsageError):
    """A launch plan that cannot be satisfied on this machine (exit status 2, like bad usage)."""
