"""``mask``: replace sparse ids by the unknown id (0) with probability ``prob``, per field group."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rectune.augment import Augmenter, register
from rectune.batches import Batch
from rectune.config import Params as ParamsBase
from rectune.config import param
from rectune.data.schema import SIDES
from rectune.errors import ConfigError


@register
class Mask(Augmenter):
    name = "mask"

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

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        out = dict(batch)
        n = len(batch[self.fields[0]])
        drop = rng.random((len(self.fields), n), dtype=np.float32) < self.params.prob
        for k, name in enumerate(self.fields):
            out[name] = np.where(drop[k], 0, batch[name]).astype(np.int32, copy=False)
        return out
