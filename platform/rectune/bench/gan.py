"""``synthetic`` generators compared by their statistics: ``gan`` vs ``interpolate`` vs uniform noise.

Every generator makes synthetic rows for the whole train split (batch by batch, ``ratio`` synthetic
rows per real row, conditioned on the batch's own labels); the synthetic rows of a label group
(e.g. click=1) are compared with the real rows of that group:

- per sparse field: total-variation distance between the two distributions of codes
  (0 = identical, 1 = disjoint; for fields with thousands of codes part of it is sampling noise);
- per dense field: mean and std of each side and the two-sample Kolmogorov-Smirnov statistic;
- the label logic: rows with a child task at 1 and its parent at 0, and the funnel rate
  P(child = 1 | parent = 1) of real and synthetic rows.

``uniform`` draws every sparse code uniformly from its vocabulary and every dense value uniformly
in its train range (labels kept): the floor any generator must beat. Timing: the GAN's training
(in a fresh cache folder unless ``fresh=False``), a second construction (the cache hit), and the
generation time per batch.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from rectune.augment import AugmentConfig, AugmentPlan
from rectune.batches import ROW_ID, table_to_batch
from rectune.data.prepared import open_dataset


def tv(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between the empirical distributions of two integer arrays."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    n = int(max(a.max(), b.max())) + 1
    pa = np.bincount(a.astype(np.int64), minlength=n) / len(a)
    pb = np.bincount(b.astype(np.int64), minlength=n) / len(b)
    return 0.5 * float(np.abs(pa - pb).sum())


def ks(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(ks_2samp(a, b).statistic)


def _uniform(batch: dict, schema, rng: np.random.Generator, lo_hi: dict) -> dict:
    n = len(batch[ROW_ID])
    out = {}
    for f in schema.row_fields:
        if f.kind == "sparse":
            out[f.name] = rng.integers(1, f.vocab_size, n)
        elif f.kind == "dense":
            out[f.name] = rng.uniform(*lo_hi[f.name], n).astype(np.float32)
    for t in schema.tasks:
        out[t] = batch[t]
    return out


def _collect(make, batches) -> dict:
    parts, seconds = [], 0.0
    for k, b in enumerate(batches):
        t0 = time.perf_counter()
        out = make(b, k)
        seconds += time.perf_counter() - t0
        synth = out[ROW_ID] < 0 if ROW_ID in out else np.ones(len(next(iter(out.values()))), bool)
        parts.append({key: v[synth] for key, v in out.items() if key != ROW_ID})
    keys = parts[0].keys()
    rows = {key: np.concatenate([p[key] for p in parts]) for key in keys}
    rows["_ms_per_batch"] = 1000 * seconds / max(1, len(batches))
    return rows


def groups(schema) -> list[tuple[str, str, int]]:
    first = schema.tasks[0]
    return [(f"{first}=1", first, 1), (f"{first}=0", first, 0)] + [(f"{t}=1", t, 1) for t in schema.tasks[1:]]


LOW_CARD = 64


def cross_pairs(schema) -> list[tuple[str, str]]:
    """(user-side, item-side) pairs of low-cardinality sparse fields: their joint distribution
    carries the user-item correlation that marginals do not show."""
    low = [f for f in schema.row_fields if f.kind == "sparse" and f.vocab_size <= LOW_CARD]
    return [(u.name, i.name) for u in low if u.side == "user" for i in low if i.side == "item"]


def consistency(ds, synth: dict) -> dict[str, float]:
    """Share of synthetic rows whose attributes equal the item (user) table's for their item (user)."""
    schema = ds.schema
    out = {}
    for side, entity, table in (("item", schema.item_field, ds.items()), ("user", schema.user_field, ds.users())):
        if entity is None or table is None or entity not in synth:
            continue
        key = entity if entity in table.column_names else f"{side}_id"
        if key not in table.column_names:
            continue
        ids = table.column(key).to_numpy().astype(np.int64)
        ok = np.ones(len(synth[entity]), bool)
        names = []
        for f in schema.row_fields:
            col = f"{f.name}_code" if f"{f.name}_code" in table.column_names else f.name
            if f.side != side or f.name == entity or f.kind not in ("sparse", "dense") or col not in table.column_names:
                continue
            values = table.column(col).to_numpy(zero_copy_only=False)
            if not np.issubdtype(np.asarray(values).dtype, np.number):
                continue
            lut = np.full(max(int(ids.max()), int(synth[entity].max())) + 1, np.nan)
            lut[ids] = values
            ok &= np.isclose(lut[synth[entity].astype(np.int64)], synth[f.name], rtol=1e-5, atol=1e-6)
            names.append(f.name)
        if names:
            out[f"{side} ({', '.join(names)})"] = float(ok.mean())
    return out


def compare(real: dict, synth: dict, schema) -> dict:
    """{group: {"tv": {field: d}, "dense": {field: (mean_r, mean_s, std_r, std_s, ks)}, "rows": n}}."""
    res = {}
    for label, task, value in groups(schema):
        r, s = real[task] == value, synth[task] == value
        g = {"rows": int(s.sum()), "tv": {}, "dense": {}}
        pairs = [tv(real[a][r].astype(np.int64) * LOW_CARD + real[b][r], synth[a][s].astype(np.int64) * LOW_CARD
                    + synth[b][s]) for a, b in cross_pairs(schema)]
        g["pairs"] = float(np.mean(pairs)) if pairs else float("nan")
        for f in schema.row_fields:
            if f.kind == "sparse":
                g["tv"][f.name] = tv(real[f.name][r], synth[f.name][s])
            elif f.kind == "dense":
                a, b = real[f.name][r].astype(np.float64), synth[f.name][s].astype(np.float64)
                g["dense"][f.name] = (a.mean(), b.mean() if len(b) else np.nan, a.std(),
                                      b.std() if len(b) else np.nan, ks(a, b))
        res[label] = g
    funnel = {}
    for child, parent in schema.task_parents.items():
        bad = int(((synth[child] == 1) & (synth[parent] == 0)).sum())
        rate = lambda d: float(d[child][d[parent] == 1].mean()) if (d[parent] == 1).any() else float("nan")  # noqa: E731
        funnel[f"{child}|{parent}"] = {"violations": bad, "rate_real": rate(real), "rate_synth": rate(synth)}
    res["funnel"] = funnel
    return res


def run(path: str | Path, steps: int = 600, top: int = 256, ratio: float = 1.0, batch_size: int = 8192,
        fresh: bool = True, seed: int = 0, console: Console | None = None) -> dict:
    """Train (or load) the GAN of the dataset at ``path``, generate, compare, print the tables."""
    console = console or Console()
    ds = open_dataset(path)
    schema = ds.schema
    table = ds.read_split("train")
    batches = [table_to_batch(table.slice(s, batch_size), schema, first_row=s)
               for s in range(0, table.num_rows, batch_size)]
    real = {k: np.concatenate([b[k] for b in batches]) for k in batches[0] if k != ROW_ID}
    sets = {"augment.synthetic.ratio": ratio, "augment.synthetic.gan_steps": steps, "augment.synthetic.gan_top": top}
    old = os.environ.get("RECTUNE_CACHE")
    tmp = tempfile.TemporaryDirectory() if fresh else None
    try:
        if tmp is not None:
            os.environ["RECTUNE_CACHE"] = tmp.name
        t0 = time.perf_counter()
        gan_plan = AugmentPlan(AugmentConfig({**sets, "augment.synthetic.generator": "gan"}), ds, seed)
        first = time.perf_counter() - t0
        model = gan_plan.augmenters[0].gan
        t0 = time.perf_counter()
        AugmentPlan(AugmentConfig({**sets, "augment.synthetic.generator": "gan"}), ds, seed)
        second = time.perf_counter() - t0
    finally:
        if tmp is not None:
            if old is None:
                os.environ.pop("RECTUNE_CACHE", None)
            else:
                os.environ["RECTUNE_CACHE"] = old
            tmp.cleanup()
    interp_plan = AugmentPlan(AugmentConfig({**sets, "augment.synthetic.generator": "interpolate"}), ds, seed)
    lo_hi = {f: (float(real[f].min()), float(real[f].max())) for f in schema.field_names(kind="dense")}
    synth = {
        "gan": _collect(lambda b, k: gan_plan.apply(b, 0), batches),
        "interpolate": _collect(lambda b, k: interp_plan.apply(b, 0), batches),
        "uniform": _collect(lambda b, k: _uniform(b, schema, np.random.default_rng([seed, k]), lo_hi), batches),
    }
    results = {name: compare(real, rows, schema) for name, rows in synth.items()}
    for name, rows in synth.items():
        results[name]["consistency"] = consistency(ds, rows)
    timing = {"train_s": model.meta.get("train_seconds"), "first_init_s": first, "from_cache_first": model.from_cache,
              "cache_hit_s": second, **{f"{n}_ms_per_batch": rows["_ms_per_batch"] for n, rows in synth.items()}}
    results["timing"] = timing

    names = list(synth)
    for label, _, _ in groups(schema):
        t = Table(title=f"{schema.name} train ({table.num_rows:,} rows), {label}: total variation per sparse field "
                        f"(synthetic rows: " + ", ".join(f"{n} {results[n][label]['rows']:,}" for n in names) + ")")
        t.add_column("field")
        for n in names:
            t.add_column(n, justify="right")
        for f in schema.field_names(kind="sparse"):
            t.add_row(f, *(f"{results[n][label]['tv'][f]:.3f}" for n in names))
        if cross_pairs(schema):
            t.add_row("user x item attribute pairs (mean)", *(f"{results[n][label]['pairs']:.3f}" for n in names))
        console.print(t)
        d = Table(title=f"{label}: dense fields (real mean/std; per generator mean/std and KS statistic)")
        d.add_column("field")
        d.add_column("real", justify="right")
        for n in names:
            d.add_column(n, justify="right")
        for f in schema.field_names(kind="dense"):
            mr, _, sr, _, _ = results[names[0]][label]["dense"][f]
            d.add_row(f, f"{mr:.3f} / {sr:.3f}",
                      *(f"{v[1]:.3f} / {v[3]:.3f}  KS {v[4]:.3f}" for v in (results[n][label]["dense"][f] for n in names)))
        console.print(d)
    if schema.task_parents:
        fu = Table(title="label logic: violations (child=1, parent=0) and P(child=1 | parent=1)")
        fu.add_column("tasks")
        fu.add_column("real", justify="right")
        for n in names:
            fu.add_column(n, justify="right")
        for key in results[names[0]]["funnel"]:
            fu.add_row(key, f"{results[names[0]]['funnel'][key]['rate_real']:.3f}",
                       *(f"{results[n]['funnel'][key]['violations']} / {results[n]['funnel'][key]['rate_synth']:.3f}"
                         for n in names))
        console.print(fu)
    kinds = list(results[names[0]]["consistency"])
    if kinds:
        co = Table(title="synthetic rows whose attributes agree with the item / user table")
        co.add_column("attributes")
        for n in names:
            co.add_column(n, justify="right")
        for k in kinds:
            co.add_row(k, *(f"{results[n]['consistency'].get(k, float('nan')):.1%}" for n in names))
        console.print(co)
    tt = Table(title=f"gan timing (steps {steps}, top {top})")
    tt.add_column("what")
    tt.add_column("value", justify="right")
    tt.add_row("training (encode + fit)", f"{timing['train_s']:.1f} s" if timing["train_s"] is not None else "-")
    tt.add_row("first construction" + (" (cache hit)" if timing["from_cache_first"] else " (trained)"), f"{first:.2f} s")
    tt.add_row("second construction (cache hit)", f"{second:.3f} s")
    for n in names:
        tt.add_row(f"{n}: per batch of {batch_size:,} (ratio {ratio})", f"{timing[f'{n}_ms_per_batch']:.1f} ms")
    console.print(tt)
    return results
