"""The one exception type for a user's mistake: a bad argument, setting, label or file.

The `nextscale` command prints a `UsageError` as one line and exits with status 2; any other exception (a KeyError,
a ValueError from deep inside the library) is a bug and keeps its traceback. It subclasses ValueError, so callers that
catch ValueError keep working. This module imports nothing, so the command line can use it before torch is loaded.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Something the user gave cannot be used: the message says what and why (never how to disable a check)."""


class UnknownNameError(UsageError, KeyError):
    """A name that is not in a registry (a preset, a schedule): a UsageError that callers may also catch as the
    KeyError a failed look-up has always raised."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
