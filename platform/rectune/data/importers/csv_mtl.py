"""Multi-task CSV benchmarks: Ali-CCP and AliExpress, as their preprocessed CSV releases ship them.

Both are impression logs with a click -> conversion funnel, already label-encoded:

- **Ali-CCP** (``aliccp``): a folder with a train, a valid (``val``) and a test CSV; labels
  ``click`` and ``purchase``; 23 sparse columns (``101`` the user, ``205`` the item, ``1xx`` and
  ``*_14`` user side, ``2xx`` item side, the others context) and 8 dense ``D*`` columns.
- **AliExpress** (``aliexpress``): a folder with a train and a test CSV; ``search_id``, labels
  ``click`` and ``conversion``; ``categorical_1..16`` sparse, ``numerical_1..63`` dense; no user or
  item id. The valid split is carved from train by a seeded random fraction of its search ids, so
  that no search is cut between two splits.

Every row of the source is one row of the prepared dataset, in source order; nothing is sampled.
Sparse values are re-coded 1..K over the union of all files (ascending raw order; 0 is padding and
the unknown id, so a raw 0 gets a code >= 1). Dense values are kept as float32. Field names are
the source column names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from rectune.data.importers import IMPORTERS, Importer
from rectune.data.importers.common import Vocab, binary_labels, numeric_column, read_delimited, require_columns
from rectune.data.prepared import DatasetTables
from rectune.data.schema import SPLITS, Field, Schema
from rectune.errors import ConfigError, DataError

MAX_SCHEMA_VALUES = 10_000
"""Raw values of a sparse field are listed in schema.json only up to this many codes."""


# ---------------------------------------------------------------------------------------------
# what each dataset looks like
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CsvMtlSpec:
    """The layout of one multi-task CSV dataset."""

    title: str
    tasks: tuple[str, ...]
    task_parents: dict[str, str]
    sparse: tuple[str, ...]
    dense: tuple[str, ...]
    side: Callable[[str], str]
    """Side ("user", "item", "context") of a field, from its name."""
    file_patterns: dict[str, str]
    """Split -> the text its file name contains; a split without one is carved from train."""
    meta: tuple[str, ...] = ()
    """Integer columns kept as int64 meta columns (not features)."""
    user_field: str | None = None
    item_field: str | None = None
    item_attributes: tuple[str, ...] = ()
    """Item-side sparse fields written to items.parquet, one value per item."""
    group_column: str | None = None
    """Column whose groups stay whole when valid is carved from train."""

    @property
    def columns(self) -> list[str]:
        return [*self.meta, *self.sparse, *self.dense, *self.tasks]


def _aliccp_side(name: str) -> str:
    base = name[1:] if name.startswith("D") else name  # D109_14 is the weight of 109_14
    if base.endswith("_14") or base.startswith("1"):
        return "user"
    if base.startswith("2"):
        return "item"
    return "context"


ALICCP = CsvMtlSpec(
    title="Ali-CCP",
    tasks=("click", "purchase"),
    task_parents={"purchase": "click"},
    sparse=("101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206", "207", "210",
            "216", "508", "509", "702", "853", "301", "109_14", "110_14", "127_14", "150_14"),
    dense=("D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"),
    side=_aliccp_side,
    file_patterns={"train": "train", "valid": "val", "test": "test"},
    user_field="101",
    item_field="205",
    item_attributes=("206", "207", "210", "216"),
)

ALIEXPRESS = CsvMtlSpec(
    title="AliExpress",
    tasks=("click", "conversion"),
    task_parents={"conversion": "click"},
    sparse=tuple(f"categorical_{i}" for i in range(1, 17)),
    dense=tuple(f"numerical_{i}" for i in range(1, 64)),
    side=lambda name: "context",
    file_patterns={"train": "train", "test": "test"},
    meta=("search_id",),
    group_column="search_id",
)


# ---------------------------------------------------------------------------------------------
# the shared implementation
# ---------------------------------------------------------------------------------------------
def find_files(src: Path, spec: CsvMtlSpec) -> dict[str, Path]:
    """The CSV file of each split in the folder ``src``, found by what its name contains."""
    if not src.is_dir():
        raise DataError.at(src, f"not a folder; expected a {spec.title} folder with "
                                f"{_expected_files(spec)}")
    csvs = sorted(p for p in src.iterdir() if p.is_file() and p.name.lower().endswith(".csv"))
    found: dict[str, Path] = {}
    for split, pattern in spec.file_patterns.items():
        hits = [p for p in csvs if pattern in p.name.lower()]
        listing = ", ".join(p.name for p in csvs) or "no CSV file"
        if not hits:
            raise DataError.at(src, f"missing file: expected a CSV file whose name contains '{pattern}' "
                                    f"(the {split} split); found {listing}")
        if len(hits) > 1:
            raise DataError.at(src, f"several files for the {split} split ({', '.join(p.name for p in hits)}); "
                                    f"expected one CSV file whose name contains '{pattern}'")
        found[split] = hits[0]
    used = list(found.values())
    for p in used:
        if used.count(p) > 1:
            raise DataError.at(p, f"name matches more than one split; expected one CSV file per split "
                                  f"({_expected_files(spec)})")
    return found


def _expected_files(spec: CsvMtlSpec) -> str:
    return ", ".join(f"one CSV whose name contains '{pat}'" for pat in spec.file_patterns.values())


@dataclass
class _Part:
    """One source file, parsed: sparse columns still raw (int64)."""

    path: Path
    raw_sparse: dict[str, np.ndarray]
    dense: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    meta: dict[str, np.ndarray]
    n: int
    ignored: list[str]

    def take(self, rows: np.ndarray) -> "_Part":
        sub = lambda d: {k: v[rows] for k, v in d.items()}  # noqa: E731
        return _Part(self.path, sub(self.raw_sparse), sub(self.dense), sub(self.labels), sub(self.meta),
                     len(rows), self.ignored)


def read_part(path: Path, spec: CsvMtlSpec) -> _Part:
    """Read and check one CSV; every problem is a one-line DataError naming the file and column."""
    frame = read_delimited(path, sep=",")
    frame.columns = [str(c).strip() for c in frame.columns]
    require_columns(frame, spec.columns, path)
    labels = {t: binary_labels(frame, t, path) for t in spec.tasks}
    for child, parent in spec.task_parents.items():
        bad = (labels[child] == 1) & (labels[parent] == 0)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError.at(
                path, f"{int(bad.sum())} row(s) with {child}=1 but {parent}=0 (first at data row {first + 1}); "
                f"expected {child} only after {parent}", child,
            )
    dense = {}
    for c in spec.dense:
        x = numeric_column(frame, c, path).astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise DataError.at(path, "value(s) beyond the float32 range; expected finite numbers", c)
        dense[c] = x
    return _Part(
        path=path,
        raw_sparse={c: numeric_column(frame, c, path, integer=True) for c in spec.sparse},
        dense=dense,
        labels=labels,
        meta={c: numeric_column(frame, c, path, integer=True) for c in spec.meta},
        n=len(frame),
        ignored=[c for c in frame.columns if c not in set(spec.columns)],
    )


def carve_valid(train: _Part, spec: CsvMtlSpec, fraction: float, seed: int) -> tuple[_Part, _Part]:
    """Split train into (train, valid): a seeded random ``fraction`` of its groups goes to valid."""
    groups = train.meta[spec.group_column]
    uniq = np.unique(groups)
    if len(uniq) < 2:
        raise DataError.at(train.path, f"{len(uniq)} distinct value(s); expected at least 2 to carve a "
                                       f"valid split from train", spec.group_column)
    n_valid = min(max(int(round(fraction * len(uniq))), 1), len(uniq) - 1)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(uniq, size=n_valid, replace=False)
    in_valid = np.isin(groups, chosen)
    return train.take(np.flatnonzero(~in_valid)), train.take(np.flatnonzero(in_valid))


def _item_table(spec: CsvMtlSpec, vocabs: dict[str, Vocab], parts: list[tuple[str, _Part]],
                codes: dict[str, dict[str, np.ndarray]]) -> tuple[pa.Table, dict[str, int]]:
    """One row per item code: its raw id and the attribute codes that co-occur with it most often.

    Also returns, per attribute, how many items were seen with more than one value of it.
    """
    if spec.item_field is None:
        return pa.table({"item_id": pa.array([], pa.int32())}), {}
    ivocab = vocabs[spec.item_field]
    n_items = ivocab.size - 1
    items = np.concatenate([codes[s][spec.item_field] for s, _ in parts])
    position = np.arange(len(items))
    cols: dict[str, pa.Array] = {
        "item_id": pa.array(np.arange(1, n_items + 1, dtype=np.int32)),
        "raw_" + spec.item_field: pa.array(ivocab.values.astype(np.int64)),
    }
    conflicts: dict[str, int] = {}
    for attr in spec.item_attributes:
        values = np.concatenate([codes[s][attr] for s, _ in parts])
        pairs = pd.DataFrame({"item": items, "attr": values, "pos": position})
        g = pairs.groupby(["item", "attr"], sort=False).agg(n=("pos", "size"), first=("pos", "min")).reset_index()
        conflicts[attr] = int((g["item"].value_counts() > 1).sum())
        g = g.sort_values(["item", "n", "first"], ascending=[True, False, True]).drop_duplicates("item")
        arr = np.zeros(n_items + 1, np.int32)
        arr[g["item"].to_numpy()] = g["attr"].to_numpy()
        cols[attr] = pa.array(arr[1:])
    return pa.table(cols), conflicts


def build_tables(src: Path, spec: CsvMtlSpec, importer: str, options: dict,
                 valid_fraction: float | None = None, seed: int | None = None) -> DatasetTables:
    files = find_files(src, spec)
    read = {s: read_part(p, spec) for s, p in files.items()}
    source_rows = {s: read[s].n for s in files}
    if "valid" not in read:
        read["train"], read["valid"] = carve_valid(read["train"], spec, valid_fraction, seed)
    parts = [(s, read[s]) for s in SPLITS]

    vocabs = {c: Vocab(np.sort(pd.unique(np.concatenate([pd.unique(p.raw_sparse[c]) for _, p in parts]))))
              for c in spec.sparse}  # pandas' hash table: many times faster than np.unique on ids
    codes = {s: {c: vocabs[c].encode(p.raw_sparse[c]) for c in spec.sparse} for s, p in parts}

    splits: dict[str, pa.Table] = {}
    for s, p in parts:
        cols: dict[str, pa.Array] = {}
        for c in spec.sparse:
            cols[c] = pa.array(codes[s][c])
        for c in spec.dense:
            cols[c] = pa.array(p.dense[c])
        for t in spec.tasks:
            cols[t] = pa.array(p.labels[t])
        for m in spec.meta:
            cols[m] = pa.array(p.meta[m].astype(np.int64))
        splits[s] = pa.table(cols)

    fields = []
    for c in spec.sparse:
        v = vocabs[c]
        listed = c not in (spec.user_field, spec.item_field) and len(v.values) <= MAX_SCHEMA_VALUES
        fields.append(Field(c, "sparse", side=spec.side(c), vocab_size=v.size,
                            values=v.json_values() if listed else None))
    fields += [Field(c, "dense", side=spec.side(c)) for c in spec.dense]

    items, conflicts = _item_table(spec, vocabs, parts, codes)
    ignored = sorted({c for _, p in parts for c in p.ignored})
    file_desc = ", ".join(f"{s} {p.name} ({source_rows[s]:,} rows)" for s, p in files.items())
    if "valid" in files:
        split_desc = "The train, valid and test splits are the source files, rows in source order."
    else:
        split_desc = (
            f"The source has no valid file: valid is a seeded random {valid_fraction:g} of train's distinct "
            f"{spec.group_column} values (numpy default_rng({seed}).choice, at least 1), every row of a chosen "
            f"{spec.group_column} with it; train keeps the rest, rows in source order. Test is the test file."
        )
    derivation = (
        f"One row per source row; nothing sampled. {split_desc} Sparse columns: raw integers re-coded 1..K "
        f"in ascending raw order over the union of all files (0 = padding/unknown, so a raw 0 has a code >= 1); "
        f"raw values listed in 'values' for fields of at most {MAX_SCHEMA_VALUES:,} codes, except the user and "
        f"item fields. Dense columns: float32 as read. Labels {', '.join(spec.tasks)} checked to be 0/1, "
        + ", ".join(f"{c} only after {p}" for c, p in spec.task_parents.items()) + "."
    )
    if spec.item_field is not None:
        derivation += (
            f" items.parquet: one row per {spec.item_field} code with raw_{spec.item_field} and the item "
            f"attributes {', '.join(spec.item_attributes)}, each the value seen most often with the item "
            f"(ties: the first seen, in train, valid, test order); items.items_with_several_values counts, per "
            f"attribute, the items seen with more than one value."
        )
    else:
        derivation += f" {spec.title} has no item id: items.parquet is empty (an item_id column, no rows)."
    if ignored:
        derivation += f" Columns ignored: {', '.join(ignored)}."
    schema = Schema(
        name=src.name,
        tasks=list(spec.tasks),
        fields=fields,
        meta_columns=list(spec.meta),
        user_field=spec.user_field,
        item_field=spec.item_field,
        task_parents=dict(spec.task_parents),
        items=({"items_with_several_values": conflicts} if spec.item_field is not None
               else {"note": f"{spec.title} has no item id; no item rows"}),
        source=f"{spec.title} CSV folder {src.name}: {file_desc}",
        derivation=derivation,
        seed=seed,
        provenance={"importer": importer, "src": str(src), "options": options,
                    "files": {s: p.name for s, p in files.items()}},
    )
    return DatasetTables(schema, splits, items)


# ---------------------------------------------------------------------------------------------
# the two importers
# ---------------------------------------------------------------------------------------------
@IMPORTERS.register("aliccp")
@dataclass
class AliCCPImporter(Importer):
    """Ali-CCP CSV folder (label-encoded): click, purchase, 23 sparse and 8 dense columns.

    The files are found by name: one CSV each containing 'train', 'val' and 'test'. Field 101 is
    the user, 205 the item; items.parquet holds each item's 206, 207, 210 and 216.
    """

    def build(self, src: Path) -> DatasetTables:
        return build_tables(src, ALICCP, "aliccp", {})


@IMPORTERS.register("aliexpress")
@dataclass
class AliExpressImporter(Importer):
    """AliExpress CSV folder: search_id, 16 categorical, 63 numerical, click, conversion.

    The files are found by name (one CSV each containing 'train' and 'test'); valid is carved from
    train by a seeded random fraction of its search ids. search_id is kept as a meta column.
    """

    valid_fraction: float = field(default=0.1, metadata={
        "help": "fraction of train's search ids moved to the valid split"})
    seed: int = field(default=2026, metadata={"help": "seed of the valid split's draw"})

    def __post_init__(self) -> None:
        if not 0 < self.valid_fraction < 1:
            raise ConfigError(f"--valid-fraction {self.valid_fraction}: expected a fraction strictly between 0 and 1")

    def build(self, src: Path) -> DatasetTables:
        return build_tables(src, ALIEXPRESS, "aliexpress",
                            {"valid_fraction": self.valid_fraction, "seed": self.seed},
                            valid_fraction=self.valid_fraction, seed=self.seed)
