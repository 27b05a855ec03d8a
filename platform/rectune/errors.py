"""Errors that are the user's input, not a bug: the CLI prints them as one line and exits 2."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable


def shorten(text: str, limit: int = 160) -> str:
    """``text`` on one line (whitespace runs as one space), cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def first_line(error: BaseException | str, limit: int = 160) -> str:
    """The first non-empty line of an error's message (an exception without one: its type name; empty
    text: ""), cut to ``limit`` characters: what a one-line message quotes of another library's error,
    which may hold a whole source line or a traceback."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return shorten(text.splitlines()[0], limit)


def closest(name: str, options: Iterable[str]) -> str | None:
    """The option most like ``name`` (a likely misspelling), or None."""
    hits = difflib.get_close_matches(name, [str(o) for o in options], n=1)
    return hits[0] if hits else None


class RectuneError(Exception):
    """Bad input: a missing file, a misspelt column or key, a value out of range.

    The message is one line that names the file, field or key and says what was expected.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class DataError(RectuneError):
    """A data file or dataset that does not have the expected content."""

    @classmethod
    def missing_column(cls, path: str | Path, column: str, present: Iterable[str], what: str,
                       expected: str = "") -> "DataError":
        """``<path>: column '<column>': missing <what> (found '<x>': misspelt?)<expected>``."""
        close = closest(column, present)
        hint = f" (found '{close}': misspelt?)" if close else ""
        return cls.at(path, f"missing {what}{hint}{expected}", column)

    @classmethod
    def at(cls, path: str | Path, what: str, column: str | None = None) -> "DataError":
        """Build ``<path>: column '<column>': <what>``."""
        where = f"{path}"
        if column is not None:
            where += f": column '{column}'"
        return cls(f"{where}: {what}")


class ConfigError(RectuneError):
    """An unknown key, a bad value or an impossible combination in a configuration."""
