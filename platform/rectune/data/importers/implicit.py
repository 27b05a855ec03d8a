"""From implicit-feedback positives to impression rows, shared by the RecBole and ReChorus importers.

Every source interaction is a positive (``click = 1``, other tasks from their rules); each gets
``neg_ratio`` negatives, distinct items drawn uniformly from those its user never interacted with,
carrying the positive's time and user features (all tasks 0). Rows are stored positive-first, each
followed by its negatives, in time order within each split. ``hist_items`` is the user's last
``hist_len`` positive items strictly before the row's time, most recent last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from rectune.data.importers.common import SplitSpec, expand_with_negatives, history, sample_negatives
from rectune.data.schema import SPLITS, Field

CLICK = "click"
HIST = "hist_items"


@dataclass
class Interactions:
    """Positives as codes, in source order."""

    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    """Tasks other than click, for each positive (0/1)."""


@dataclass
class SideFeatures:
    """Attributes of users or items: each field's values indexed by code (index 0 = unknown)."""

    fields: list[Field]
    values: dict[str, pa.Array]


def build_rows(
    inter: Interactions,
    n_items: int,
    user_side: SideFeatures,
    item_side: SideFeatures,
    split: SplitSpec,
    neg_ratio: int,
    hist_len: int,
    seed: int,
) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    n = len(inter.users)
    order = np.empty(n, dtype=np.int64)
    order[np.lexsort((np.arange(n), inter.ts))] = np.arange(n)  # rank in (time, source order)
    split_of = split.assign(inter.users, order)
    hist = history(inter.users, inter.ts, order, inter.items, hist_len)
    neg = sample_negatives(inter.users, inter.items, n_items, neg_ratio, rng)

    out: dict[str, pa.Table] = {}
    for s_index, s_name in enumerate(SPLITS):
        pos = np.flatnonzero(split_of == s_index)
        pos = pos[np.argsort(order[pos], kind="stable")]
        p_idx, slot, is_pos = expand_with_negatives(len(pos), neg[pos])
        src = pos[p_idx]
        items = np.where(is_pos, inter.items[src], neg[src, slot]).astype(np.int32)
        users = inter.users[src].astype(np.int32)
        cols: dict[str, pa.Array] = {"user_id": pa.array(users), "item_id": pa.array(items)}
        for f in user_side.fields:
            cols[f.name] = user_side.values[f.name].take(pa.array(users))
        for f in item_side.fields:
            cols[f.name] = item_side.values[f.name].take(pa.array(items))
        cols[HIST] = hist.take(pa.array(src))
        cols[CLICK] = pa.array(is_pos.astype(np.int8))
        for task, lab in inter.labels.items():
            cols[task] = pa.array(np.where(is_pos, lab[src], 0).astype(np.int8))
        cols["ts"] = pa.array(inter.ts[src].astype(np.int64))
        out[s_name] = pa.table(cols)
    return out


def history_field(n_item_codes: int, hist_len: int) -> Field:
    return Field(HIST, "sequence", side="user", vocab_size=n_item_codes, max_len=hist_len, shares_vocab_with="item_id")
