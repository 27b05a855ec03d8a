"""``mask``: replace sparse ids by the unknown id (0) with probability ``prob``, per field group.

A masked item id hides the item's *identity* only: the batch keeps the row's item in
``batches.ITEM_KEY``, and the model reads the item's text and graph neighbours by it. So a masked
row teaches what a rare item needs at test time (an unknown id, with its text and neighbours;
see ``model.min_id_count``). Masking runs after every other data-stream augmenter, so it also
masks substituted neighbours and synthetic rows, and ``ITEM_KEY`` is the row's final item."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rectune.augment import Augmenter, register
from rectune.batches import ITEM_KEY, Batch
from rectune.config import Params as ParamsBase
from rectune.config import param
from rectune.data.schema import SIDES
from rectune.errors import ConfigError


@register
class Mask(Augmenter):
    name = "mask"
    runs_last = True

    @dataclass
    class Params(ParamsBase):
        prob: float = param(0.0, "probability that a sparse id is replaced by the unknown id (0 = off)",
                            low=0.0, high=1.0)
        groups: list[str] = param(None, "field groups (sides) to mask: user, item, context",
                                  choices=SIDES, default_factory=lambda: list(SIDES))
        fields: list[str] = param(None, "explicit sparse fields to mask (overrides groups)", default_factory=list)

    @classmethod
    def enabled(cls, params) -> bool:
        return params.prob > 0

    def __init__(self, params, context):
        super().__init__(params, context)
        schema = context.schema
        if params.fields:
            self.fields = self.pick_fields("fields", "sparse", params.fields)
        else:
            self.fields = [f.name for f in schema.fields if f.kind == "sparse" and f.side in params.groups]
        if not self.fields:
            raise ConfigError(f"{self.key('groups')}: no sparse field in groups {params.groups}")
        self.item = schema.item_field if schema.item_field in self.fields else None

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        out = dict(batch)
        if self.item and ITEM_KEY not in out:
            out[ITEM_KEY] = batch[self.item]
        n = len(batch[self.fields[0]])
        drop = rng.random((len(self.fields), n), dtype=np.float32) < self.params.prob
        for k, name in enumerate(self.fields):
            out[name] = np.where(drop[k], 0, batch[name]).astype(np.int32, copy=False)
        return out
