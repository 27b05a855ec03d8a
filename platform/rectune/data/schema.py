"""``schema.json``: what a prepared dataset holds.

The format extends the one of the benchmark tables in ``../shared/bench`` (which are read as they
are): tasks (binary labels), fields with their kind, side and vocabulary size, meta columns, row
counts, relations and provenance. Codes of every categorical are contiguous from 1; 0 is padding
and the unknown id.

Field kinds:

- ``sparse``: one id per row (int32 column in the splits);
- ``sequence``: a list of ids per row (``list<int32>``), e.g. the behaviour history, most recent last;
- ``dense``: a float per row (float32 column), with its training mean and std in ``stats``;
- ``text``: an item's text (the title), kept in ``items.parquet``, not in the rows; its sentence
  embedding, once computed by ``rectune data embed-text``, is the items' ``text_emb`` column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from rectune.errors import DataError, shorten

FORMAT_VERSION = 1
FIELD_KINDS = ("sparse", "sequence", "dense", "text")
SIDES = ("user", "item", "context")
SPLITS = ("train", "valid", "test")
TEXT_EMB_COLUMN = "text_emb"
MAX_VOCAB = 2**31 - 1
"""Codes are int32 in the splits: a vocabulary holds at most this many codes (0 included)."""


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _text(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _texts(v: Any) -> bool:
    return isinstance(v, list) and all(_text(x) for x in v)


def _mapping(v: Any) -> bool:
    return isinstance(v, dict)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


KEY_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (_text, "non-empty text"),
    "meta_columns": (_texts, "a list of column names"),
    "rows": (lambda v: _mapping(v) and set(v) <= set(SPLITS) and all(_count(n) for n in v.values()),
             f"an object of row counts (whole numbers >= 0) per split {list(SPLITS)}"),
    "user_field": (_text, "a field name"),
    "item_field": (_text, "a field name"),
    "task_parents": (lambda v: _mapping(v) and all(_text(k) and _text(x) for k, x in v.items()),
                     "an object of task -> parent task names"),
    "relations": (_mapping, "an object"),
    "items": (_mapping, "an object"),
    "users": (_mapping, "an object"),
    "split_stats": (_mapping, "an object"),
    "provenance": (_mapping, "an object"),
    "n_users": (_count, "a whole number >= 0"),
    "n_items": (_count, "a whole number >= 0"),
    "source": (lambda v: isinstance(v, str), "text"),
    "derivation": (lambda v: isinstance(v, str), "text"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "format_version": (lambda v: _count(v) and v <= FORMAT_VERSION,
                       f"a whole number up to {FORMAT_VERSION} (a newer rectune wrote this dataset?)"),
}
"""schema.json's keys other than tasks and fields: what each value must be (null: absent)."""

FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (_text, "non-empty text"),
    "kind": (_text, f"one of {list(FIELD_KINDS)}"),
    "side": (_text, f"one of {list(SIDES)}"),
    "vocab_size": (lambda v: _count(v) and 1 <= v <= MAX_VOCAB, f"a whole number in [1, {MAX_VOCAB}] (int32 codes)"),
    "max_len": (lambda v: _count(v) and v >= 1, "a whole number >= 1"),
    "shares_vocab_with": (_text, "a field name"),
    "values": (lambda v: isinstance(v, list), "a list of raw values"),
    "stats": (lambda v: _mapping(v) and all(_finite(v.get(k)) for k in ("mean", "std")),
              "an object with finite 'mean' and 'std'"),
}
"""A field's keys: what each value must be (null: absent)."""


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    side: str = "context"
    vocab_size: int | None = None
    max_len: int | None = None
    shares_vocab_with: str | None = None
    values: list | None = None
    """Raw value of each code: ``values[c - 1]`` is the raw value of code ``c``."""
    stats: dict | None = None
    """For dense fields: ``{"mean": ..., "std": ...}`` over the training split."""

    @property
    def in_rows(self) -> bool:
        """Whether the field is a column of the splits (text lives in items.parquet)."""
        return self.kind != "text"

    def to_json(self) -> dict:
        # shallow on purpose: asdict() deep-copies ``values``, which is slow for large vocabularies
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class Schema:
    name: str
    tasks: list[str]
    fields: list[Field]
    meta_columns: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    user_field: str | None = None
    item_field: str | None = None
    task_parents: dict[str, str] = field(default_factory=dict)
    """Funnel: ``{"conversion": "click"}`` means a conversion can only follow a click."""
    relations: dict | None = None
    items: dict | None = None
    users: dict | None = None
    split_stats: dict | None = None
    n_users: int | None = None
    n_items: int | None = None
    source: str | None = None
    derivation: str | None = None
    seed: int | None = None
    provenance: dict | None = None
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    """Keys of schema.json that this version does not know; kept when the schema is rewritten."""

    # ---- look-ups -------------------------------------------------------------------------
    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def field_names(self, kind: str | None = None, side: str | None = None) -> list[str]:
        return [
            f.name
            for f in self.fields
            if (kind is None or f.kind == kind) and (side is None or f.side == side)
        ]

    @property
    def row_fields(self) -> list[Field]:
        return [f for f in self.fields if f.in_rows]

    @property
    def text_field(self) -> Field | None:
        texts = [f for f in self.fields if f.kind == "text"]
        return texts[0] if texts else None

    def row_columns(self) -> list[str]:
        """Every column a split must have: row fields, task labels, meta columns."""
        return [f.name for f in self.row_fields] + list(self.tasks) + list(self.meta_columns)

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name == "fields":
                value = [fl.to_json() for fl in value]
            if value is None or (f.name == "task_parents" and not value):  # no funnel: key left out
                continue
            out[f.name] = value
        out.update(self.extra)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, ensure_ascii=False, default=_json_default)

    @classmethod
    def from_json(cls, data: Any, path: str | Path = "schema.json") -> "Schema":
        """Parse and check a schema; every problem is a one-line DataError naming ``path``."""
        if not isinstance(data, dict):
            raise DataError.at(path, "expected a JSON object")
        for key in ("name", "tasks", "fields"):
            if key not in data:
                raise DataError.at(path, f"missing key '{key}'")
        tasks = data["tasks"]
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
            raise DataError.at(path, "key 'tasks': expected a non-empty list of label column names")
        if not isinstance(data["fields"], list) or not data["fields"]:
            raise DataError.at(path, "key 'fields': expected a non-empty list of fields")
        for key, (ok, expected) in KEY_TYPES.items():
            if data.get(key) is not None and not ok(data[key]):
                raise DataError.at(path, f"key '{key}': {_shown(data[key])}; expected {expected}")
        known_field_keys = {f.name for f in fields(Field)}
        parsed: list[Field] = []
        for i, raw in enumerate(data["fields"]):
            if not isinstance(raw, dict) or "name" not in raw or "kind" not in raw:
                raise DataError.at(path, f"fields[{i}]: expected an object with 'name' and 'kind'")
            where = f"field '{raw['name']}'" if _text(raw["name"]) else f"fields[{i}]"
            unknown = set(raw) - known_field_keys
            if unknown:
                raise DataError.at(path, f"{where}: unknown key(s) {sorted(unknown)}; "
                                   f"expected some of {sorted(known_field_keys)}")
            for key, (ok, expected) in FIELD_TYPES.items():
                if raw.get(key) is not None and not ok(raw[key]):
                    raise DataError.at(path, f"{where}: key '{key}': {_shown(raw[key])}; expected {expected}")
            parsed.append(Field(**raw))
        known = {f.name for f in fields(cls)} - {"fields", "extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k != "fields"}
        schema = cls(fields=parsed, extra=extra, **kwargs)
        schema._infer_defaults()
        schema.check(path)
        return schema

    @classmethod
    def load(cls, path: str | Path) -> "Schema":
        path = Path(path)
        if not path.is_file():
            raise DataError.at(path, "missing file: expected the dataset's schema.json")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError.at(path, f"not valid JSON ({exc})") from None
        return cls.from_json(data, path)

    # ---- checks ---------------------------------------------------------------------------
    def _infer_defaults(self) -> None:
        """Fill what older schemas (the benchmark tables') leave implicit."""
        if self.user_field is None and any(
            f.name == "user_id" and f.kind == "sparse" for f in self.fields
        ):
            self.user_field = "user_id"
        if self.item_field is None and any(
            f.name == "item_id" and f.kind == "sparse" for f in self.fields
        ):
            self.item_field = "item_id"

    def check(self, path: str | Path = "schema.json") -> None:
        names = [f.name for f in self.fields]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise DataError.at(path, f"field(s) {sorted(dup)} listed twice")
        clash = set(names) & set(self.tasks)
        if clash:
            raise DataError.at(path, f"{sorted(clash)} are both a field and a task label")
        for f in self.fields:
            where = f"field '{f.name}'"
            if f.kind not in FIELD_KINDS:
                raise DataError.at(path, f"{where}: kind '{f.kind}', expected one of {list(FIELD_KINDS)}")
            if f.side not in SIDES:
                raise DataError.at(path, f"{where}: side '{f.side}', expected one of {list(SIDES)}")
            needed = ("vocab_size",) if f.kind == "sparse" else ("vocab_size", "max_len") if f.kind == "sequence" else ()
            for key in needed:
                ok, expected = FIELD_TYPES[key]
                if not ok(getattr(f, key)):
                    raise DataError.at(path, f"{where}: key '{key}': {_shown(getattr(f, key))}; expected {expected}")
            if f.shares_vocab_with is not None:
                if f.shares_vocab_with not in names:
                    raise DataError.at(
                        path, f"{where}: shares_vocab_with '{f.shares_vocab_with}' is not a field"
                    )
                other = self.field(f.shares_vocab_with)
                if other.vocab_size != f.vocab_size:
                    raise DataError.at(
                        path,
                        f"{where}: vocab_size {f.vocab_size} differs from that of "
                        f"'{other.name}' ({other.vocab_size}) whose vocabulary it shares",
                    )
        for role in ("user_field", "item_field"):
            name = getattr(self, role)
            if name is not None and (name not in names or self.field(name).kind != "sparse"):
                raise DataError.at(path, f"key '{role}': '{name}' is not a sparse field")
        for child, parent in self.task_parents.items():
            if child not in self.tasks or parent not in self.tasks:
                raise DataError.at(
                    path, f"key 'task_parents': '{child}' -> '{parent}' must name two tasks"
                )


def _shown(value: Any) -> str:
    """A value as JSON, cut short: an error line stays one short line."""
    return shorten(json.dumps(value, default=str), 40)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays that slipped into stats or values
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
