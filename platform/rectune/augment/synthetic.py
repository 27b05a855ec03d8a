"""``synthetic``: synthetic rows mixed into the stream at ``ratio`` of the real rows.

Generator ``interpolate`` (the cheap baseline): each synthetic row has two real parents from the
same batch with the same label vector; dense fields are interpolated at a random point between the
parents, every sparse and sequence field is taken from one parent or the other at random. The labels
are the parents' own, so the label logic holds (no conversion without a click). ``only`` restricts
the parents: ``positives:<task>`` (oversample a rare task) or ``negatives`` (all tasks 0).
Synthetic rows carry a negative row id.

Generator ``gan``: a small conditional tabular GAN (CTGAN-style, :mod:`rectune.augment.gan`)
trained once on the train split per dataset and settings (``gan_steps``, ``gan_top``) and cached
on disk. Each synthetic row is conditioned on the label vector of a random eligible row of the
batch (``only`` as above), so the label logic holds; entity attributes (brand, category, price,
age bucket ...) are looked up from the generated item / user, and sequence fields are copied from
a real row of the batch with the same labels (of the same user when the batch has one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rectune.augment import Augmenter, register
from rectune.batches import ROW_ID, Batch, append_rows
from rectune.config import Params as ParamsBase
from rectune.config import param
from rectune.errors import ConfigError


@register
class Synthetic(Augmenter):
    name = "synthetic"

    @dataclass
    class Params(ParamsBase):
        ratio: float = param(0.0, "synthetic rows per real row (0 = off)", low=0.0, high=2.0)
        generator: str = param("interpolate", "interpolate (pairs of same-label rows) or gan (a conditional GAN "
                               "trained once on the train split, cached)", choices=("interpolate", "gan"))
        only: str = param("all", "which rows are parents: all, negatives, or positives:<task>")
        gan_steps: int = param(600, "gan: training steps (batches of 500 rows)", low=10, high=100_000)
        gan_top: int = param(256, "gan: codes of a high-cardinality field (user, item) generated one by one; "
                             "the rest share one slot filled from the empirical tail", low=2, high=4096)

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
        self.gan = None
        if params.generator == "gan":
            from rectune.augment import gan

            settings = gan.GanSettings(steps=params.gan_steps, top=params.gan_top)
            self.gan = context.cached(f"gan:{settings}", lambda: gan.load_or_train(context.dataset, settings))
            self.sequences = schema.field_names(kind="sequence")
            self.user = schema.user_field
            self.user_vocab = schema.field(self.user).vocab_size if self.user else 1

    def _eligible(self, batch: Batch, labels: np.ndarray) -> np.ndarray:
        if self.params.only == "negatives":
            return (labels == 0).all(axis=1)
        if self.params.only.startswith("positives:"):
            return batch[self.params.only[10:]] == 1
        return np.ones(len(labels), bool)

    def _generate(self, batch: Batch, rng: np.random.Generator, labels: np.ndarray, idx: np.ndarray, m: int) -> Batch:
        """``m`` rows of the GAN, conditioned on the label vectors of random rows ``idx``."""
        parents = idx[rng.integers(0, len(idx), m)]
        combo = self.gan.combo_index(labels[parents])
        combo = combo[combo >= 0]  # a label vector never seen in train: no condition for it
        k = len(combo)
        if k == 0:
            return batch
        synth = self.gan.sample(combo, rng)
        # sequences: from a batch row with the same label vector, of the same user when there is one
        code = np.rint(labels).astype(np.int64) @ (1 << np.arange(len(self.tasks), dtype=np.int64))
        want = np.rint(np.stack([synth[t] for t in self.tasks], axis=1)).astype(np.int64) \
            @ (1 << np.arange(len(self.tasks), dtype=np.int64))
        V = self.user_vocab
        user = batch[self.user].astype(np.int64) if self.user in batch else np.zeros(len(code), np.int64)
        s_user = synth[self.user].astype(np.int64) if self.user in synth else np.zeros(k, np.int64)
        key = code * V + user
        order = np.argsort(key, kind="stable")
        skey = key[order]
        lo = np.searchsorted(skey, want * V + s_user, "left")
        hi = np.searchsorted(skey, want * V + s_user, "right")
        none = hi == lo
        lo = np.where(none, np.searchsorted(skey, want * V, "left"), lo)
        hi = np.where(none, np.searchsorted(skey, (want + 1) * V, "left"), hi)
        src = order[lo + (rng.random(k) * (hi - lo)).astype(np.int64)]
        for name in self.sequences:
            if name in batch:
                synth[name] = batch[name][src]
        synth[ROW_ID] = -(np.arange(1, k + 1, dtype=np.int64))
        return append_rows(batch, synth)

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        n = len(batch[ROW_ID])
        labels = np.stack([batch[t] for t in self.tasks], axis=1)
        idx = np.flatnonzero(self._eligible(batch, labels))
        m = int(rng.binomial(n, min(self.params.ratio, 2.0) / 2.0) * 2) if self.params.ratio else 0
        if self.gan is not None:
            return self._generate(batch, rng, labels, idx, m) if len(idx) and m else batch
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
        return append_rows(batch, synth)
