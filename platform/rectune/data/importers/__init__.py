"""Importers: one per source format, each a plug-in of the ``IMPORTERS`` registry.

An importer is a dataclass whose fields are its options (``metadata["help"]`` documents each; the
CLI turns them into ``rectune data import NAME`` options) and whose ``build(src)`` returns the
dataset in memory (:class:`~rectune.data.prepared.DatasetTables`); writing it is not its concern.
"""

from __future__ import annotations

from pathlib import Path

from rectune.data.prepared import DatasetTables, PreparedDataset, check_output_free
from rectune.registry import Registry

IMPORTERS: Registry[type] = Registry("importer")


class Importer:
    """Base class: subclasses are dataclasses registered in IMPORTERS."""

    def build(self, src: Path) -> DatasetTables:  # pragma: no cover - interface
        raise NotImplementedError


def run_import(name: str, src: str | Path, out: str | Path, overwrite: bool = False, **options) -> PreparedDataset:
    """Import ``src`` with the importer ``name`` and write the prepared dataset to ``out``."""
    cls = IMPORTERS.get(name)
    check_output_free(out, overwrite)
    importer = cls(**options)
    return importer.build(Path(src)).write(out, overwrite=overwrite)


# register the built-in importers
from rectune.data.importers import csv_mtl, recbole, rechorus  # noqa: E402,F401
