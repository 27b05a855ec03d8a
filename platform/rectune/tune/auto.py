"""The campaign a dataset gets when nobody wrote a space for it, and the start points every campaign tries first.

:func:`auto_space` reads the dataset's schema and side files and searches only what the dataset can
use:

- the optimiser, widths, normalisation, dropout, rare-id handling and the multi-task architecture
  (MMoE / PLE, and ESMM where the schema declares a funnel) on every dataset;
- one loss weight per task, where there are two tasks or more;
- the history's pooling, recency embedding, item attributes and masking where a sequence field of
  item ids exists; noise where dense fields exist; id masking on the sparse fields;
- the item graph (its encoder and neighbour substitution) only where relations exist, the item text
  only where its embeddings exist (``rectune data embed-text``);
- and of those, only the choices that build a model on the dataset (each is built once, as a
  campaign's start-up check does): a dataset the rules misjudge loses a choice, not its campaign.

Augmentation strengths are searched on a grid that holds exactly 0 (``step``), so "off" is a value
the sampler can draw, not a point it can only approach. The budget is sized to the rows and the
CPUs: trials are as many as the time limit can hold by a rough cost model, and the time limit ends
the campaign.

:func:`floor_points` are the start points every campaign tries before its sampler's own, whatever
its space: rectune's defaults and the configuration equivalent to the usual peer
(:data:`PEER_SETTINGS`: torch-rechub's MMoE with the history mean-pooled, at its example settings).
So a campaign's pick is never worse on valid than either. Each point sets every searched key it
can to the reference's value (the nearest value a range allows, where the reference's lies outside
it); the sampler fills in the rest.
"""

from __future__ import annotations

import math
from typing import Any

from rectune.data.prepared import ITEMS_FILE, RELATIONS_FILE
from rectune.data.schema import TEXT_EMB_COLUMN
from rectune.runconfig import TASK_WEIGHT_PREFIX, RunConfig, key_table
from rectune.tune.space import Dist, SearchSpace, _encode_choice, from_mapping

PEER_SETTINGS: dict[str, Any] = {
    "model.mtl": "mmoe", "model.mtl.experts": 4, "model.hidden": [128, 64], "model.tower": [32],
    "model.norm": "batch", "model.history": "mean", "model.emb_dim": 16, "model.dropout": 0.0,
    "optim.lr": 1e-3, "optim.weight_decay": 1e-5, "optim.schedule": "constant", "train.batch_size": 1024,
}
"""torch-rechub 0.9's MMoE at its example settings with the behaviour history mean-pooled: 4 experts
of [128, 64] with BatchNorm, towers of [32], emb 16, Adam lr 1e-3, weight decay 1e-5, batch 1024."""

REFERENCES: dict[str, dict[str, Any]] = {"defaults": {}, "peer-equivalent": PEER_SETTINGS}
"""The configurations every campaign tries first, by name (as ``results evaluate`` reports them)."""

DEFAULT_MINUTES = 60.0
STARTUP_TRIALS = 8
"""TPE's random trials before it models the results (after the start points); not a function of the
budget, so that a campaign's space stays the same whatever its time limit."""
EPOCHS = 5
ROWS_PER_S = 15_000
"""A rough training speed of one trial on one CPU (rows a second, MMoE with history, emb 16-32),
the cost model of the automatic budget."""
TRIAL_SETUP_S = 20.0
"""A trial's fixed cost: the Train worker group, the Data stream, checkpoints."""


def _value_for(d: Dist, value: Any) -> Any | None:
    """``value`` as the study stores it, if ``d`` can take it; a range's nearest value; else None."""
    try:
        return d.check(d.key, value)
    except Exception:  # noqa: BLE001 - outside the range or the choices
        pass
    if d.kind == "categorical" or not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    v = min(max(float(value), d.low), d.high)
    if d.step is not None:
        v = d.low + round((v - d.low) / d.step) * d.step
        v = min(v, d.high)
    v = int(round(v)) if d.kind == "int" else v
    try:
        return d.check(d.key, v)
    except Exception:  # noqa: BLE001
        return None


def reference_point(space: SearchSpace, settings: dict[str, Any]) -> dict[str, Any]:
    """The start point of ``space`` nearest to the configuration ``settings`` over the defaults."""
    table = key_table()
    base = space.base()
    point: dict[str, Any] = {}
    for d in space.params:
        if not all(_encode_choice(point.get(k, base[k])) in vals for k, vals in d.when):
            continue  # not searched under this point's choices
        if d.key in settings:
            want = settings[d.key]
        elif d.key.startswith(TASK_WEIGHT_PREFIX):
            want = 1.0
        else:
            want = table[d.key].default
        v = _value_for(d, want)
        if v is not None:
            point[d.key] = v
    return point


def floor_points(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """``{reference name: start point}`` of :data:`REFERENCES` on ``space`` (empty points left out)."""
    out = {}
    for name, settings in REFERENCES.items():
        point = reference_point(space, settings)
        if point:
            out[name] = point
    return out


def start_points(space: SearchSpace) -> list[dict[str, Any]]:
    """The floor points, then the space's own ``start`` entries; each point once."""
    out: list[dict] = []
    for p in [*floor_points(space).values(), *space.start]:
        if p not in out:
            out.append(p)
    return out


def reference_config(space: SearchSpace, name: str) -> RunConfig:
    """The configuration a campaign on ``space`` tried as the reference ``name``."""
    return space.config(floor_points(space).get(name, {}))


# ---------------------------------------------------------------------------------------------
# the automatic space


def _grid(high: float, step: float = 0.05) -> dict:
    return {"float": [0.0, high], "step": step}


def auto_tree(ds, cpus: int, minutes: float = DEFAULT_MINUTES) -> dict:
    """The automatic space of the prepared dataset ``ds`` as a search-space mapping."""
    schema = ds.schema
    fields = schema.row_fields
    tasks = list(schema.tasks)
    item = schema.item_field
    histories = [f for f in fields if f.kind == "sequence"]
    item_history = any(f.shares_vocab_with == item for f in histories) if item else False
    dense = [f for f in fields if f.kind == "dense"]
    item_attrs = [f for f in fields if f.kind == "sparse" and f.side == "item" and f.name != item]
    has_relations = _footer_rows(ds.path / RELATIONS_FILE) > 0
    has_text = TEXT_EMB_COLUMN in _footer_columns(ds.path / ITEMS_FILE)

    search: dict[str, Any] = {
        "optim.lr": {"float": [5e-4, 1e-2], "log": True},
        "optim.weight_decay": {"categorical": [0.0, 1e-6, 1e-5, 1e-4]},
        "optim.schedule": {"categorical": ["constant", "cosine"]},
        "model.emb_dim": {"categorical": [16, 32]},
        "model.norm": {"categorical": ["batch", "layer", "none"]},
        "model.dropout": _grid(0.3),
        "model.min_id_count": {"categorical": [0, 1, 3]},
    }
    archs = ["shared_bottom", "mmoe"] + (["ple"] if len(tasks) > 1 else [])
    if schema.task_parents:
        archs.append("esmm")
    search["model.mtl"] = {"categorical": archs}
    search["model.mtl.experts"] = {"int": [2, 8]}
    if len(tasks) > 1:
        for t in tasks:
            search[TASK_WEIGHT_PREFIX + t] = {"float": [0.5, 2.0], "step": 0.25}
    if histories:
        search["model.history"] = {"categorical": ["mean", "attention"]}
        if item_history:
            search["model.history_position"] = {"categorical": [False, True]}
            if item_attrs:
                search["model.history_attributes"] = {"categorical": [False, True]}
        search["augment.sequence.mask"] = _grid(0.3)
    if any(f.kind == "sparse" for f in fields):
        search["augment.mask.prob"] = _grid(0.3)
    if dense:
        search["augment.noise.std"] = _grid(0.3)
    if has_relations and item:
        search["model.kg"] = {"categorical": ["none", "mean", "attention"]}
        search["augment.neighbor.rate"] = _grid(0.2)
    if has_text and item:
        search["model.text_dim"] = {"categorical": [0, 32]}

    concurrency = max(1, int(cpus))
    rows = max(1, int(schema.rows.get("train", 0)))
    scored = int(schema.rows.get("valid", 0)) + int(schema.rows.get("test", 0))
    # ASHA (grace 2, reduction 2 over 5 epochs) runs a trial for ~3 epochs on average
    trial_s = TRIAL_SETUP_S + 3 * (rows + scored / 5) / ROWS_PER_S
    limit_s = minutes * 60.0
    trials = int(min(200, max(8, math.floor(concurrency * limit_s / trial_s))))
    return {
        "objective": "valid/mean_auc",
        "budget": {"trials": trials, "concurrency": concurrency, "time_limit_s": limit_s},
        "scheduler": {"name": "asha", "grace_period": 2, "reduction_factor": 2},
        "sampler": {"name": "tpe", "seed": 0, "startup_trials": STARTUP_TRIALS},
        "resources": {"workers": 1},
        "fixed": {"train.epochs": EPOCHS, "train.patience": 0},
        "search": search,
    }


def _footer_rows(path) -> int:
    """Rows of a Parquet file from its footer (0 when it does not exist)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows if path.is_file() else 0


def _footer_columns(path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).schema_arrow.names if path.is_file() else []


def auto_space(ds, cpus: int, minutes: float = DEFAULT_MINUTES) -> SearchSpace:
    """The automatic :class:`SearchSpace` of ``ds`` (see the module's docstring), without the
    choices that cannot build a model on it (a key left with one choice or none is not searched)."""
    from rectune.tune.campaign import unbuildable

    source = f"the automatic space of {ds.schema.name}"
    tree = auto_tree(ds, cpus, minutes)
    bad: dict[str, set] = {}
    for key, value, _ in unbuildable(from_mapping(tree, source), ds):
        bad.setdefault(key, set()).add(value)
    for key, values in bad.items():
        dist = tree["search"][key]
        left = [v for v in dist.get("categorical", []) if _encode_choice(v) not in values]
        if len(left) > 1:
            dist["categorical"] = left
        else:
            del tree["search"][key]
    return from_mapping(tree, source)
