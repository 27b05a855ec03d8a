"""The whole configuration of a training run: one flat tree of dotted keys.

Sections: ``augment.*`` (the augmenters), ``model.*`` (encoders, fusion, multi-task architecture),
``loss.*`` (task-loss weighting), ``optim.*`` and ``train.*``. The same key names a value in YAML,
in ``--set``, in search spaces and in results tables.

A key whose value chooses a plug-in (``model.fusion: cross``) owns the plug-ins' parameters below
it (``model.fusion.layers``); each such key records which choices use it, so that a search space
can search it only under those choices and docs can say when it matters. YAML may be nested
(``model: {fusion: cross}``) or flat (``model.fusion: cross``); a choice that has parameters is
written ``fusion: {name: cross, layers: 2}`` when nested.

``loss.weights.<task>`` is one key per task of the dataset (default 1.0); the names are checked
against the dataset when the model is built.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rectune.config import Params, check_value, flatten, param, unknown_key
from rectune.errors import ConfigError
from rectune.registry import Registry


@dataclass(frozen=True)
class Key:
    name: str
    default: Any
    type: Any
    meta: dict
    used_by: tuple[str, tuple[str, ...]] | None = None
    """``(choice key, choices)``: the key only matters when the choice key has one of these values."""

    @property
    def help(self) -> str:
        return self.meta.get("help", "")


def keys_of(prefix: str, params: type[Params], used_by=None) -> list[Key]:
    hints = typing.get_type_hints(params)
    out = []
    for f in dataclasses.fields(params):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append(Key(f"{prefix}.{f.name}", default, hints[f.name], dict(f.metadata), used_by))
    return out


def choice_keys(key: str, registry: Registry, default: str, help: str) -> list[Key]:
    """The choice key itself plus the parameters of every plug-in of ``registry`` below it.

    Plug-ins that declare a parameter of the same name share the key (``model.mtl.experts`` for
    both MMoE and PLE); they must agree on its type and default.
    """
    keys = [Key(key, default, str, {"help": help, "choices": tuple(registry.names())})]
    seen: dict[str, Key] = {}
    users: dict[str, list[str]] = {}
    for name, plugin in registry.items():
        for k in keys_of(key, getattr(plugin, "Params", Params)):
            if k.name in seen and (seen[k.name].default != k.default or seen[k.name].type != k.type):
                raise ValueError(f"{k.name}: plug-ins disagree on its type or default")
            seen.setdefault(k.name, k)
            users.setdefault(k.name, []).append(name)
    for name, k in seen.items():
        keys.append(dataclasses.replace(k, used_by=(key, tuple(users[name]))))
    return keys


TASK_WEIGHT_PREFIX = "loss.weights."


@dataclass
class OptimParams(Params):
    lr: float = param(3e-3, "Adam learning rate", low=1e-6, high=1.0)
    weight_decay: float = param(0.0, "L2 penalty on the dense layers (not on the embeddings)", low=0.0, high=1.0)
    emb_l2: float = param(0.0, "L2 penalty on the embedding rows used by each batch", low=0.0, high=1.0)
    ema: float = param(0.0, "decay of an exponential moving average of the weights, updated after every step "
                       "(warmed up as min(ema, (1+t)/(10+t)) at step t); valid and test score the average and "
                       "the best epoch keeps it (0 = off: the weights as trained)", low=0.0, high=0.9999)
    schedule: str = param("constant", "learning rate over the epochs: constant, cosine (lr·½(1+cos(π·e/E))) or "
                          "linear (lr·(1−e/E)) in epoch e of E = train.epochs, set at each epoch's start",
                          choices=("constant", "cosine", "linear"))


@dataclass
class TrainParams(Params):
    epochs: int = param(5, "maximum number of epochs", low=1, high=1000)
    batch_size: int = param(1024, "rows per training batch (per worker)", low=8, high=1 << 20)
    patience: int = param(2, "stop after this many epochs without a better valid metric (0 = never)",
                          low=0, high=1000)
    metric: str = param("valid/mean_auc", "the metric that picks the best epoch and stops early "
                        "(valid/<task>_auc, valid/mean_auc, valid/<task>_logloss ...)")
    metric_weights: list[str] = param(None, "metric:weight items whose weighted mean is reported as valid/weighted "
                                      "(valid/weighted_loss for losses), e.g. valid/click_auc:0.7",
                                      default_factory=list)
    seed: int = param(0, "seed of the model's initialisation, the shuffles and the augmentation", low=0)
    amp: bool = param(True, "mixed precision (bfloat16 autocast) when the run has GPUs")
    eval_batch_size: int = param(8192, "rows per batch when scoring valid and test", low=8, high=1 << 22)


def all_keys() -> list[Key]:
    """Every key of the tree (the plug-in registries are imported here so that all are known)."""
    from rectune.augment import AUGMENTERS
    from rectune.models.fusion import FUSIONS
    from rectune.models.model import ModelParams, KGParams
    from rectune.models.mtl import ARCHITECTURES
    from rectune.models.weighting import WEIGHTINGS

    keys: list[Key] = []
    for name, cls in AUGMENTERS.items():
        keys += keys_of(f"augment.{name}", cls.Params)
    keys += keys_of("model", ModelParams)
    keys += [Key("model.kg", "none", str, {"help": "item knowledge-graph encoder: none, or aggregation of each "
                                                    "item's neighbours per relation by mean or attention",
                                           "choices": ("none", "mean", "attention")})]
    keys += [dataclasses.replace(k, used_by=("model.kg", ("mean", "attention"))) for k in keys_of("model.kg", KGParams)]
    keys += choice_keys("model.fusion", FUSIONS, "concat", "how the modalities are fused")
    keys += choice_keys("model.mtl", ARCHITECTURES, "mmoe", "multi-task architecture")
    keys += choice_keys("loss.weighting", WEIGHTINGS, "fixed", "how the task losses are weighted")
    keys += keys_of("optim", OptimParams)
    keys += keys_of("train", TrainParams)
    return keys


_KEYS: dict[str, Key] | None = None


def key_table() -> dict[str, Key]:
    global _KEYS
    if _KEYS is None:
        _KEYS = {k.name: k for k in all_keys()}
    return _KEYS


def _nested_choice(tree: dict, prefix: str = "") -> dict:
    """``{fusion: {name: cross, layers: 2}}`` -> ``{fusion: cross, fusion.layers: 2}`` (for flatten)."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and "name" in v and key in key_table():
            out[k] = v["name"]
            for sub, val in v.items():
                if sub != "name":
                    out[f"{k}.{sub}"] = _nested_choice(val, f"{key}.{sub}.") if isinstance(val, dict) else val
        elif isinstance(v, dict):
            out[k] = _nested_choice(v, key + ".")
        else:
            out[k] = v
    return out


class RunConfig:
    """A checked configuration: ``config["model.fusion"]``, ``config.params("model.fusion")``."""

    def __init__(self, values: dict[str, Any] | None = None, source: str | None = None):
        self.source = source
        self.values: dict[str, Any] = {k: copy.deepcopy(key.default) for k, key in key_table().items()}
        for k, v in (values or {}).items():
            self.set(k, v)

    # ---- building ---------------------------------------------------------------------------
    @staticmethod
    def valid_keys() -> list[str]:
        return list(key_table()) + [TASK_WEIGHT_PREFIX + "<task>"]

    def set(self, key: str, value: Any) -> None:
        where = f"{self.source}: " if self.source else ""
        if key.startswith(TASK_WEIGHT_PREFIX) and len(key) > len(TASK_WEIGHT_PREFIX):
            self.values[key] = check_value(where + key, value, float, {"low": 0.0})
            return
        spec = key_table().get(key)
        if spec is None:
            err = unknown_key(key, self.valid_keys())
            raise ConfigError(where + str(err)) if where else err
        self.values[key] = check_value(where + key, value, spec.type, spec.meta)

    def update(self, values: dict[str, Any]) -> "RunConfig":
        for k, v in values.items():
            self.set(k, v)
        return self

    @classmethod
    def from_mapping(cls, tree: dict, source: str | None = None) -> "RunConfig":
        return cls(flatten(_nested_choice(tree)), source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> "RunConfig":
        from rectune.errors import DataError

        path = Path(path)
        try:
            tree = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise DataError(f"{path}: not valid YAML{where}") from None
        if tree is None:
            tree = {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(tree).__name__}")
        return cls.from_mapping(tree, source=str(path))

    # ---- reading ---------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key.startswith(TASK_WEIGHT_PREFIX):
            return self.values.get(key, 1.0)
        return self.values[key]

    def params(self, key: str, plugin_params: type[Params]) -> Params:
        """The parameters below ``key`` as ``plugin_params`` (a plug-in's own Params class)."""
        names = plugin_params.keys()
        return plugin_params(**{n: copy.deepcopy(self.values[f"{key}.{n}"]) for n in names})

    def section(self, prefix: str) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if k.startswith(prefix + ".")}

    def task_weights(self, tasks: list[str]) -> dict[str, float]:
        for k in self.values:
            if k.startswith(TASK_WEIGHT_PREFIX) and k[len(TASK_WEIGHT_PREFIX):] not in tasks:
                raise ConfigError(f"{k}: the dataset has no task '{k[len(TASK_WEIGHT_PREFIX):]}'; "
                                  f"tasks: {', '.join(tasks)}")
        return {t: float(self[TASK_WEIGHT_PREFIX + t]) for t in tasks}

    def augment(self):
        from rectune.augment import AugmentConfig

        return AugmentConfig(self.section("augment"))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def changed(self) -> dict[str, Any]:
        """The keys that differ from their defaults (what a run folder's name or a log shows)."""
        table = key_table()
        return {k: v for k, v in self.values.items() if k not in table or table[k].default != v}

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return f"RunConfig({self.changed()})"
