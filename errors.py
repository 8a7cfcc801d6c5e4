"""The errors every stage shares: the layout, synthesis and evaluation stages and the CLI import them from here."""

from __future__ import annotations


class ModelNotAvailableError(OSError):
    """The weights could not be loaded; the message says where we looked and how to fix it."""


class CLIError(ValueError):
    """A user error the command reports in one line and exit code 2."""
