"""The prepared-dataset format and the ways to make one (synthetic world, importers)."""

from rectune.data.prepared import (
    DatasetTables,
    PreparedDataset,
    open_dataset,
    write_dataset,
)
from rectune.data.schema import FIELD_KINDS, SPLITS, Field, Schema

__all__ = [
    "DatasetTables",
    "PreparedDataset",
    "open_dataset",
    "write_dataset",
    "Field",
    "Schema",
    "FIELD_KINDS",
    "SPLITS",
]
