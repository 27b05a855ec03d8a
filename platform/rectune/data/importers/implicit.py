"""From implicit-feedback positives to impression rows, shared by the RecBole and ReChorus importers.

Every source interaction is a positive (``click = 1``, other tasks from their rules); each gets
``neg_ratio`` negatives, distinct items drawn uniformly from those its user never interacted with,
carrying the positive's time and user features (all tasks 0). Rows are stored positive-first, each
followed by its negatives, in time order within each split. ``hist_items`` is the user's last
``hist_len`` positive items strictly before the row's time, most recent last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from rectune.data.importers import Importer
from rectune.data.importers.common import SplitSpec, expand_with_negatives, history, sample_negatives
from rectune.data.schema import SPLITS, Field, Schema
from rectune.errors import ConfigError

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


@dataclass
class ImplicitImporter(Importer):
    """Options and schema shared by the implicit-feedback importers (subclasses may change defaults)."""

    neg_ratio: int = field(default=4, metadata={"help": "sampled negatives per interaction"})
    split: str = field(default="time:0.8,0.1,0.1", metadata={
        "help": "'time:TRAIN,VALID,TEST' (global by time) or 'loo' (per user, leave-last-out)"})
    hist_len: int = field(default=20, metadata={"help": "length of the behaviour history (hist_items)"})
    max_neighbors: int = field(default=50, metadata={"help": "related items kept per item and relation"})
    seed: int = field(default=2026, metadata={"help": "seed of the negative sampling and tie-breaking"})

    def __post_init__(self) -> None:
        self.split_spec = SplitSpec.parse(self.split)
        for name, low in (("neg_ratio", 0), ("hist_len", 1), ("max_neighbors", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected an integer >= {low}")

    def rows(self, inter: Interactions, n_item_codes: int, user_side: SideFeatures,
             item_side: SideFeatures) -> dict[str, pa.Table]:
        return build_rows(inter, n_item_codes - 1, user_side, item_side, self.split_spec,
                          self.neg_ratio, self.hist_len, self.seed)

    def schema(self, src: Path, kind: str, tasks: list[str], n_user_codes: int, n_item_codes: int,
               side_fields: list[Field], tasks_text: str, relations_text: str, options: dict) -> Schema:
        fields = [
            Field("user_id", "sparse", side="user", vocab_size=n_user_codes),
            Field("item_id", "sparse", side="item", vocab_size=n_item_codes),
            *[f for f in side_fields if f.kind != "text"],
            Field(HIST, "sequence", side="user", vocab_size=n_item_codes, max_len=self.hist_len,
                  shares_vocab_with="item_id"),
            *[f for f in side_fields if f.kind == "text"],
        ]
        files = ", ".join(sorted(p.name for p in src.iterdir() if p.is_file()))
        return Schema(
            name=src.name, tasks=tasks, fields=fields, meta_columns=["ts"],
            user_field="user_id", item_field="item_id",
            source=f"{kind} folder {src.name}: {files}",
            derivation=(
                f"Every interaction is a positive (click=1); {tasks_text}. {self.neg_ratio} negatives per "
                f"positive: distinct items the user never interacted with, with the positive's time and user "
                f"features, all tasks 0. Split '{self.split}'. hist_items: the user's last {self.hist_len} "
                f"positives strictly before the row's time, most recent last. Ids contiguous from 1 in "
                f"ascending raw order; 0 = padding/unknown. Relations: {relations_text}"
            ),
            seed=self.seed,
            provenance={"importer": kind.lower(), "src": str(src), "options": {
                **options, "neg_ratio": self.neg_ratio, "split": self.split, "hist_len": self.hist_len,
                "max_neighbors": self.max_neighbors, "seed": self.seed}},
        )
