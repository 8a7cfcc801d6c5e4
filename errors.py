"""The errors every stage shares: the layout, synthesis and evaluation stages and the CLI import them from here."""

from __future__ import annotations


class ModelNotAvailableError(OSError):
    """The weights could not be loaded; the message says where we looked and how to fix it."""


class CLIError(ValueError):
    """A user error the command reports in one line and exit code 2."""


class InputError(ValueError):
    """An argument a caller gave is wrong (a method option, a size, token indices, a layout the method cannot use);
    the message names the argument and the fix. The CLI and the web editor report it in one line; any other
    ValueError is our bug and keeps its traceback."""
