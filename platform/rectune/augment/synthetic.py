"""``synthetic``: synthetic rows mixed into the stream at ``ratio`` of the real rows.

Generator ``interpolate`` (the cheap baseline): each synthetic row has two real parents from the
same batch with the same label vector; dense fields are interpolated at a random point between the
parents, every sparse and sequence field is taken from one parent or the other at random. The labels
are the parents' own, so the label logic holds (no conversion without a click). ``only`` restricts
the parents: ``positives:<task>`` (oversample a rare task) or ``negatives`` (all tasks 0).
Synthetic rows carry a negative row id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rectune.augment import Augmenter, register
from rectune.batches import ROW_ID, Batch
from rectune.config import Params as ParamsBase
from rectune.config import param
from rectune.errors import ConfigError


@register
class Synthetic(Augmenter):
    name = "synthetic"

    @dataclass
    class Params(ParamsBase):
        ratio: float = param(0.0, "synthetic rows per real row (0 = off)", low=0.0, high=2.0)
        generator: str = param("interpolate", "interpolate (pairs of same-label rows)", choices=("interpolate",))
        only: str = param("all", "which rows are parents: all, negatives, or positives:<task>")

    @classmethod
    def enabled(cls, params) -> bool:
        return params.ratio > 0

    def __init__(self, params, context):
        super().__init__(params, context)
        schema = context.schema
        self.tasks = list(schema.tasks)
        self.dense = schema.field_names(kind="dense")
        self.discrete = [f.name for f in schema.row_fields if f.kind in ("sparse", "sequence")]
        only = params.only
        if only not in ("all", "negatives") and not (only.startswith("positives:") and only[10:] in self.tasks):
            raise ConfigError(f"{self.key('only')}: '{only}' is not one of all, negatives, "
                              + ", ".join(f"positives:{t}" for t in self.tasks))

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        n = len(batch[ROW_ID])
        labels = np.stack([batch[t] for t in self.tasks], axis=1)
        eligible = np.ones(n, bool)
        if self.params.only == "negatives":
            eligible = (labels == 0).all(axis=1)
        elif self.params.only.startswith("positives:"):
            eligible = batch[self.params.only[10:]] == 1
        idx = np.flatnonzero(eligible)
        m = int(rng.binomial(n, min(self.params.ratio, 2.0) / 2.0) * 2) if self.params.ratio else 0
        if len(idx) < 2 or m == 0:
            return batch
        # group the eligible rows by label vector; parents are two rows of the same group
        code = labels[idx] @ (2 ** np.arange(len(self.tasks)))
        order = np.argsort(code, kind="stable")
        idx, code = idx[order], code[order]
        start = np.searchsorted(code, code, side="left")
        size = np.searchsorted(code, code, side="right") - start
        first = rng.integers(0, len(idx), m)
        ok = size[first] >= 2
        first = first[ok]
        other = start[first] + (first - start[first] + 1 + rng.integers(0, np.maximum(size[first] - 1, 1))) % size[first]
        a, b = idx[first], idx[other]
        k = len(a)
        synth: Batch = {}
        for name in self.discrete:
            pick = rng.random(k) < 0.5
            col = batch[name]
            synth[name] = np.where(pick.reshape((-1,) + (1,) * (col.ndim - 1)), col[a], col[b])
        for name in self.dense:
            w = rng.random(k, dtype=np.float32)
            synth[name] = batch[name][a] * w + batch[name][b] * (1 - w)
        for t in self.tasks:
            synth[t] = batch[t][a]
        synth[ROW_ID] = -(np.arange(1, k + 1, dtype=np.int64))
        return {key: np.concatenate([batch[key], synth[key].astype(batch[key].dtype, copy=False)])
                if key in synth else batch[key] for key in batch}
