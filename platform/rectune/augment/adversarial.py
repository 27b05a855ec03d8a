"""``adversarial``: FGM / PGD perturbation of the embedding outputs.

It needs the model's gradient, so the training step applies it; its keys live under
``augment.adversarial.*`` with the rest of the augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

from rectune.augment import Augmenter, register
from rectune.config import Params as ParamsBase
from rectune.config import param


@register
class Adversarial(Augmenter):
    name = "adversarial"
    in_model = True

    @dataclass
    class Params(ParamsBase):
        method: str = param("none", "none, fgm (one step) or pgd (several projected steps)",
                            choices=("none", "fgm", "pgd"))
        eps: float = param(0.5, "perturbation radius, relative to the gradient-normalised step", low=0.0)
        weight: float = param(1.0, "weight of the adversarial loss", low=0.0)
        steps: int = param(3, "PGD steps", low=1, high=20)

    @classmethod
    def enabled(cls, params) -> bool:
        return params.method != "none"
