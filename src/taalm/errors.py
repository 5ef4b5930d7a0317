"""One error type for everything the user can fix (bad file, bad option, unknown model).

The CLI prints it as a single line ``taalm: <message>`` and exits with code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class TaalmError(Exception):
    """A user error: the message is one line that names the file, line or option at fault."""


def where(path: object, line: int | None = None) -> str:
    """``file:line`` prefix for error messages."""
    return f"{path}:{line}" if line is not None else f"{path}"
