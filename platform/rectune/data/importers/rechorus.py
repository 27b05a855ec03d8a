"""ReChorus format: tab-separated ``train.csv`` (and ``dev.csv`` / ``test.csv`` if present) with
``user_id, item_id, time``, plus ``item_meta.csv`` with ``item_id``, ``i_*`` item attributes and
``r_*`` relation columns whose cells are item lists such as ``[12, 7]``.

The interactions of every file are pooled (pre-drawn ``neg_items`` columns are ignored) and split
again by the chosen rule, so that all importers share one recipe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from rectune.data.importers import IMPORTERS
from rectune.data.importers.common import (
    INT64_MAX, INT64_MIN, Vocab, id_values, numeric_column, quoted, read_delimited, require_columns,
)
from rectune.data.importers.implicit import CLICK, ImplicitImporter, Interactions, SideFeatures
from rectune.data.prepared import DatasetTables
from rectune.data.schema import Field
from rectune.errors import DataError

INTER_FILES = ("train.csv", "dev.csv", "test.csv")
_LIST = re.compile(r"^\s*\[\s*((?:-?\d+(?:\s*,\s*|\s+))*(?:-?\d+)?)\s*,?\s*\]\s*$")


def parse_id_list(cell: object, where: Path, column: str, row: int) -> list[int]:
    """Item ids of a relation cell such as ``[12, 7]``; an id beyond int64 cannot be a known item."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)) or cell == "":
        return []
    m = _LIST.match(str(cell))
    if not m:
        raise DataError.at(where, f"unparsable value {quoted(cell, 40)} at data row {row + 1}; "
                                  f"expected a list like [12, 7]", column)
    ids = []
    for x in m.group(1).replace(",", " ").split():
        if len(x.lstrip("-")) > 19 or not INT64_MIN <= int(x) <= INT64_MAX:
            raise DataError.at(where, f"item {quoted(x)} at data row {row + 1} is not a known item id "
                                      f"(beyond the int64 range)", column)
        ids.append(int(x))
    return ids


@IMPORTERS.register("rechorus")
@dataclass
class ReChorusImporter(ImplicitImporter):
    """ReChorus folder: train.csv (+ dev.csv, test.csv) and item_meta.csv with r_* relations."""

    split: str = field(default="loo", metadata={
        "help": "'loo' (per user, leave-last-out) or 'time:TRAIN,VALID,TEST' (global by time)"})

    def build(self, src: Path) -> DatasetTables:
        if not src.is_dir():
            raise DataError.at(src, "not a folder; expected a ReChorus folder with train.csv")
        frames = []
        for name in INTER_FILES:
            p = src / name
            if not p.is_file():
                if name == "train.csv":
                    raise DataError.at(p, "missing file: expected the interactions (user_id, item_id, time)")
                continue
            f = read_delimited(p, sep="\t")
            require_columns(f, ["user_id", "item_id", "time"], p)
            frames.append(pd.DataFrame({
                "user": numeric_column(f, "user_id", p, integer=True),
                "item": numeric_column(f, "item_id", p, integer=True),
                "time": numeric_column(f, "time", p, integer=True),
            }))
        inter = pd.concat(frames, ignore_index=True)

        meta_path = src / "item_meta.csv"
        meta = None
        if meta_path.is_file():
            meta = read_delimited(meta_path, sep="\t", dtype=str, keep_default_na=False)
            require_columns(meta, ["item_id"], meta_path)
            meta_items = numeric_column(meta, "item_id", meta_path, integer=True)
        uvocab = Vocab.fit(inter.user)
        ivocab = Vocab.fit(inter.item, meta_items if meta is not None else [])
        n_item_codes = ivocab.size
        all_items = np.arange(1, n_item_codes, dtype=np.int32)

        item_fields: list[Field] = []
        item_values: dict[str, pa.Array] = {}
        relations = None
        icols: dict[str, pa.Array] = {"item_id": pa.array(all_items), "raw_item_id": pa.array(ivocab.json_values())}
        if meta is not None:
            mcodes = ivocab.encode(meta_items)
            for col in meta.columns:
                if col.startswith("i_"):
                    name = col[2:]
                    (vals,) = id_values(meta[col])
                    as_num = pd.to_numeric(meta[col], errors="coerce")
                    if as_num.notna().all() and as_num.dtype.kind == "f" and (as_num.abs() < 2**53).all():
                        vals = as_num.to_numpy()  # decimal numbers: exact in float64, ordered as numbers
                    vocab = Vocab.fit(vals)
                    arr = np.zeros(n_item_codes, np.int32)
                    arr[mcodes] = vocab.encode(vals)
                    item_fields.append(Field(name, "sparse", side="item", vocab_size=vocab.size, values=vocab.json_values()))
                    item_values[name] = pa.array(arr)
                    icols[name] = pa.array(arr[1:])
            heads, rels, tails = [], [], []
            for col in meta.columns:
                if not col.startswith("r_"):
                    continue
                rel = col[2:]
                for row, (h, cell) in enumerate(zip(mcodes, meta[col].to_numpy())):
                    lst = parse_id_list(cell, meta_path, col, row)
                    if not lst:
                        continue
                    t = ivocab.encode(np.asarray(lst, dtype=np.int64))
                    if (t == 0).any():
                        bad = lst[int(np.flatnonzero(t == 0)[0])]
                        raise DataError.at(meta_path, f"item {bad} at data row {row + 1} is not a known item id", col)
                    t = pd.unique(t[t != h])[: self.max_neighbors]
                    heads.append(np.full(len(t), h, np.int32))
                    tails.append(t.astype(np.int32))
                    rels.append(np.full(len(t), rel, dtype=object))
            if heads:
                relations = pa.table({
                    "head_item_id": pa.array(np.concatenate(heads)),
                    "relation": pa.array(np.concatenate(rels).tolist(), pa.string()),
                    "tail_item_id": pa.array(np.concatenate(tails)),
                })

        interactions = Interactions(
            users=uvocab.encode(inter.user.to_numpy()), items=ivocab.encode(inter.item.to_numpy()),
            ts=inter.time.to_numpy(np.int64),
        )
        splits = self.rows(interactions, n_item_codes, SideFeatures([], {}), SideFeatures(item_fields, item_values))
        schema = self.schema(
            src, "ReChorus", [CLICK], uvocab.size, n_item_codes, item_fields,
            tasks_text="click only",
            relations_text=(f"head -> each id of its r_* list in item_meta.csv, order kept, self-loops and "
                            f"duplicates dropped, first {self.max_neighbors}."),
            options={},
        )
        return DatasetTables(schema, splits, pa.table(icols), None, relations)
