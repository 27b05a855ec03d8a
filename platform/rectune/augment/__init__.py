"""Sample augmentation: every augmenter is a plug-in of the ``AUGMENTERS`` registry.

An augmenter is a class with

- ``name`` — its key under ``augment.`` (``augment.mask.prob`` is parameter ``prob`` of ``mask``);
- ``Params`` — a :class:`rectune.config.Params` dataclass whose defaults leave it switched off;
- ``enabled(params)`` — whether the parameters switch it on;
- ``__init__(params, context)`` — one-off preparation against the dataset (neighbour tables,
  field lists); errors that depend on the dataset are raised here, naming the key;
- ``__call__(batch, rng)`` — the random part, run on every batch of every epoch, returning a
  new batch (inputs are never modified in place).

Augmenters that need the model's gradient (``adversarial``) declare ``in_model = True``: their
parameters live here, the training step applies them. An augmenter that declares ``runs_last = True``
(``mask``) runs after every other data-stream augmenter, whatever the registry order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from rectune.batches import ROW_ID, Batch
from rectune.config import Params, flatten, unknown_key
from rectune.data.prepared import PreparedDataset
from rectune.registry import Registry

AUGMENTERS: Registry[type["Augmenter"]] = Registry("augmenter")


class Augmenter:
    name: ClassVar[str]
    Params: ClassVar[type[Params]]
    in_model: ClassVar[bool] = False
    runs_last: ClassVar[bool] = False

    def __init__(self, params: Params, context: "Context"):
        self.params = params
        self.context = context

    @classmethod
    def enabled(cls, params: Params) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:  # pragma: no cover
        raise NotImplementedError

    def key(self, param: str) -> str:
        return f"augment.{self.name}.{param}"

    def pick_fields(self, param: str, kind: str, names: list[str]) -> list[str]:
        """``names`` checked to be fields of ``kind``; all fields of that kind when empty."""
        from rectune.errors import ConfigError

        valid = self.context.schema.field_names(kind=kind)
        for n in names:
            if n not in valid:
                raise ConfigError(f"{self.key(param)}: '{n}' is not a {kind} field; {kind} fields: {valid}")
        return list(names) or valid


def register(cls: type[Augmenter]) -> type[Augmenter]:
    return AUGMENTERS.register(cls.name)(cls)


@dataclass
class Context:
    """What augmenters may read of the dataset, loaded lazily and shared between them."""

    dataset: PreparedDataset
    _cache: dict = field(default_factory=dict)

    @property
    def schema(self):
        return self.dataset.schema

    def cached(self, key: str, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


class AugmentConfig:
    """The ``augment.*`` part of a configuration: one Params object per registered augmenter."""

    def __init__(self, values: dict[str, Any] | None = None):
        self.params: dict[str, Params] = {name: cls.Params() for name, cls in AUGMENTERS.items()}
        for key, value in (values or {}).items():
            self.set(key, value)
        self.check()

    @staticmethod
    def valid_keys() -> list[str]:
        return [f"augment.{n}.{k}" for n, cls in AUGMENTERS.items() for k in cls.Params.keys()]

    def set(self, key: str, value: Any) -> None:
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "augment" or parts[1] not in self.params \
                or parts[2] not in type(self.params[parts[1]]).keys():
            raise unknown_key(key, self.valid_keys())
        setattr(self.params[parts[1]], parts[2], value)

    def check(self) -> None:
        for name, p in self.params.items():
            p.check(f"augment.{name}")

    @classmethod
    def from_mapping(cls, tree: dict) -> "AugmentConfig":
        """From ``{"augment": {"mask": {"prob": 0.3}}}`` or dotted keys."""
        return cls(flatten(tree))

    def enabled(self) -> list[str]:
        return [n for n, p in self.params.items() if AUGMENTERS.get(n).enabled(p)]

    def to_dict(self) -> dict[str, Any]:
        return {f"augment.{n}.{k}": v for n, p in self.params.items() for k, v in dataclasses.asdict(p).items()}


class AugmentPlan:
    """The enabled data-stream augmenters, prepared once against a dataset, applied per batch.

    Randomness: each batch gets its own generator seeded by (seed, epoch, the batch's first row
    id, its size), so an epoch is reproducible from (seed, epoch) and differs between epochs.
    """

    def __init__(self, config: AugmentConfig, dataset: PreparedDataset, seed: int = 0):
        self.config = config
        self.seed = seed
        context = Context(dataset)
        self.augmenters: list[Augmenter] = []
        for name in config.enabled():
            cls = AUGMENTERS.get(name)
            if cls.in_model:
                continue
            self.augmenters.append(cls(config.params[name], context))
        self.augmenters.sort(key=lambda a: a.runs_last)  # stable: registry order otherwise

    def __bool__(self) -> bool:
        return bool(self.augmenters)

    def apply(self, batch: Batch, epoch: int) -> Batch:
        rows = batch.get(ROW_ID)
        first = int(rows[0]) if rows is not None and len(rows) else 0
        n = len(next(iter(batch.values()))) if batch else 0
        for k, aug in enumerate(self.augmenters):
            rng = np.random.default_rng([self.seed, epoch, k, first, n])
            batch = aug(batch, rng)
        return batch


# the built-in augmenters
from rectune.augment import adversarial, mask, negatives, neighbor, noise, sequence, synthetic  # noqa: E402,F401

__all__ = ["AUGMENTERS", "Augmenter", "AugmentConfig", "AugmentPlan", "Context", "register"]
