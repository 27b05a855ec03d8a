"""Search spaces: a YAML file compiled into an Optuna define-by-run space, checked before anything runs.

::

    objective: valid/mean_auc          # one metric; or {weights: {valid/click_auc: 0.7, ...}};
                                       # or {metrics: [valid/click_auc, valid/conversion_auc]}
    budget: {trials: 8, concurrency: 2, time_limit_s: 1800}
    scheduler: {name: asha, grace_period: 1, reduction_factor: 2}     # or fifo
    sampler: {name: tpe, seed: 0, startup_trials: 4}                  # or random
    resources: {workers: 1, gpus_per_worker: 0}
    fixed:                              # config keys, nested or dotted (as in `rectune train --config`)
      train.epochs: 3
    search:                             # config keys (dotted) -> distribution
      augment.mask.prob: {float: [0.0, 0.3]}
      optim.lr: {float: [1.0e-4, 1.0e-2], log: true}
      model.mtl: {categorical: [shared_bottom, mmoe, ple]}
      model.mtl.experts: {int: [2, 8], when: {model.mtl: [mmoe, ple]}}
    start:                              # optional: points tried first, before the sampler's own
      - {augment.mask.prob: 0.0}        # a partial point: the sampler fills in the other keys

A key is searched only when every key of its ``when`` has one of the given values. A key that only
matters under some choices (``model.mtl.experts`` for MMoE and PLE: ``rectune keys`` says so)
gets that condition implied; a space where such a key could never matter is refused. Keys are
searched in file order, so a condition names a key above it. Every bound, choice and fixed value
is checked by the same rules as ``rectune train --set``.

The objective: with one metric the trial's best epoch is chosen by that metric; with ``weights``
the trainer reports ``valid/weighted`` (``train.metric_weights``) and that is the objective; with
``metrics`` the study is multi-objective (Optuna's Pareto front), the trial's best epoch is chosen
by ``train.metric`` and ASHA (one metric only) stops trials by it. The searcher receives each
metric's value at the trial's best epoch (``best/<metric>``).

``start`` points are enqueued in the study when the campaign begins (``enqueue_trial``, skipped
when the study already holds the same point, so ``--resume`` does not add them twice). They make
sure a campaign tries what a continuous range would almost never draw exactly, such as every
augmentation off. Each value must be one the key's distribution can take.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rectune.config import check_value, flatten, unknown_key
from rectune.errors import ConfigError, DataError
from rectune.runconfig import TASK_WEIGHT_PREFIX, Key, RunConfig, _nested_choice, key_table
from rectune.train.metrics import WEIGHTED, better, check_metric

TASK_WILDCARD = TASK_WEIGHT_PREFIX + "*"
"""A search key that stands for ``loss.weights.<task>`` of every task of the campaign's dataset."""
SECTIONS = ("objective", "budget", "scheduler", "sampler", "resources", "fixed", "search", "start")
KINDS = ("float", "int", "categorical")
SCHEDULERS = ("asha", "fifo")
SAMPLERS = ("tpe", "random")


def metric_mode(metric: str) -> str:
    """max or min: how the metric improves (losses go down)."""
    return "max" if better(metric, 1.0, 0.0) else "min"


def _encode_choice(value: Any) -> Any:
    """Optuna's categorical choices are scalars: a list value travels as ``"128,64"``."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


@dataclass(frozen=True)
class Dist:
    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    when: tuple[tuple[str, tuple], ...] = ()
    """``((key, values), ...)``: searched only when each key has one of its values."""

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_categorical(self.key, list(self.choices))

    def check(self, where: str, value: Any) -> Any:
        """``value`` as the study stores it, if this distribution can take it; else a ConfigError."""
        spec = _spec_of(where, self.key)
        value = check_value(where, value, spec.type, spec.meta)
        if self.kind == "categorical":
            encoded = _encode_choice(value)
            if encoded not in self.choices:
                raise ConfigError(f"{where}: {value!r} is not one of the choices "
                                  f"{', '.join(map(str, self.choices))}")
            return encoded
        if not self.low <= value <= self.high:
            raise ConfigError(f"{where}: {value} is outside the searched range [{self.low}, {self.high}]")
        steps = (value - self.low) / self.step if self.step is not None else 0
        if abs(steps - round(steps)) > 1e-9:
            raise ConfigError(f"{where}: {value} is not on the range's step {self.step} from {self.low}")
        return value

    def possible(self) -> tuple | None:
        """Every value it can take, when there are few (categorical, small int range)."""
        if self.kind == "categorical":
            return self.choices
        if self.kind == "int" and self.high - self.low <= 1000:
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        return None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {self.kind: list(self.choices) if self.kind == "categorical" else [self.low, self.high]}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when}
        return out


@dataclass(frozen=True)
class Objective:
    metric: str
    """What Tune and the searcher optimise (``valid/weighted`` for a weighted combination)."""
    mode: str
    weights: tuple[tuple[str, float], ...] = ()
    metrics: tuple[str, ...] = ()
    """Several objectives (multi-objective study); empty for one."""

    @property
    def searcher_metric(self) -> str | list[str]:
        return [f"best/{m}" for m in self.metrics] if self.metrics else f"best/{self.metric}"

    @property
    def searcher_mode(self) -> str | list[str]:
        return [metric_mode(m) for m in self.metrics] if self.metrics else self.mode

    def names(self) -> list[str]:
        return list(self.metrics) if self.metrics else [self.metric]

    def to_dict(self) -> Any:
        if self.metrics:
            return {"metrics": list(self.metrics)}
        if self.weights:
            return {"weights": dict(self.weights)}
        return self.metric


@dataclass(frozen=True)
class SearchSpace:
    source: str
    objective: Objective
    fixed: dict[str, Any]
    params: tuple[Dist, ...]
    trials: int = 10
    concurrency: int = 1
    time_limit_s: float | None = None
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    sampler: str = "tpe"
    seed: int = 0
    startup_trials: int = 4
    workers: int = 1
    gpus_per_worker: float = 0.0
    start: tuple[dict, ...] = ()
    """Points (searched key -> value, as the study stores it) enqueued before the sampler's own."""
    extra: dict = field(default_factory=dict)

    # ---- the trial's configuration -------------------------------------------------------------
    @property
    def epochs(self) -> int:
        return int(self.base()["train.epochs"])

    def base(self) -> RunConfig:
        """The fixed keys (and the objective's) over the defaults."""
        cfg = RunConfig(dict(self.fixed))
        if self.objective.weights:
            cfg.set("train.metric_weights", [f"{m}:{w}" for m, w in self.objective.weights])
        if not self.objective.metrics:
            cfg.set("train.metric", self.objective.metric)
        return cfg

    def config(self, searched: dict[str, Any]) -> RunConfig:
        """The run configuration of one trial: the base, then the searched values."""
        return self.base().update(searched)

    def __call__(self, trial) -> None:
        """Optuna define-by-run: suggest every key whose conditions hold, in file order."""
        base = self.base()
        chosen: dict[str, Any] = {}
        for d in self.params:
            if all(_encode_choice(chosen.get(k, base[k])) in vals for k, vals in d.when):
                chosen[d.key] = d.suggest(trial)

    # ---- files ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {
            "objective": self.objective.to_dict(),
            "budget": {"trials": self.trials, "concurrency": self.concurrency, "time_limit_s": self.time_limit_s},
            "scheduler": {"name": self.scheduler, "grace_period": self.grace_period,
                          "reduction_factor": self.reduction_factor},
            "sampler": {"name": self.sampler, "seed": self.seed, "startup_trials": self.startup_trials},
            "resources": {"workers": self.workers, "gpus_per_worker": self.gpus_per_worker},
            "fixed": dict(self.fixed),
            "search": {d.key: d.to_dict() for d in self.params},
        }
        if self.start:  # absent when empty: the fingerprints of campaigns made before it stay the same
            out["start"] = [dict(p) for p in self.start]
        return out

    def fingerprint(self) -> str:
        """What must not change between a campaign and its resumption (not the trial budget)."""
        d = self.to_dict()
        d.pop("budget")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def with_budget(self, trials: int | None = None) -> "SearchSpace":
        if trials is None:
            return self
        from dataclasses import replace

        if trials < 1:
            raise ConfigError(f"--trials: {trials}; expected at least 1")
        return replace(self, trials=trials)

    def for_tasks(self, tasks: list[str]) -> "SearchSpace":
        """``loss.weights.*`` replaced by one key per task of the dataset (a task's own key, where the
        space names it, stays as written)."""
        if not any(d.key == TASK_WILDCARD for d in self.params):
            return self
        from dataclasses import replace

        named = {d.key for d in self.params}
        params: list[Dist] = []
        for d in self.params:
            if d.key == TASK_WILDCARD:
                params += [replace(d, key=TASK_WEIGHT_PREFIX + t) for t in tasks if TASK_WEIGHT_PREFIX + t not in named]
            else:
                params.append(d)
        return replace(self, params=tuple(params))

    def check_dataset(self, tasks: list[str]) -> None:
        """Everything that depends on the dataset: metric and task names."""
        where = f"{self.source}: "
        for m in self.objective.names() + [m for m, _ in self.objective.weights]:
            if m != WEIGHTED:
                check_metric(where + "objective", m, tasks)
        if self.objective.metrics:
            check_metric(where + "fixed: train.metric", self.base()["train.metric"], tasks)
        for key in list(self.fixed) + [d.key for d in self.params]:
            if key.startswith(TASK_WEIGHT_PREFIX) and key != TASK_WILDCARD and key[len(TASK_WEIGHT_PREFIX):] not in tasks:
                raise ConfigError(f"{where}{key}: the dataset has no task '{key[len(TASK_WEIGHT_PREFIX):]}'; "
                                  f"tasks: {', '.join(tasks)}")


# ---------------------------------------------------------------------------------------------
# reading and checking


def _mapping(where: str, value: Any, allowed: tuple[str, ...] | None = None) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    if allowed is not None:
        for k in value:
            if k not in allowed:
                raise ConfigError(f"{where}: unknown entry '{k}'; expected {', '.join(allowed)}")
    return value


def _number(where: str, value: Any, typ=float, low: float | None = None, high: float | None = None):
    meta = {"low": low, "high": high}
    return check_value(where, value, typ, {k: v for k, v in meta.items() if v is not None})


def _one_of(where: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ConfigError(f"{where}: '{value}' is not one of {', '.join(options)}")
    return value


def _spec_of(where: str, key: str) -> Key:
    if not isinstance(key, str):  # a YAML key such as 3 or null
        raise ConfigError(f"{where}: expected a dotted config key such as model.mtl, got {key!r}")
    spec = key_table().get(key)
    if spec is None:
        if key.startswith(TASK_WEIGHT_PREFIX) and len(key) > len(TASK_WEIGHT_PREFIX):
            return Key(key, 1.0, float, {"low": 0.0})
        raise ConfigError(f"{where}: {unknown_key(key, RunConfig.valid_keys())}")
    return spec


def _dist(where: str, key: str, raw: Any) -> Dist:
    spec = _spec_of(where, key)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a distribution such as {{float: [low, high]}}, {{int: [low, high]}} "
                          f"or {{categorical: [a, b]}}, got {raw!r} (a constant goes under 'fixed')")
    kinds = [k for k in KINDS if k in raw]
    _mapping(where, raw, KINDS + ("log", "step", "when"))
    if len(kinds) != 1:
        raise ConfigError(f"{where}: expected exactly one of {', '.join(KINDS)}, got {', '.join(kinds) or 'none'}")
    kind = kinds[0]
    body = raw[kind]
    if kind == "categorical":
        if not isinstance(body, list) or not body:
            raise ConfigError(f"{where}: categorical: expected a non-empty list of values, got {body!r}")
        values = [check_value(f"{where}: categorical", v, spec.type, spec.meta) for v in body]
        encoded = tuple(_encode_choice(v) for v in values)
        if len(set(encoded)) != len(encoded):
            raise ConfigError(f"{where}: categorical: a value is listed twice")
        if "log" in raw or "step" in raw:
            raise ConfigError(f"{where}: log and step apply to float and int, not categorical")
        return Dist(key, kind, choices=encoded)
    if spec.type not in (int, float) or (spec.type is int and kind == "float"):
        expected = "categorical" if spec.type not in (int, float) else "int or categorical"
        raise ConfigError(f"{where}: {kind} does not fit this key (a {getattr(spec.type, '__name__', spec.type)}); "
                          f"expected {expected}")
    if not isinstance(body, list) or len(body) != 2:
        raise ConfigError(f"{where}: {kind}: expected [low, high], got {body!r}")
    typ = int if kind == "int" else float
    low = check_value(f"{where}: {kind} low", _number(f"{where}: {kind} low", body[0], typ), spec.type, spec.meta)
    high = check_value(f"{where}: {kind} high", _number(f"{where}: {kind} high", body[1], typ), spec.type, spec.meta)
    if not low < high:
        raise ConfigError(f"{where}: {kind}: low {low} must be below high {high}")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: needs low > 0, got {low}")
    step = raw.get("step")
    if step is not None:
        step = _number(f"{where}: step", step, typ)
        if step <= 0 or step > high - low:
            raise ConfigError(f"{where}: step: {step} must be > 0 and at most high - low ({high - low})")
        if log:
            raise ConfigError(f"{where}: step and log cannot be combined")
    return Dist(key, kind, low=low, high=high, log=log, step=step)


def _conditions(where: str, dist: Dist, raw: Any, base: RunConfig, searched: dict[str, Dist]) -> Dist:
    """The explicit ``when`` and the condition implied by the key's ``used_by``, both checked."""
    from dataclasses import replace

    when: dict[str, tuple] = {}
    for parent, values in _mapping(f"{where}: when", raw).items():
        pwhere = f"{where}: when: {parent}"
        spec = _spec_of(pwhere, parent)
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"{pwhere}: expected a value or a list of values")
        values = tuple(_encode_choice(check_value(pwhere, v, spec.type, spec.meta)) for v in values)
        if parent == dist.key:
            raise ConfigError(f"{pwhere}: a key cannot depend on itself")
        when[parent] = values
    spec = key_table().get(dist.key)
    if spec is not None and spec.used_by is not None:
        parent, users = spec.used_by
        users = tuple(users)
        when[parent] = tuple(v for v in when[parent] if v in users) if parent in when else users
        if not when[parent]:
            raise ConfigError(f"{where}: {dist.key} only matters when {parent} is one of {', '.join(users)}, "
                              f"which its 'when' excludes")
    for parent, values in list(when.items()):
        pwhere = f"{where}: when: {parent}"
        if parent in searched:
            possible = searched[parent].possible()
            if possible is None:
                raise ConfigError(f"{pwhere}: {parent} is a continuous range; a condition needs a categorical "
                                  f"or small int key")
            left = tuple(v for v in values if v in possible)
            if not left:
                raise ConfigError(f"{pwhere}: never true: {parent} is searched over {', '.join(map(str, possible))}, "
                                  f"none of {', '.join(map(str, values))}")
            when[parent] = left
        else:
            fixed = _encode_choice(base[parent])
            if fixed not in values:
                raise ConfigError(f"{pwhere}: never true: {parent} is fixed to {fixed!r} (not searched above this key)"
                                  f", not one of {', '.join(map(str, values))}; {dist.key} would never be searched")
            del when[parent]  # always true
    return replace(dist, when=tuple(when.items()))


def _start(where: str, raw: Any, params: dict[str, Dist], trials: int) -> tuple[dict, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a list of points such as [{{augment.mask.prob: 0.0}}], got {raw!r}")
    if len(raw) > trials:
        raise ConfigError(f"{where}: {len(raw)} points, more than the budget's {trials} trials")
    points = []
    for i, point in enumerate(raw):
        pwhere = f"{where}[{i}]"
        if not isinstance(point, dict) or not point:
            raise ConfigError(f"{pwhere}: expected a mapping of searched keys to values, got {point!r}")
        out = {}
        for key, value in point.items():
            if key not in params:
                raise ConfigError(f"{pwhere}: {key}: not a searched key; a start point sets keys under 'search'")
            out[key] = params[key].check(f"{pwhere}: {key}", value)
        if out in points:
            raise ConfigError(f"{pwhere}: the same point as an earlier one")
        points.append(out)
    return tuple(points)


def _objective(where: str, raw: Any) -> Objective:
    if raw is None:
        raw = "valid/mean_auc"
    if isinstance(raw, str):
        return Objective(raw, metric_mode(raw))
    obj = _mapping(where, raw, ("metric", "weights", "metrics"))
    if len(obj) != 1:
        raise ConfigError(f"{where}: expected one of metric, weights, metrics")
    if "metric" in obj:
        return _objective(where, obj["metric"])
    if "weights" in obj:
        weights = _mapping(f"{where}: weights", obj["weights"])
        if len(weights) < 2:
            raise ConfigError(f"{where}: weights: expected two or more metrics with their weights")
        pairs = tuple((str(m), float(_number(f"{where}: weights: {m}", w, float, low=0.0))) for m, w in weights.items())
        modes = {metric_mode(m) for m, _ in pairs}
        if len(modes) > 1:
            raise ConfigError(f"{where}: weights: mixes metrics to maximise and to minimise "
                              f"({', '.join(m for m, _ in pairs)}); use one direction, or metrics: [...] for several")
        if not sum(w for _, w in pairs) > 0:
            raise ConfigError(f"{where}: weights: at least one weight must be above 0")
        name = WEIGHTED if modes == {"max"} else WEIGHTED + "_loss"
        return Objective(name, modes.pop(), weights=pairs)
    metrics = obj["metrics"]
    if not isinstance(metrics, list) or len(metrics) < 2 or not all(isinstance(m, str) for m in metrics):
        raise ConfigError(f"{where}: metrics: expected a list of two or more metric names")
    if len(set(metrics)) != len(metrics):
        raise ConfigError(f"{where}: metrics: a metric is listed twice")
    return Objective(metrics[0], metric_mode(metrics[0]), metrics=tuple(metrics))


def from_mapping(tree: Any, source: str) -> SearchSpace:
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: expected a mapping with {', '.join(SECTIONS)}")
    _mapping(source, tree, SECTIONS)
    objective = _objective(f"{source}: objective", tree.get("objective"))

    budget = _mapping(f"{source}: budget", tree.get("budget"), ("trials", "concurrency", "time_limit_s"))
    trials = _number(f"{source}: budget: trials", budget.get("trials", 10), int, low=1)
    concurrency = _number(f"{source}: budget: concurrency", budget.get("concurrency", 1), int, low=1)
    limit = budget.get("time_limit_s")
    if limit is not None:
        limit = _number(f"{source}: budget: time_limit_s", limit, float, low=1)

    sched = _mapping(f"{source}: scheduler", tree.get("scheduler"), ("name", "grace_period", "reduction_factor"))
    scheduler = _one_of(f"{source}: scheduler: name", sched.get("name", "asha"), SCHEDULERS)
    grace = _number(f"{source}: scheduler: grace_period", sched.get("grace_period", 1), int, low=1)
    reduction = _number(f"{source}: scheduler: reduction_factor", sched.get("reduction_factor", 2), int, low=2)

    samp = _mapping(f"{source}: sampler", tree.get("sampler"), ("name", "seed", "startup_trials"))
    sampler = _one_of(f"{source}: sampler: name", samp.get("name", "tpe"), SAMPLERS)
    seed = _number(f"{source}: sampler: seed", samp.get("seed", 0), int, low=0)
    startup = _number(f"{source}: sampler: startup_trials", samp.get("startup_trials", 4), int, low=0)

    res = _mapping(f"{source}: resources", tree.get("resources"), ("workers", "gpus_per_worker"))
    workers = _number(f"{source}: resources: workers", res.get("workers", 1), int, low=1)
    gpus = _number(f"{source}: resources: gpus_per_worker", res.get("gpus_per_worker", 0), float, low=0.0)
    if 1 < gpus != int(gpus):
        raise ConfigError(f"{source}: resources: gpus_per_worker: {gpus}; expected a fraction up to 1 or a whole number")

    fixed_tree = _mapping(f"{source}: fixed", tree.get("fixed"))
    fixed = flatten(_nested_choice(fixed_tree))
    base = RunConfig(fixed, source=f"{source}: fixed")
    if objective.weights and "train.metric_weights" in fixed:
        raise ConfigError(f"{source}: fixed: train.metric_weights: set by the objective's weights; remove it")
    if not objective.metrics and "train.metric" in fixed and fixed["train.metric"] != objective.metric:
        raise ConfigError(f"{source}: fixed: train.metric: '{fixed['train.metric']}' differs from the objective "
                          f"'{objective.metric}'; the objective picks each trial's best epoch")

    search = _mapping(f"{source}: search", tree.get("search"))
    params: dict[str, Dist] = {}
    for key, raw in search.items():
        where = f"{source}: search: {key}"
        if not isinstance(key, str) or "." not in key:
            raise ConfigError(f"{where}: expected a dotted config key such as augment.mask.prob")
        if key in fixed:
            raise ConfigError(f"{where}: also under fixed; a key is either fixed or searched")
        dist = _dist(where, key, raw)
        dist = _conditions(where, dist, raw.get("when"), base, params)
        params[key] = dist
    if not params:
        raise ConfigError(f"{source}: search: expected at least one key to search")
    start = _start(f"{source}: start", tree.get("start"), params, trials)
    space = SearchSpace(str(source), objective, fixed, tuple(params.values()), trials=trials,
                        concurrency=concurrency, time_limit_s=limit, scheduler=scheduler, grace_period=grace,
                        reduction_factor=reduction, sampler=sampler, seed=seed, startup_trials=startup,
                        workers=workers, gpus_per_worker=gpus, start=start)
    epochs = space.epochs
    if scheduler == "asha" and grace > epochs:
        raise ConfigError(f"{source}: scheduler: grace_period {grace} exceeds train.epochs {epochs}")
    if "train.epochs" in params:
        raise ConfigError(f"{source}: search: train.epochs: the scheduler sets the trial length; fix it instead")
    return space


def load(path: str | Path) -> SearchSpace:
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such search space file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a search space YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(f"{path}: not valid YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    return from_mapping(tree, str(path))
