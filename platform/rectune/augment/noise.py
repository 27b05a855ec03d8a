"""``noise``: Gaussian noise on dense features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rectune.augment import Augmenter, register
from rectune.batches import Batch
from rectune.config import Params as ParamsBase
from rectune.config import param
from rectune.errors import ConfigError


@register
class Noise(Augmenter):
    name = "noise"

    @dataclass
    class Params(ParamsBase):
        std: float = param(0.0, "noise std, in units of each dense field's training std (0 = off)", low=0.0)
        fields: list[str] = param(None, "dense fields to perturb (empty = all)", default_factory=list)

    @classmethod
    def enabled(cls, params) -> bool:
        return params.std > 0

    def __init__(self, params, context):
        super().__init__(params, context)
        schema = context.schema
        names = self.pick_fields("fields", "dense", params.fields)
        if not names:
            raise ConfigError(f"{self.key('std')}: the dataset '{schema.name}' has no dense field to perturb")
        self.scale = {n: np.float32(params.std * ((schema.field(n).stats or {}).get("std") or 1.0)) for n in names}

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        out = dict(batch)
        for n, s in self.scale.items():
            x = batch[n]
            out[n] = x + rng.standard_normal(len(x), dtype=np.float32) * s
        return out
