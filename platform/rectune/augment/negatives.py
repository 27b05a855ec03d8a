"""``negatives``: more sampled negatives, drawn per epoch, beside the ones the rows carry.

Each positive row of ``task`` (the first task when empty: the funnel's root, click) is copied
``ratio`` times on average (a fractional ratio: the whole part for every positive, one more with
the fraction's chance) with its item replaced by an item drawn from the catalogue (items.parquet),
uniformly as the benchmark tables' own negatives are (``alpha`` 0), or in proportion to
(training positives + 1) ** ``alpha``, which makes popular items harder negatives. Every task
label of a copy is 0; the item's attribute fields (genre, brand, price ...) follow the drawn item
from items.parquet; the user's fields and history stay the positive's.

A drawn item is redrawn (up to three times, then the copy is dropped) when it is the row's own
item, an item of the row's item sequences (``hist_items``) or an item the user has a positive of
``task`` with in the train split: a sampled negative is an item the user was not seen to take.
Copies carry negative row ids, as synthetic rows do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rectune.augment import Augmenter, register
from rectune.batches import ROW_ID, Batch, append_rows
from rectune.config import Params as ParamsBase
from rectune.config import param
from rectune.errors import ConfigError

_REDRAWS = 3


@register
class Negatives(Augmenter):
    name = "negatives"

    @dataclass
    class Params(ParamsBase):
        ratio: float = param(0.0, "extra sampled negatives per positive of `task` (0 = off)", low=0.0, high=16.0)
        task: str = param("", "the task whose positives are copied as negatives (empty = the first task)")
        alpha: float = param(0.0, "draw items in proportion to (training positives + 1) ** alpha "
                             "(0 = uniformly, as the rows' own negatives)", low=0.0, high=1.0)

    @classmethod
    def enabled(cls, params) -> bool:
        return params.ratio > 0

    def __init__(self, params, context):
        super().__init__(params, context)
        schema = context.schema
        if schema.item_field is None:
            raise ConfigError(f"{self.key('ratio')}: the dataset '{schema.name}' has no item field to draw negatives from")
        self.task = params.task or schema.tasks[0]
        if self.task not in schema.tasks:
            raise ConfigError(f"{self.key('task')}: '{params.task}' is not a task of dataset "
                              f"'{schema.name}'; tasks: {list(schema.tasks)}")
        self.item, self.user = schema.item_field, schema.user_field
        self.n_items = schema.field(self.item).vocab_size
        self.sequences = [f.name for f in schema.row_fields
                          if f.kind == "sequence" and f.shares_vocab_with == self.item]
        self.attributes = context.cached("item_attributes", context.dataset.item_attributes)
        self.seen, counts = context.cached(f"negatives:train:{self.task}", lambda: self._train_positives(context))
        ids = context.cached("negatives:catalogue", lambda: self._catalogue(context))
        if len(ids) < 2:
            raise ConfigError(f"{self.key('ratio')}: items.parquet of dataset '{schema.name}' has "
                              f"{len(ids)} item(s); sampled negatives need at least 2")
        self.catalogue = ids
        if params.alpha > 0:
            w = (counts[ids] + 1.0) ** params.alpha
            self.cdf = np.cumsum(w) / w.sum()
        else:
            self.cdf = None

    def _catalogue(self, context) -> np.ndarray:
        ids = context.dataset.items(["item_id"]).column(0).to_numpy()
        ids = np.unique(ids.astype(np.int64))
        return ids[(ids > 0) & (ids < self.n_items)]

    def _train_positives(self, context) -> tuple[np.ndarray, np.ndarray]:
        """(sorted user * n_items + item keys of the train split's positives, positives per item)."""
        cols = [self.item, self.task] + ([self.user] if self.user else [])
        t = context.dataset.read_split("train", cols)
        pos = t.column(self.task).to_numpy() > 0.5
        items = t.column(self.item).to_numpy().astype(np.int64)[pos]
        counts = np.bincount(items, minlength=self.n_items).astype(np.float64)
        if not self.user:
            return np.zeros(0, np.int64), counts
        users = t.column(self.user).to_numpy().astype(np.int64)[pos]
        return np.unique(users * self.n_items + items), counts

    def _draw(self, k: int, rng: np.random.Generator) -> np.ndarray:
        if self.cdf is None:
            return self.catalogue[rng.integers(0, len(self.catalogue), k)]
        return self.catalogue[np.minimum(np.searchsorted(self.cdf, rng.random(k), "right"), len(self.catalogue) - 1)]

    def _collides(self, batch: Batch, src: np.ndarray, items: np.ndarray) -> np.ndarray:
        bad = items == batch[self.item][src]
        for name in self.sequences:
            if name in batch:
                bad |= (batch[name][src] == items[:, None]).any(axis=1)
        if self.user and self.user in batch and len(self.seen):
            key = batch[self.user][src].astype(np.int64) * self.n_items + items
            at = np.minimum(np.searchsorted(self.seen, key), len(self.seen) - 1)
            bad |= self.seen[at] == key
        return bad

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        pos = np.flatnonzero(batch[self.task] > 0.5)
        if not len(pos):
            return batch
        whole = int(self.params.ratio)
        copies = whole + (rng.random(len(pos)) < self.params.ratio - whole)
        src = np.repeat(pos, copies)
        items = self._draw(len(src), rng)
        bad = self._collides(batch, src, items)
        for _ in range(_REDRAWS):
            if not bad.any():
                break
            items[bad] = self._draw(int(bad.sum()), rng)
            bad[bad] = self._collides(batch, src[bad], items[bad])
        src, items = src[~bad], items[~bad]
        k = len(src)
        if k == 0:
            return batch
        extra = {name: col[src] for name, col in batch.items()}
        extra[self.item] = items
        for name, table in self.attributes.items():
            if name in batch:
                extra[name] = table[items]
        for t in self.context.schema.tasks:
            if t in batch:
                extra[t] = np.zeros(k, batch[t].dtype)
        extra[ROW_ID] = -(np.arange(1, k + 1, dtype=np.int64))
        return append_rows(batch, extra)
