"""Errors that are the user's input, not a bug: the CLI prints them as one line and exits 2."""

from __future__ import annotations

from pathlib import Path


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
    def at(cls, path: str | Path, what: str, column: str | None = None) -> "DataError":
        """Build ``<path>: column '<column>': <what>``."""
        where = f"{path}"
        if column is not None:
            where += f": column '{column}'"
        return cls(f"{where}: {what}")


class ConfigError(RectuneError):
    """An unknown key, a bad value or an impossible combination in a configuration."""
