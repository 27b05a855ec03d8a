"""The prepared dataset on disk: read, check and write it atomically.

A prepared dataset is one folder::

    schema.json        what it holds (see rectune.data.schema)
    train.parquet      one row per impression: row fields, task labels, meta columns (ts)
    valid.parquet
    test.parquet
    items.parquet      item_id, the item-side attributes (codes), the title, text_emb once computed
    users.parquet      optional: user_id and the user-side attributes (codes)
    relations.parquet  optional: head_item_id, relation, tail_item_id (the item graph)

It is written into a hidden temporary folder beside the target and renamed into place at the end,
so an interrupted or failed command never leaves a half dataset behind.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rectune.data.schema import SPLITS, TEXT_EMB_COLUMN, Field, Schema
from rectune.errors import DataError, first_line

ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
RELATIONS_FILE = "relations.parquet"
SCHEMA_FILE = "schema.json"
RELATION_COLUMNS = ("head_item_id", "relation", "tail_item_id")


# ---------------------------------------------------------------------------------------------
# checks shared by the reader and the writer
# ---------------------------------------------------------------------------------------------
def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _check_range(where: str, column: str, what: str, nulls: int, lo, hi, high: int) -> None:
    """Refuse nulls, and a min or max outside [0, ``high``), in an id (``what`` "id") or label
    ("label") column: one message, whether the values were read or come from the file's statistics."""
    expected = f"expected ids in [0, {high})" if what == "id" else "expected labels in {0, 1}"
    if nulls:
        raise DataError.at(where, f"{nulls} null {what}(s); {expected}", column)
    if lo is not None and (lo < 0 or hi >= high):
        bad = lo if lo < 0 else hi
        raise DataError.at(where, f"id {bad} out of vocabulary range; {expected} (vocab_size {high})"
                           if what == "id" else f"label {bad}; {expected}", column)


def _check_values(where: str, column: str, arr: pa.ChunkedArray | pa.Array, what: str, high: int) -> None:
    mm = pc.min_max(arr) if len(arr) else {"min": pa.scalar(None), "max": pa.scalar(None)}
    _check_range(where, column, what, arr.null_count, mm["min"].as_py(), mm["max"].as_py(), high)


def _check_ids(where: str, name: str, arr: pa.ChunkedArray | pa.Array, vocab: int) -> None:
    _check_values(where, name, arr, "id", vocab)


def check_field_type(where: str, arrow: pa.Schema, f: Field) -> None:
    """A row field is a column of the split's file, of the type its kind needs."""
    if f.name not in arrow.names:
        raise DataError.missing_column(where, f.name, arrow.names, f"{f.kind} field")
    t = arrow.field(f.name).type
    if f.kind == "sparse" and not _is_int(t):
        raise DataError.at(where, f"type {t}; expected integer ids (sparse field)", f.name)
    if f.kind == "sequence" and (not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not _is_int(t.value_type)):
        raise DataError.at(where, f"type {t}; expected a list of integer ids (sequence field)", f.name)
    if f.kind == "dense" and not (pa.types.is_floating(t) or _is_int(t)):
        raise DataError.at(where, f"type {t}; expected numbers (dense field)", f.name)


def check_label_type(where: str, arrow: pa.Schema, task: str) -> None:
    if task not in arrow.names:
        raise DataError.missing_column(where, task, arrow.names, "task label")
    t = arrow.field(task).type
    if not (_is_int(t) or pa.types.is_boolean(t)):
        raise DataError.at(where, f"type {t}; expected 0/1 integer labels", task)


def check_column(where: str, table: pa.Table, f: Field) -> None:
    """One row field of a split: type and value range."""
    check_field_type(where, table.schema, f)
    col = table.column(f.name)
    if f.kind == "sparse":
        _check_ids(where, f.name, col, f.vocab_size)
    elif f.kind == "sequence":
        if col.null_count:
            raise DataError.at(where, f"{col.null_count} null list(s); expected lists (empty allowed)", f.name)
        _check_ids(where, f.name, pc.list_flatten(col), f.vocab_size)
        if len(col):
            longest = pc.max(pc.list_value_length(col)).as_py() or 0
            if longest > f.max_len:
                raise DataError.at(where, f"a list of length {longest}; expected at most max_len {f.max_len}", f.name)
    elif f.kind == "dense":
        if col.null_count:
            raise DataError.at(where, f"{col.null_count} null value(s); expected finite numbers", f.name)
        if pa.types.is_floating(col.type) and len(col):
            finite = pc.all(pc.is_finite(col)).as_py()
            if not finite:
                raise DataError.at(where, "NaN or infinite value(s); expected finite numbers", f.name)


def check_label(where: str, table: pa.Table, task: str) -> None:
    check_label_type(where, table.schema, task)
    col = table.column(task)
    _check_values(where, task, col, "label", 2)  # booleans are always in range


def check_split(where: str, table: pa.Table, schema: Schema) -> None:
    if table.num_rows == 0:
        raise DataError.at(where, "empty split; expected at least one row")
    for f in schema.row_fields:
        check_column(where, table, f)
    for task in schema.tasks:
        check_label(where, table, task)
    for meta in schema.meta_columns:
        if meta not in table.column_names:
            raise DataError.missing_column(where, meta, table.column_names, "meta column")
    for child, parent in schema.task_parents.items():
        bad = pc.sum(pc.and_(pc.equal(table.column(child), 1), pc.equal(table.column(parent), 0))).as_py()
        if bad:
            raise DataError.at(
                where, f"{bad} row(s) with {child}=1 but {parent}=0; expected {child} only after {parent}", child
            )


def check_items(where: str, items: pa.Table, schema: Schema) -> None:
    if "item_id" not in items.column_names:
        raise DataError.missing_column(where, "item_id", items.column_names, "item id")
    if schema.item_field is not None:
        vocab = schema.field(schema.item_field).vocab_size
        _check_ids(where, "item_id", items.column("item_id"), vocab)
    ids = items.column("item_id").to_numpy()
    if len(np.unique(ids)) != len(ids):
        raise DataError.at(where, "duplicate item ids; expected one row per item", "item_id")
    text = schema.text_field
    if text is not None and text.name not in items.column_names:
        raise DataError.missing_column(where, text.name, items.column_names, "text field")
    if TEXT_EMB_COLUMN in items.column_names:
        col = items.column(TEXT_EMB_COLUMN)
        if not (pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type)):
            raise DataError.at(where, f"type {col.type}; expected a list of floats per item", TEXT_EMB_COLUMN)


def check_relations(where: str, rel: pa.Table, schema: Schema) -> None:
    for c in RELATION_COLUMNS:
        if c not in rel.column_names:
            raise DataError.missing_column(where, c, rel.column_names, "relation column")
    if schema.item_field is not None:
        vocab = schema.field(schema.item_field).vocab_size
        for c in ("head_item_id", "tail_item_id"):
            _check_ids(where, c, rel.column(c), vocab)


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
@dataclass
class PreparedDataset:
    """A prepared dataset folder. Nothing is read until asked for."""

    path: Path
    schema: Schema

    @classmethod
    def open(cls, path: str | Path) -> "PreparedDataset":
        path = Path(path)
        if not path.is_dir():
            raise DataError.at(path, "not a folder; expected a prepared dataset (schema.json and Parquet splits)")
        schema = Schema.load(path / SCHEMA_FILE)
        ds = cls(path, schema)
        for split in SPLITS:
            if not ds.split_path(split).is_file():
                raise DataError.at(ds.split_path(split), f"missing file: expected the {split} split")
        if not (path / ITEMS_FILE).is_file():
            raise DataError.at(path / ITEMS_FILE, "missing file: expected the item table")
        # each file's footer, not its data: a truncated or overwritten file, a missing column, a
        # wrong type or an id outside its vocabulary is refused here, at the cost of a few reads
        item_vocab = {"item_id": schema.field(schema.item_field).vocab_size} if schema.item_field else {}
        for split in SPLITS:
            rows = check_footer(ds.split_path(split), schema, split=True)
            expected = schema.rows.get(split)
            if expected is not None and rows != expected:
                raise DataError.at(path / SCHEMA_FILE, f"rows.{split} is {expected} but "
                                   f"{ds.split_path(split).name} has {rows} rows")
        check_footer(path / ITEMS_FILE, schema, ids=item_vocab)
        if (path / RELATIONS_FILE).is_file():
            vocab = item_vocab.get("item_id")
            check_footer(path / RELATIONS_FILE, schema,
                         ids={c: vocab for c in ("head_item_id", "tail_item_id")} if vocab else {})
        return ds

    def split_path(self, split: str) -> Path:
        return self.path / f"{split}.parquet"

    def _read(self, path: Path, columns: list[str] | None = None) -> pa.Table:
        try:
            return pq.read_table(path, columns=columns)
        except FileNotFoundError:
            raise DataError.at(path, "missing file") from None
        except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as exc:
            msg = first_line(exc)
            if columns is not None:
                try:
                    present = pq.read_schema(path).names
                except (pa.ArrowInvalid, OSError):
                    present = None
                for c in columns if present is not None else []:
                    if c not in present:
                        raise DataError.missing_column(str(path), c, present, "column") from None
            raise DataError.at(path, f"unreadable Parquet file ({msg})") from None

    def read_split(self, split: str, columns: list[str] | None = None) -> pa.Table:
        if split not in SPLITS:
            raise DataError(f"unknown split '{split}'; expected one of {list(SPLITS)}")
        return self._read(self.split_path(split), columns)

    def items(self, columns: list[str] | None = None) -> pa.Table:
        return self._read(self.path / ITEMS_FILE, columns)

    def users(self) -> pa.Table | None:
        p = self.path / USERS_FILE
        return self._read(p) if p.is_file() else None

    def relations(self) -> pa.Table | None:
        p = self.path / RELATIONS_FILE
        return self._read(p) if p.is_file() else None

    def item_attribute_column(self, field: str, items: pa.Table) -> str:
        """The items.parquet column holding the codes of item-side field ``field``.

        rectune writes it under the field's name; the benchmark tables sometimes keep the raw
        value there and the codes in ``<field>_code``.
        """
        if f"{field}_code" in items.column_names:
            return f"{field}_code"
        if field in items.column_names:
            return field
        raise DataError.missing_column(str(self.path / ITEMS_FILE), field, items.column_names, "item attribute")

    def item_attributes(self) -> dict[str, np.ndarray]:
        """The item-side row fields other than the item id (brand, category, genre ...), each an array
        indexed by item code, from items.parquet (code 0 and items it lacks: 0, the unknown value)."""
        # deferred: rectune.batches imports rectune.data.schema, which runs rectune.data's
        # __init__ and so this module; a top-level import here is a cycle when batches comes first
        from rectune.batches import pad_sequences

        schema = self.schema
        items = self.items()
        ids = items.column("item_id").to_numpy().astype(np.int64)
        n = schema.field(schema.item_field).vocab_size
        out: dict[str, np.ndarray] = {}
        for f in schema.row_fields:
            if f.side != "item" or f.name == schema.item_field:
                continue
            col = items.column(self.item_attribute_column(f.name, items))
            if f.kind == "sequence":
                values = pad_sequences(col, f.max_len)
                table = np.zeros((n, f.max_len), np.int32)
            else:
                values = col.to_numpy().astype(np.float32 if f.kind == "dense" else np.int32)
                table = np.zeros(n, values.dtype)
            table[ids] = values
            out[f.name] = table
        return out

    def validate(self) -> None:
        """Read every file and check it against the schema; raise a one-line DataError if wrong."""
        for split in SPLITS:
            table = self.read_split(split)
            check_split(str(self.split_path(split)), table, self.schema)  # row counts: checked on open
        check_items(str(self.path / ITEMS_FILE), self.items(), self.schema)
        rel = self.relations()
        if rel is not None:
            check_relations(str(self.path / RELATIONS_FILE), rel, self.schema)


def check_footer(path: Path, schema: Schema, split: bool = False, ids: dict[str, int] | None = None) -> int:
    """Check a Parquet file by its footer alone and return its row count.

    For a split (``split``): every row field and task label is a column of the right type. For the
    id columns (a split's sparse and sequence fields, or ``ids``: column -> vocab_size) and the
    labels, each row group's min/max statistics must lie in [0, vocab_size) and {0, 1}: a check that
    reads no data, whatever the size of the file. A row group written without statistics is read,
    that column alone."""
    where = str(path)
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError.at(path, f"unreadable Parquet file ({first_line(exc)})") from None
    arrow = meta.schema.to_arrow_schema()
    ranges: dict[str, tuple[int, str]] = {}  # column -> (values allowed in [0, high), "id" or "label")
    for column, vocab in (ids or {}).items():
        if column not in arrow.names:
            raise DataError.missing_column(where, column, arrow.names, "id column")
        ranges[column] = (vocab, "id")
    if split:
        for f in schema.row_fields:
            check_field_type(where, arrow, f)
            if f.kind in ("sparse", "sequence"):
                ranges[f.name] = (f.vocab_size, "id")
        for task in schema.tasks:
            check_label_type(where, arrow, task)
            if not pa.types.is_boolean(arrow.field(task).type):
                ranges[task] = (2, "label")
    leaves = {meta.schema.column(j).path.split(".")[0]: j for j in range(meta.num_columns)}
    reader = None  # opened only for a row group without statistics
    for column, (high, what) in ranges.items():
        nested = not pa.types.is_integer(arrow.field(column).type)  # a list: its leaf counts empty lists as nulls
        for g in range(meta.num_row_groups):
            if meta.row_group(g).num_rows == 0:
                continue
            stats = meta.row_group(g).column(leaves[column]).statistics
            if stats is not None and stats.has_min_max and (nested or stats.has_null_count):
                _check_range(where, column, what, 0 if nested else stats.null_count, stats.min, stats.max, high)
                continue
            reader = reader or pq.ParquetFile(path)
            values = reader.read_row_group(g, columns=[column]).column(column)
            _check_values(where, column, pc.list_flatten(values) if nested else values, what, high)
    return meta.num_rows


def open_dataset(path: str | Path, validate: bool = False) -> PreparedDataset:
    ds = PreparedDataset.open(path)
    if validate:
        ds.validate()
    return ds


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def split_stats(table: pa.Table, schema: Schema) -> dict:
    stats: dict = {"rows": table.num_rows}
    for task in schema.tasks:
        stats[f"{task}_rate"] = round(float(pc.mean(table.column(task).cast(pa.float64())).as_py()), 6)
    if "ts" in table.column_names:
        mm = pc.min_max(table.column("ts"))
        stats["ts_min"], stats["ts_max"] = mm["min"].as_py(), mm["max"].as_py()
    for f in schema.row_fields:
        if f.kind == "sequence":
            stats[f"mean_{f.name}_len"] = round(
                float(pc.mean(pc.list_value_length(table.column(f.name))).as_py() or 0.0), 3
            )
    return stats


def dense_stats(train: pa.Table, schema: Schema) -> list[Field]:
    """The schema's fields with ``stats`` (mean, std over train) filled for dense fields."""
    out = []
    for f in schema.fields:
        if f.kind == "dense":
            x = train.column(f.name).to_numpy().astype(np.float64)
            f = dataclasses.replace(f, stats={"mean": float(x.mean()), "std": float(x.std())})
        out.append(f)
    return out


DATASET_FILES = frozenset({SCHEMA_FILE, *(f"{s}.parquet" for s in SPLITS), ITEMS_FILE, USERS_FILE, RELATIONS_FILE})
"""Every file a prepared dataset may hold: what --overwrite may replace."""


def check_output_free(out: str | Path, overwrite: bool = False) -> None:
    """Refuse early, before any work, an ``out`` that cannot take a new dataset.

    It must not exist, or with ``overwrite`` be a prepared dataset (or an empty folder): a folder
    with anything else in it, a file or a link is never replaced. Its place must be writable: a
    probe folder is made there and removed, which finds a read-only disk as well as permissions."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise DataError.at(out, "already exists; choose another --out or pass --overwrite")
        if out.is_symlink() or not out.is_dir():
            raise DataError.at(out, "is not a folder; --overwrite replaces only a prepared dataset")
        held = list(out.iterdir())
        others = sorted(p.name + ("/" if p.is_dir() else "") for p in held
                        if p.name not in DATASET_FILES or p.is_symlink() or not p.is_file())
        why = (f"holds {', '.join(others[:3])}{f' and {len(others) - 3} more' if len(others) > 3 else ''}" if others
               else f"has no {SCHEMA_FILE}" if held and not (out / SCHEMA_FILE).is_file() else None)
        if why:
            raise DataError.at(out, f"{why}: not a prepared dataset, the only thing --overwrite replaces; "
                               f"choose another --out")
    place = out.parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise DataError.at(out, f"{place} is not a folder; expected a folder to write the dataset in")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=place))
    except OSError as exc:
        raise DataError.at(out, f"cannot be written in {place} ({exc.strerror or exc})") from None


@contextmanager
def atomic_folder(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out`` that becomes ``out`` only if the block succeeds.

    ``out`` is checked first (:func:`check_output_free`). On any error or interruption the
    temporary folder is removed and ``out`` is untouched.
    """
    check_output_free(out, overwrite)
    with _staged(Path(out)) as tmp:
        yield tmp


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out``, renamed over it at the end of the block."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class DatasetTables:
    """A prepared dataset in memory, as importers and the generator build it."""

    schema: Schema
    splits: dict[str, pa.Table]
    items: pa.Table
    users: pa.Table | None = None
    relations: pa.Table | None = None

    def write(self, out: str | Path, overwrite: bool = False) -> "PreparedDataset":
        return write_dataset(
            out, self.schema, self.splits, self.items, self.users, self.relations, overwrite=overwrite
        )


def write_dataset(
    out: str | Path,
    schema: Schema,
    splits: dict[str, pa.Table],
    items: pa.Table,
    users: pa.Table | None = None,
    relations: pa.Table | None = None,
    overwrite: bool = False,
) -> PreparedDataset:
    """Check everything in memory, then write the dataset atomically. Fills row counts and stats."""
    out = Path(out)
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise DataError.at(out, f"no {missing[0]} split to write")
    schema.rows = {s: splits[s].num_rows for s in SPLITS}
    schema.fields = dense_stats(splits["train"], schema)
    schema.check(out / SCHEMA_FILE)
    for s in SPLITS:
        check_split(f"{out / (s + '.parquet')}", splits[s], schema)
    check_items(str(out / ITEMS_FILE), items, schema)
    schema.split_stats = {s: split_stats(splits[s], schema) for s in SPLITS}
    schema.items = {**(schema.items or {}), "file": ITEMS_FILE, "rows": items.num_rows}
    if users is not None:
        schema.users = {**(schema.users or {}), "file": USERS_FILE, "rows": users.num_rows}
    if relations is not None:
        check_relations(str(out / RELATIONS_FILE), relations, schema)
        counts = pc.value_counts(relations.column("relation")).to_pylist()
        schema.relations = {
            **(schema.relations or {}),
            "file": RELATIONS_FILE,
            "rows": relations.num_rows,
            "per_relation": {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])},
        }
    if schema.user_field is not None:
        schema.n_users = schema.field(schema.user_field).vocab_size - 1
    if schema.item_field is not None:
        schema.n_items = schema.field(schema.item_field).vocab_size - 1
    with atomic_folder(out, overwrite=overwrite) as tmp:
        for s in SPLITS:
            # row groups of 64k rows let Ray Data read one split with several tasks
            pq.write_table(splits[s], tmp / f"{s}.parquet", row_group_size=65536)
        pq.write_table(items, tmp / ITEMS_FILE)
        if users is not None:
            pq.write_table(users, tmp / USERS_FILE)
        if relations is not None:
            pq.write_table(relations, tmp / RELATIONS_FILE)
        (tmp / SCHEMA_FILE).write_text(schema.dumps() + "\n", encoding="utf-8")
    return PreparedDataset(out, schema)


def replace_files(ds: PreparedDataset, schema: Schema, tables: dict[str, pa.Table]) -> PreparedDataset:
    """Atomically replace some files of an existing dataset (and its schema).

    The dataset is re-linked (hard links, no copy) into a temporary folder, the new files are
    written there, and the folder is swapped in: readers never see a mix of old and new.
    """
    out = ds.path
    with _staged(out) as tmp:
        for child in out.iterdir():
            if child.is_file() and child.name not in tables and child.name != SCHEMA_FILE:
                try:
                    os.link(child, tmp / child.name)
                except OSError:
                    shutil.copy2(child, tmp / child.name)
        for name, table in tables.items():
            pq.write_table(table, tmp / name)
        (tmp / SCHEMA_FILE).write_text(schema.dumps() + "\n", encoding="utf-8")
    return PreparedDataset(out, schema)
