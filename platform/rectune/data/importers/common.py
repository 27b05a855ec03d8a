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

from rectune.errors import ConfigError, DataError


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
    """A binary task derived from a source column, e.g. ``like=rating>=4``. Never evaluated as code."""

    task: str
    column: str
    op: str
    value: float | str

    @classmethod
    def parse(cls, text: str, option: str = "--task") -> "TaskRule":
        m = _RULE.match(text)
        if not m:
            raise ConfigError(
                f"{option} '{text}': expected NAME=COLUMN<op>VALUE with <op> one of "
                f"{', '.join(_OPS)} (e.g. like=rating>=4)"
            )
        task, column, op, raw = m.groups()
        try:
            value: float | str = float(raw)
        except ValueError:
            value = raw
        return cls(task, column, op, value)

    def apply(self, frame: pd.DataFrame, where: str) -> np.ndarray:
        if self.column not in frame.columns:
            raise DataError.at(
                where, f"missing column for task rule '{self.task}={self.column}{self.op}{self.value}'"
                f"; columns are {list(frame.columns)}", self.column,
            )
        col = frame[self.column]
        if isinstance(self.value, float):
            col = pd.to_numeric(col, errors="coerce")
            if col.isna().any():
                raise DataError.at(where, "unparsable value(s); expected numbers for the task rule", self.column)
        return _OPS[self.op](col.to_numpy(), self.value).astype(np.int8)


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
    as the query are not "before" it. Vectorised: one sort and two binary searches.
    """
    by = np.lexsort((ev_order, ev_ts, ev_users))
    u, t, it = ev_users[by].astype(np.int64), ev_ts[by].astype(np.int64), ev_items[by].astype(np.int32)
    qu, qt = q_users.astype(np.int64), q_ts.astype(np.int64)
    if len(t) == 0:
        return pa.array([[] for _ in range(len(qu))], pa.list_(pa.int32()))
    tmin = min(int(t.min()), int(qt.min()) if len(qt) else 0)
    span = max(int(t.max()), int(qt.max()) if len(qt) else 0) - tmin + 2
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
    if not path.is_file():
        raise DataError.at(path, "missing file")
    try:
        frame = pd.read_csv(path, sep=sep, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError.at(path, "empty file; expected a header and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError.at(path, f"unparsable ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise DataError.at(path, "no rows; expected at least one")
    return frame


def require_columns(frame: pd.DataFrame, columns: Sequence[str], where: str | Path) -> None:
    for c in columns:
        if c not in frame.columns:
            raise DataError.missing_column(where, c, frame.columns, "column", f"; expected columns {list(columns)}")


def numeric_column(frame: pd.DataFrame, column: str, where: str | Path, integer: bool = False) -> np.ndarray:
    """A column as numbers; any unparsable or missing value is a one-line error."""
    col = pd.to_numeric(frame[column], errors="coerce")
    bad = col.isna() & frame[column].notna() | frame[column].isna()
    if bad.any():
        first = frame[column][bad].iloc[0]
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError.at(where, f"unparsable value {first!r} at data row {row + 1}; expected a number", column)
    values = col.to_numpy()
    if integer:
        if not np.all(np.mod(values, 1) == 0):
            raise DataError.at(where, "non-integer value(s); expected integer ids", column)
        return values.astype(np.int64)
    if not np.all(np.isfinite(values)):
        raise DataError.at(where, "infinite value(s); expected finite numbers", column)
    return values.astype(np.float64)


def binary_labels(frame: pd.DataFrame, column: str, where: str | Path) -> np.ndarray:
    values = numeric_column(frame, column, where)
    bad = (values != 0) & (values != 1)
    if bad.any():
        raise DataError.at(where, f"label {values[bad][0]:g}; expected labels in {{0, 1}}", column)
    return values.astype(np.int8)
