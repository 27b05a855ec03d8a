"""Pieces every importer shares: vocabularies, task rules, splits, negatives, behaviour history.

All of it is vectorised numpy: an importer of a million interactions runs in seconds.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from rectune.errors import ConfigError, DataError, first_line

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_CELL = 1_000_000
"""Characters a source cell may hold: a longer one is a broken line (a lost separator or newline)."""
MAX_NAME = 200
"""Characters a column name may hold."""


def quoted(value: object, limit: int = 60) -> str:
    """``repr`` of a value's text, cut to ``limit`` characters: an error message stays one short line."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def names(columns: Sequence, limit: int = 6) -> str:
    """A short listing of column names for a message: at most ``limit`` of them, each cut short."""
    shown = ", ".join(quoted(c, 40) for c in list(columns)[:limit])
    more = len(columns) - limit
    return f"[{shown}{f', ... ({more} more)' if more > 0 else ''}]"


# ---------------------------------------------------------------------------------------------
# vocabularies: raw value -> code 1..K, 0 = padding / unknown
# ---------------------------------------------------------------------------------------------
@dataclass
class Vocab:
    values: np.ndarray  # sorted raw values; code of values[k] is k + 1

    @classmethod
    def fit(cls, *columns: Sequence) -> "Vocab":
        parts = [pd.Series(np.asarray(c, dtype=object)).dropna() for c in columns]
        allv = pd.concat(parts, ignore_index=True) if parts else pd.Series([], dtype=object)
        allv = allv[allv.astype(str) != ""]
        uniq = pd.unique(allv)
        try:
            uniq = np.sort(uniq)
        except TypeError:  # mixed types: order by their text
            uniq = np.array(sorted(uniq, key=str), dtype=object)
        return cls(np.asarray(uniq))

    @property
    def size(self) -> int:
        """vocab_size: the number of codes including 0."""
        return len(self.values) + 1

    def encode(self, column: Sequence) -> np.ndarray:
        """Codes of ``column``; values outside the vocabulary (and missing ones) get 0."""
        idx = pd.Index(self.values)
        arr = np.asarray(column) if not isinstance(column, pd.Series) else column.to_numpy()
        if arr.dtype.kind in "iuf" and self.values.dtype.kind in "iuf":
            codes = idx.get_indexer(arr)  # numbers: no detour through Python objects
        else:
            codes = idx.get_indexer(pd.Series(np.asarray(column, dtype=object)))
        return (codes + 1).astype(np.int32)  # -1 (unknown) -> 0

    def json_values(self) -> list:
        return [v.item() if hasattr(v, "item") else v for v in self.values]


# ---------------------------------------------------------------------------------------------
# task rules: "like=rating>=4"
# ---------------------------------------------------------------------------------------------
_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt}
_RULE = re.compile(r"^\s*([A-Za-z_][\w]*)\s*=\s*([A-Za-z_][\w]*)\s*(>=|<=|==|!=|>|<)\s*(-?[\w.]+)\s*$")


@dataclass(frozen=True)
class TaskRule:
    """A binary task derived from a source column, e.g. ``like=rating>=4``. Never evaluated as code.

    A number compares with a numeric column; a word only with ``==`` or ``!=`` and only with a text
    column. Anything else (``rating>=abc``) would yield a meaningless, typically all-zero label.
    """

    task: str
    column: str
    op: str
    value: float | str

    @classmethod
    def parse(cls, text: str, option: str = "--task") -> "TaskRule":
        m = _RULE.match(text)
        if not m:
            raise ConfigError(
                f"{option} {quoted(text)}: expected NAME=COLUMN<op>VALUE with <op> one of "
                f"{', '.join(_OPS)} (e.g. like=rating>=4)"
            )
        task, column, op, raw = m.groups()
        try:
            value: float | str = float(raw)
        except ValueError:
            value = raw
        if isinstance(value, float) and not np.isfinite(value):
            raise ConfigError(f"{option} {quoted(text)}: '{raw}' is not a finite number; expected e.g. like=rating>=4")
        if isinstance(value, str) and op not in ("==", "!="):
            raise ConfigError(
                f"{option} {quoted(text)}: '{op}' orders numbers but '{raw}' is not a number; "
                f"expected a number, or == / != to compare column '{column}' with a word"
            )
        return cls(task, column, op, value)

    @property
    def text(self) -> str:
        value = f"{self.value:g}" if isinstance(self.value, float) else self.value
        return f"{self.task}={self.column}{self.op}{value}"

    def apply(self, frame: pd.DataFrame, where: str | Path) -> np.ndarray:
        if self.column not in frame.columns:
            raise DataError.at(
                where, f"missing column for task rule '{self.text}'; columns are {names(frame.columns)}", self.column,
            )
        col = frame[self.column]
        num = pd.to_numeric(col, errors="coerce")
        if isinstance(self.value, float):
            if num.isna().any():
                row = int(np.flatnonzero(num.isna().to_numpy())[0])
                raise DataError.at(where, f"unparsable value {quoted(col.iloc[row])} at data row {row + 1}; "
                                          f"expected numbers for task rule '{self.text}'", self.column)
            return _OPS[self.op](num.to_numpy(), self.value).astype(np.int8)
        if len(num) and num.notna().all():
            raise DataError.at(where, f"task rule '{self.text}' compares a numeric column with the word "
                                      f"'{self.value}'; expected a number", self.column)
        return _OPS[self.op](col.astype(str).to_numpy(dtype=object), self.value).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# splits of the positives
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitSpec:
    """``time:0.8,0.1,0.1`` (global by time) or ``loo`` (per user, leave-last-out)."""

    mode: str
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    @classmethod
    def parse(cls, text: str, option: str = "--split") -> "SplitSpec":
        text = text.strip()
        if text in ("loo", "leave-last-out"):
            return cls("loo")
        m = re.match(r"^time(?::(.*))?$", text)
        if not m:
            raise ConfigError(f"{option} '{text}': expected 'time:TRAIN,VALID,TEST' (e.g. time:0.8,0.1,0.1) or 'loo'")
        if m.group(1) is None:
            return cls("time")
        try:
            fr = tuple(float(x) for x in m.group(1).split(","))
        except ValueError:
            fr = ()
        if len(fr) != 3 or any(f <= 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
            raise ConfigError(f"{option} '{text}': expected three positive fractions that sum to 1")
        return cls("time", fr)  # type: ignore[arg-type]

    def assign(self, users: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Split index (0 train, 1 valid, 2 test) of each positive.

        ``order`` is each positive's rank in time (a permutation of 0..n-1, ties already broken).
        """
        n = len(users)
        out = np.zeros(n, dtype=np.int8)
        if self.mode == "time":
            n_train = int(round(n * self.fractions[0]))
            n_valid = int(round(n * self.fractions[1]))
            out[order >= n_train] = 1
            out[order >= n_train + n_valid] = 2
            return out
        # leave-last-out: each user's last positive to test, second-to-last to valid
        by = np.lexsort((order, users))
        u_sorted = users[by]
        last = np.ones(n, dtype=bool)
        last[:-1] = u_sorted[1:] != u_sorted[:-1]
        second = np.zeros(n, dtype=bool)
        second[:-1] = last[1:] & (u_sorted[:-1] == u_sorted[1:])
        counts = np.bincount(u_sorted.astype(np.int64))[u_sorted]
        ok = counts >= 3  # users with fewer than 3 positives stay in train
        sp = np.zeros(n, dtype=np.int8)
        sp[last & ok] = 2
        sp[second & ok] = 1
        out[by] = sp
        return out


# ---------------------------------------------------------------------------------------------
# behaviour history and negatives
# ---------------------------------------------------------------------------------------------
def history_at(
    ev_users: np.ndarray, ev_ts: np.ndarray, ev_order: np.ndarray, ev_items: np.ndarray,
    q_users: np.ndarray, q_ts: np.ndarray, max_len: int,
) -> pa.ListArray:
    """For each query (user, time): the user's last ``max_len`` event items strictly before that time.

    Events are the behaviour (clicked or bought items); most recent last; events at the same time
    as the query are not "before" it. Vectorised: one sort and two binary searches on the key
    ``user * span + time``; where that key could overflow int64 (times spread over a huge range),
    times are first replaced by their rank, which keeps their order.
    """
    by = np.lexsort((ev_order, ev_ts, ev_users))
    u, t, it = ev_users[by].astype(np.int64), ev_ts[by].astype(np.int64), ev_items[by].astype(np.int32)
    qu, qt = q_users.astype(np.int64), q_ts.astype(np.int64)
    if len(t) == 0:
        return pa.array([[] for _ in range(len(qu))], pa.list_(pa.int32()))
    tmin = min(int(t.min()), int(qt.min()) if len(qt) else 0)
    span = max(int(t.max()), int(qt.max()) if len(qt) else 0) - tmin + 2
    if (max(int(u.max()), int(qu.max()) if len(qu) else 0) + 1) * span >= 2**62:
        _, rank = np.unique(np.concatenate([t, qt, [tmin]]), return_inverse=True)
        t, qt, tmin = rank[: len(t)].astype(np.int64), rank[len(t) : len(t) + len(qt)].astype(np.int64), 0
        span = int(rank.max()) + 2
    key = u * span + (t - tmin)
    end = np.searchsorted(key, qu * span + (qt - tmin), side="left")  # first event at or after q time
    start = np.searchsorted(key, qu * span, side="left")  # first event of the user
    lo = np.maximum(start, end - max_len)
    lengths = (end - lo).astype(np.int64)
    offsets = np.zeros(len(qu) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = it[np.repeat(lo, lengths) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths))]
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, pa.int32()))


def history(users: np.ndarray, ts: np.ndarray, order: np.ndarray, items: np.ndarray, max_len: int) -> pa.ListArray:
    """For each positive: the user's last ``max_len`` positive items strictly before its time."""
    return history_at(users, ts, order, items, users, ts, max_len)


def sample_negatives(
    users: np.ndarray, items: np.ndarray, n_items: int, ratio: int, rng: np.random.Generator,
    interacted: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``ratio`` distinct item codes (1..n_items) per positive, none that its user ever interacted with.

    ``interacted`` is (users, items) of every known interaction (defaults to the positives).
    """
    n = len(users)
    if ratio == 0 or n == 0:
        return np.zeros((n, 0), dtype=np.int32)
    iu, ii = interacted if interacted is not None else (users, items)
    base = np.int64(n_items + 1)
    seen = np.unique(iu.astype(np.int64) * base + ii.astype(np.int64))
    n_seen = pd.Series(seen // base).value_counts()
    too_many = n_seen[n_seen > n_items - ratio]
    if len(too_many):
        raise DataError(
            f"user code {int(too_many.index[0])} interacted with {int(too_many.iloc[0])} of {n_items} items: "
            f"cannot draw {ratio} distinct unseen negatives; lower --neg-ratio"
        )
    u64 = users.astype(np.int64)[:, None]
    cand = rng.integers(1, n_items + 1, size=(n, ratio), dtype=np.int64)
    for _ in range(1000):
        bad = np.isin(u64 * base + cand, seen)
        for j in range(1, ratio):
            bad[:, j] |= (cand[:, :j] == cand[:, j : j + 1]).any(axis=1)
        nbad = int(bad.sum())
        if nbad == 0:
            return cand.astype(np.int32)
        cand[bad] = rng.integers(1, n_items + 1, size=nbad, dtype=np.int64)
    raise DataError("could not draw unseen negatives after 1000 rounds; lower --neg-ratio")


def expand_with_negatives(n_pos: int, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row layout: each positive followed by its negatives.

    Returns (positive index of each row, item column selector, is_positive): the item of row k is
    the positive's item where ``is_positive`` else ``neg[pos_index, selector]``.
    """
    r = neg.shape[1]
    pos_index = np.repeat(np.arange(n_pos), r + 1)
    slot = np.tile(np.arange(r + 1), n_pos)
    return pos_index, np.maximum(slot - 1, 0), slot == 0


# ---------------------------------------------------------------------------------------------
# reading delimited source files with one-line errors
# ---------------------------------------------------------------------------------------------
def read_delimited(path: Path, sep: str = ",", **kwargs) -> pd.DataFrame:
    """A delimited file as a frame; every way it can be malformed is a one-line DataError naming it.

    Also refused: a column name twice in the header (pandas would silently rename the second
    ``name.1``) and a cell longer than :data:`MAX_CELL` characters (a lost separator or newline).
    """
    if not path.is_file():
        raise DataError.at(path, "missing file")
    try:
        frame = pd.read_csv(path, sep=sep, **kwargs)
        header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False,
                             quoting=kwargs.get("quoting", 0)).iloc[0].tolist()
    except pd.errors.EmptyDataError:
        raise DataError.at(path, "empty file; expected a header and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise DataError.at(path, f"unparsable ({first_line(exc)})") from None
    for name in header:
        if len(str(name)) > MAX_NAME:
            raise DataError.at(path, f"header cell {quoted(name)}: expected column names of at most {MAX_NAME} "
                                     f"characters (is the first line the header?)")
    seen: set[str] = set()
    for name in (str(n).strip() for n in header):
        if name and name in seen:
            raise DataError.at(path, "named twice in the header; expected each column once", name)
        seen.add(name)
    if frame.empty:
        raise DataError.at(path, "no rows; expected at least one")
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            lengths = frame[col].astype(str).str.len().to_numpy()
            if lengths.max() > MAX_CELL:
                row = int(np.argmax(lengths > MAX_CELL))
                raise DataError.at(path, f"value of {lengths[row]:,} characters at data row {row + 1}; expected at "
                                         f"most {MAX_CELL:,} (a broken line?)", col)
    return frame


def require_columns(frame: pd.DataFrame, columns: Sequence[str], where: str | Path) -> None:
    for c in columns:
        if c not in frame.columns:
            raise DataError.missing_column(where, c, frame.columns, "column", f"; expected columns {names(columns)}")


def _int64_range(values: np.ndarray, raw: pd.Series, where: str | Path, column: str, expected: str) -> None:
    """Refuse numbers int64 cannot hold: casting them would wrap or saturate, colliding values.

    Near the bounds a float64 is not exact, so there the raw text decides where it is an integer.
    """
    if values.dtype.kind == "u":
        over = values > INT64_MAX
    elif values.dtype.kind == "f":
        over = np.abs(values) >= 2.0**63 - 1024
        for row in np.flatnonzero(over):
            exact = _integer_text(raw.iloc[row])
            over[row] = not INT64_MIN <= exact <= INT64_MAX if exact is not None else values[row] != -(2.0**63)
    else:
        return
    if over.any():
        row = int(np.flatnonzero(over)[0])
        raise DataError.at(where, f"value {quoted(raw.iloc[row])} at data row {row + 1} is beyond the int64 range; "
                                  f"expected {expected}", column)


def _integer_text(value: object) -> int | None:
    """The exact integer a cell's text spells (at most 40 digits), else None."""
    text = str(value).strip()
    return int(text) if re.fullmatch(r"[+-]?[0-9]{1,40}", text) else None


def _parsed(frame: pd.DataFrame, column: str, where: str | Path, expected: str) -> tuple[pd.Series, np.ndarray]:
    """(raw column, its values as numbers); an unparsable or missing value is a one-line error."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy()
    bad = pd.isna(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        first = raw.iloc[row]
        shown = "(empty)" if pd.isna(first) or str(first).strip() == "" else quoted(first)
        raise DataError.at(where, f"unparsable value {shown} at data row {row + 1}; expected {expected}", column)
    return raw, values


def numeric_column(frame: pd.DataFrame, column: str, where: str | Path, integer: bool = False) -> np.ndarray:
    """A column as numbers; any unparsable, missing or infinite value is a one-line error.

    Integers (ids) are exact: one beyond int64, or one too large for float64 to hold exactly in a
    column read as decimals, is refused rather than wrapped or rounded onto another id.
    """
    raw, values = _parsed(frame, column, where, "a number")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise DataError.at(where, f"infinite value {quoted(raw.iloc[row])} at data row {row + 1}; "
                                  f"expected finite numbers", column)
    if not integer:
        return values.astype(np.float64)
    if values.dtype.kind == "f":
        frac = np.mod(values, 1) != 0
        if frac.any():
            row = int(np.flatnonzero(frac)[0])
            raise DataError.at(where, f"non-integer value {quoted(raw.iloc[row])} at data row {row + 1}; "
                                      f"expected integer ids", column)
    _int64_range(values, raw, where, column, "integer ids within it")
    if values.dtype.kind == "f":
        inexact = np.abs(values) > 2.0**53
        if inexact.any():
            row = int(np.flatnonzero(inexact)[0])
            raise DataError.at(where, f"value {quoted(raw.iloc[row])} at data row {row + 1} cannot be read exactly "
                                      f"in a column of decimal numbers; expected integer ids written as integers",
                               column)
    return values.astype(np.int64)


def time_column(frame: pd.DataFrame, column: str, where: str | Path) -> np.ndarray:
    """A time column as int64 (decimals truncated, as before); values int64 cannot hold are refused."""
    raw, values = _parsed(frame, column, where, "a number (time)")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise DataError.at(where, f"infinite value {quoted(raw.iloc[row])} at data row {row + 1}; "
                                  f"expected a finite time", column)
    _int64_range(values, raw, where, column, "a time within it (e.g. seconds since 1970)")
    return values.astype(np.int64)


_PLAIN_INT = r"(?:0|-?[1-9][0-9]{0,18})"


def _plain_int64(text: pd.Series) -> bool:
    """Whether every value is a plain integer (no sign but '-', no leading zero) within int64."""
    if not len(text):
        return True
    return bool(text.str.fullmatch(_PLAIN_INT).all()) and pd.to_numeric(text).dtype.kind == "i"


def id_values(*columns: pd.Series) -> list[np.ndarray]:
    """One id space read from several text columns (e.g. the user ids of .inter and .user) alike.

    Ids are text, as RecBole reads its tokens, so an id is the same id in every file. Where every
    value of every column is a plain integer within int64 they are stored as int64 instead, which
    changes no identity and sorts them as numbers; one other value (a word, ``007``, an integer
    beyond int64) keeps all of them text, so that ``12`` stays the same id in every file.
    """
    texts = [pd.Series(np.asarray(c, dtype=object)).astype(str) for c in columns]
    if all(_plain_int64(t) for t in texts):
        return [pd.to_numeric(t).to_numpy(np.int64) if len(t) else np.zeros(0, np.int64) for t in texts]
    return [t.to_numpy(dtype=object) for t in texts]


def require_ids(frame: pd.DataFrame, column: str, where: str | Path) -> None:
    """Refuse an empty id: it would become code 0, the padding, and be taken for no id at all."""
    empty = (frame[column].astype(str).str.strip() == "").to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise DataError.at(where, f"empty id at data row {row + 1}; expected an id in every row", column)


def binary_labels(frame: pd.DataFrame, column: str, where: str | Path) -> np.ndarray:
    values = numeric_column(frame, column, where)
    bad = (values != 0) & (values != 1)
    if bad.any():
        raise DataError.at(where, f"label {values[bad][0]:g}; expected labels in {{0, 1}}", column)
    return values.astype(np.int8)
