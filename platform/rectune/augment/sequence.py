"""``sequence``: CL4SRec-style crop, mask and reorder of the behaviour history.

Sequences are right-aligned (most recent last, 0-padded on the left). Each operation runs on every
sequence of at least two items:

- ``crop``: a random contiguous window of ``ceil((1 - crop) * length)`` items is kept;
- ``mask``: each item is replaced by the unknown id (0) with probability ``mask``;
- ``reorder``: a random window of ``floor(reorder * length)`` items is shuffled in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rectune.augment import Augmenter, register
from rectune.batches import Batch, sequence_lengths
from rectune.config import Params as ParamsBase
from rectune.config import param
from rectune.errors import ConfigError


@register
class Sequence(Augmenter):
    name = "sequence"

    @dataclass
    class Params(ParamsBase):
        crop: float = param(0.0, "share of the history cut away by a random crop (0 = off)", low=0.0, high=0.9)
        mask: float = param(0.0, "probability that a history item is masked (0 = off)", low=0.0, high=1.0)
        reorder: float = param(0.0, "share of the history shuffled in a random window (0 = off)", low=0.0, high=1.0)
        fields: list[str] = param(None, "sequence fields (empty = all)", default_factory=list)

    @classmethod
    def enabled(cls, params) -> bool:
        return params.crop > 0 or params.mask > 0 or params.reorder > 0

    def __init__(self, params, context):
        super().__init__(params, context)
        self.fields = self.pick_fields("fields", "sequence", params.fields)
        if not self.fields:
            raise ConfigError(f"augment.sequence: the dataset '{context.schema.name}' has no sequence field")

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        out = dict(batch)
        for name in self.fields:
            seq = batch[name]
            if self.params.crop > 0:
                seq = crop(seq, self.params.crop, rng)
            if self.params.reorder > 0:
                seq = reorder(seq, self.params.reorder, rng)
            if self.params.mask > 0:
                lengths = sequence_lengths(seq)
                inside = np.arange(seq.shape[1])[None, :] >= (seq.shape[1] - lengths)[:, None]
                drop = inside & (rng.random(seq.shape, dtype=np.float32) < self.params.mask)
                seq = np.where(drop, 0, seq).astype(np.int32, copy=False)
            out[name] = seq
        return out


def crop(seq: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    n, m = seq.shape
    length = sequence_lengths(seq)
    keep = np.where(length >= 2, np.maximum(1, np.ceil((1.0 - share) * length)).astype(np.int64), length)
    start = (rng.random(n) * (length - keep + 1)).astype(np.int64)  # offset of the window in the sequence
    j = np.arange(m)[None, :]
    src = (m - length + start)[:, None] + (j - (m - keep)[:, None])
    valid = j >= (m - keep)[:, None]
    picked = np.take_along_axis(seq, np.clip(src, 0, m - 1), axis=1)
    return np.where(valid, picked, 0).astype(np.int32, copy=False)


def reorder(seq: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    n, m = seq.shape
    length = sequence_lengths(seq)
    width = np.floor(share * length).astype(np.int64)
    begin = (m - length) + (rng.random(n) * (length - width + 1)).astype(np.int64)
    pos = np.broadcast_to(np.arange(m, dtype=np.float64), (n, m))
    inside = (pos >= begin[:, None]) & (pos < (begin + width)[:, None]) & (width[:, None] >= 2)
    # keys inside the window are random within [begin, begin + width): the window stays in place
    keys = np.where(inside, begin[:, None] + rng.random((n, m)) * width[:, None], pos)
    order = np.argsort(keys, axis=1, kind="stable")
    return np.take_along_axis(seq, order, axis=1)
