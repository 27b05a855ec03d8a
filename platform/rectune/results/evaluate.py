"""``rectune results evaluate``: does the campaign's best beat the baseline on held-out data?

The top ``K`` configurations of a campaign and a **baseline** (the campaign's fixed settings with
no augmentation, ``model.fusion=concat`` and ``loss.weighting=fixed`` with equal task weights) are
each retrained with ``S`` seeds, the same way a campaign trains (``rectune train``: Ray Train,
the Ray Data stream, the best epoch by ``train.metric`` on valid). Test metrics at the best epoch
are reported as mean ± std over the seeds; the **lift** of a configuration is its paired
difference from the baseline at the same seed, with a 95% t-interval over the seeds.

A second reference, the **peer-equivalent** configuration, is the start point every campaign tries
for the usual peer (torch-rechub's MMoE with the history mean-pooled at its example settings, as
far as the campaign's space allows; ``rectune.tune.auto``): each candidate's paired difference from
it is reported beside the lift ("vs peer").

The seeds are not the campaign's own (``train.seed`` + 1 ...): the top trials were chosen on that
seed, and a lift measured on it would include the luck of the selection.

With ``K`` > 1, the **pick** is the candidate with the best mean of the campaign's (first) objective
(a valid metric) over the evaluation seeds: the campaign ranked its trials on one seed, and the best
there can be luck (a winner's curse); the pick is still chosen on valid data only, never on test.
With ``K`` = 1 the pick is the campaign's best.

With ``ablate``, the pick is also retrained with one component switched off at a
time (``ABLATIONS``: augmentation, knowledge-graph and text fusion, multi-task loss weighting);
the **share** of the lift that a component carries is (pick − pick without it) / (pick −
baseline), per metric, from the means over the seeds. A component the pick does not use is
reported as such, not retrained.

Runs go to ``--out`` (default ``evaluations/<campaign>``), one run folder each; an interrupted
evaluation run again reuses the runs that finished. The campaign folder is only read.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rectune.errors import ConfigError
from rectune.results.export import write_atomic
from rectune.results.store import Campaign
from rectune.runconfig import RunConfig

BASELINE = "baseline"
PEER = "peer-equivalent"
"""The second reference: the campaign's start point equivalent to the usual peer (torch-rechub's MMoE
with the history mean-pooled at its example settings; ``rectune.tune.auto.PEER_SETTINGS``)."""
REFERENCES = (BASELINE, PEER)


def _augmentation_off(cfg: RunConfig) -> None:
    defaults = RunConfig()
    for k in list(cfg.values):
        if k.startswith("augment."):
            cfg.set(k, defaults[k])


def _kg_text_off(cfg: RunConfig) -> None:
    cfg.set("model.kg", "none")
    cfg.set("model.text_dim", 0)
    cfg.set("model.history_text", False)


def _weighting_off(cfg: RunConfig) -> None:
    for k in list(cfg.values):
        if k.startswith("loss.weights."):
            cfg.set(k, 1.0)
    cfg.set("loss.weighting", "fixed")


# name -> what switching the component off does to a configuration (in place)
ABLATIONS = {
    "augmentation": _augmentation_off,
    "kg+text fusion": _kg_text_off,
    "mtl weighting": _weighting_off,
}


def baseline_config(c: Campaign) -> RunConfig:
    """The campaign's fixed settings with augmentation off, concatenation, equal fixed weights."""
    cfg = c.space.base()
    _augmentation_off(cfg)
    _weighting_off(cfg)
    cfg.set("model.fusion", "concat")
    return cfg


@dataclass
class Candidate:
    label: str
    trial: int | None
    config: RunConfig
    ablation: str | None = None
    """the component switched off (its ``ABLATIONS`` name), for an ablation of the best"""


def ablations(best: Candidate) -> tuple[list[Candidate], list[str]]:
    """The best configuration with each component off; and the components it does not use."""
    out, unused = [], []
    for name, switch_off in ABLATIONS.items():
        cfg = RunConfig(best.config.to_dict())
        switch_off(cfg)
        if cfg.changed() == best.config.changed():
            unused.append(name)
        else:
            out.append(Candidate(f"{best.label} without {name}", best.trial, cfg, ablation=name))
    return out, unused


def candidates(c: Campaign, top: int) -> list[Candidate]:
    """The baseline, the peer-equivalent start point, then the campaign's top ``top`` trials."""
    from rectune.tune.auto import reference_config

    ranked = c.ranked()
    if not ranked:
        raise ConfigError(f"campaign '{c.name}': no completed trial to evaluate ({c.summary_counts()})")
    return [Candidate(BASELINE, None, baseline_config(c)), Candidate(PEER, None, reference_config(c.space, PEER))] + [
        Candidate(f"trial-{t.number}", t.number, c.config_of(t)) for t in ranked[:top]]


def evaluation_out(c: Campaign, out: str | Path | None) -> Path:
    """Where an evaluation of ``c`` keeps its runs: ``out``, by default ``evaluations/<campaign>``."""
    return Path(out or Path("evaluations") / c.name)


def evaluation_seeds(c: Campaign, seeds: int) -> list[int]:
    """The campaign's seed + 1 ... + ``seeds``: not the seed its top trials were chosen on."""
    first = int(c.space.base()["train.seed"]) + 1
    return list(range(first, first + seeds))


def t_quantile(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return m, sd


def lift(xs: list[float], base: list[float]) -> dict[str, Any]:
    """Paired lift (same seeds): mean difference and its 95% t-interval (None for one seed)."""
    d = [x - b for x, b in zip(xs, base)]
    m, sd = mean_std(d)
    if len(d) < 2:
        return {"mean": m, "ci95": None, "seeds": len(d)}
    half = t_quantile(len(d) - 1) * sd / math.sqrt(len(d))
    return {"mean": m, "ci95": [m - half, m + half], "seeds": len(d)}


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)


def evaluate(c: Campaign, top: int = 3, seeds: int = 3, out: str | Path | None = None, data: str | Path | None = None,
             address: str | None = None, workers: int = 1, ablate: bool = False,
             console: Console | None = None) -> dict[str, Any]:
    import ray

    from rectune.data.prepared import open_dataset
    from rectune.train.run import start_ray, train, trainer_inputs

    console = console or Console()
    if top < 1 or seeds < 1:
        raise ConfigError(f"--top {top} --seeds {seeds}: both must be at least 1")
    data = Path(data or c.meta.get("data") or "")
    if not (data / "schema.json").is_file():
        raise ConfigError(f"--data {data}: not a prepared dataset (the campaign ran on {c.meta.get('data')}); "
                          f"pass --data")
    ds = open_dataset(data)
    cands = candidates(c, top)
    seed_list = evaluation_seeds(c, seeds)
    # the pick is known only once the candidates have run: every candidate's ablations are checked now
    checks = list(cands) + [a for cand in cands if cand.label not in REFERENCES
                            for a in ablations(cand)[0]] if ablate else cands
    for cand in checks:  # every configuration builds on this dataset before anything trains
        check = RunConfig(cand.config.to_dict())
        check.set("model.kg.pretrain", 0)  # TransE pretraining runs once, in the run itself
        trainer_inputs(ds, check)
    out = evaluation_out(c, out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a folder")
    out.mkdir(parents=True, exist_ok=True)
    metrics = [f"test/{t}_auc" for t in ds.schema.tasks] + (["test/mean_auc"] if len(ds.schema.tasks) > 1 else [])
    metrics += [f"test/{t}_{kind}_auc" for kind in ("cold", "new") for t in ds.schema.tasks]
    objective, direction = c.objectives[0], c.directions[0]
    runs: dict[str, list[dict]] = {}

    def run_all(group: list[Candidate]) -> None:
        for cand in group:
            runs[cand.label] = []
            for seed in seed_list:
                run_dir = out / _slug(cand.label) / f"seed-{seed}"
                done = run_dir / "metrics.json"
                if done.is_file():
                    best = json.loads(done.read_text())["best"]
                    console.print(f"{cand.label} seed {seed}: reused {run_dir}")
                else:
                    shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run of this evaluation
                    cfg = RunConfig(cand.config.to_dict())
                    cfg.set("train.seed", seed)
                    result = train(data, cfg, run_dir, workers=workers, console=Console(file=io.StringIO()))
                    best = result.metrics["best"]
                    console.print(f"{cand.label} seed {seed}: " + ", ".join(
                        f"{m} {best[m]:.4f}" for m in metrics if isinstance(best.get(m), (int, float))))
                runs[cand.label].append({m: best.get(m) for m in [*metrics, objective]})

    started = start_ray(address)
    try:
        run_all(cands)
        chosen, chosen_mean = pick([x for x in cands if x.label not in REFERENCES], runs, objective, direction)
        unused: list[str] = []
        if ablate:
            extra, unused = ablations(chosen)
            cands += extra
            run_all(extra)
    finally:
        if started:
            ray.shutdown()
    report = _report(c, cands, seed_list, metrics, runs, objective)
    report["pick"] = {"label": chosen.label, "by": f"mean {objective} over the seeds ({direction})"
                      if chosen_mean is not None
                      else f"the campaign's order ({objective} missing from every candidate's runs)"}
    if ablate:
        report["ablation"] = {"of": chosen.label, "unused": unused, "share": shares(report)}
    write_atomic(out / "evaluate.json", lambda p: p.write_text(json.dumps(report, indent=1, default=float)))
    report["out"] = str(out)
    return report


def pick(top: list[Candidate], runs: dict[str, list[dict]], objective: str,
         direction: str) -> tuple[Candidate, float | None]:
    """The candidate with the best mean ``objective`` over its runs, and that mean, among those whose
    every run has it (a run that diverged leaves its candidate out); the campaign's order breaks
    ties, and decides alone (mean None) where no candidate has it."""
    scored = [(cand, m) for cand in top if (m := objective_mean(runs[cand.label], objective)) is not None]
    if not scored:
        return top[0], None
    sign = 1 if direction == "maximize" else -1
    return max(scored, key=lambda cm: sign * cm[1])  # max keeps the first of equals


def objective_mean(runs: list[dict], objective: str) -> float | None:
    """The mean of ``objective`` over one candidate's runs (None where a run lacks it)."""
    xs = [r.get(objective) for r in runs]
    ok = xs and all(isinstance(x, (int, float)) and not math.isnan(x) for x in xs)
    return sum(xs) / len(xs) if ok else None


def pick_row(report: dict) -> dict:
    """The report's row of the pick (the campaign's best in a report written before picks existed)."""
    label = report.get("pick", {}).get("label")
    return next((r for r in report["rows"] if r["label"] == label),
                next(r for r in report["rows"] if r["label"] not in REFERENCES))


def _report(c: Campaign, cands: list[Candidate], seeds: list[int], metrics: list[str],
            runs: dict[str, list[dict]], objective: str) -> dict[str, Any]:
    base, peer = runs[BASELINE], runs.get(PEER)
    rows = []
    for cand in cands:
        row: dict[str, Any] = {"label": cand.label, "trial": cand.trial, "config": cand.config.changed(),
                               "ablation": cand.ablation, "metrics": {},
                               "objective": objective_mean(runs[cand.label], objective)}
        for m in metrics:
            xs = [r[m] for r in runs[cand.label]]
            bs = [r[m] for r in base]
            if any(not isinstance(x, (int, float)) or math.isnan(x) for x in xs + bs):
                continue  # e.g. no cold items in the test split
            mean, sd = mean_std(xs)
            entry = {"mean": mean, "std": sd, "values": xs}
            if cand.label != BASELINE:
                entry["lift"] = lift(xs, bs)
            ps = [r[m] for r in peer] if peer and cand.label not in REFERENCES else []
            if ps and all(isinstance(x, (int, float)) and not math.isnan(x) for x in ps):
                entry["lift_peer"] = lift(xs, ps)
            row["metrics"][m] = entry
        rows.append(row)
    return {"campaign": c.name, "seeds": seeds, "metrics": metrics, "objective": objective, "rows": rows}


def shares(report: dict) -> dict[str, dict[str, float]]:
    """{component: {metric: share of the pick's lift over the baseline that switching it off loses}}
    (means over the seeds; a metric whose lift is 0 has no share)."""
    rows = report["rows"]
    best = pick_row(report)["metrics"]
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if not r.get("ablation"):
            continue
        out[r["ablation"]] = {}
        for m, e in r["metrics"].items():
            total = best.get(m, {}).get("lift", {}).get("mean")
            if total and m in best:
                out[r["ablation"]][m] = (best[m]["mean"] - e["mean"]) / total
    return out


def cell(e: dict | None) -> str:
    """A ``{"mean", "std"}`` entry as "mean ± std" (the mean alone for one value; "-" for none)."""
    if not e:
        return "-"
    return f"{e['mean']:.4f} ± {e['std']:.4f}" if not math.isnan(e["std"]) else f"{e['mean']:.4f}"


def table(report: dict) -> Table:
    t = Table(title=f"campaign {report['campaign']}: test metrics at the best valid epoch, mean ± std over seeds "
                    f"{', '.join(map(str, report['seeds']))}; lift = paired difference from the baseline "
                    f"[95% CI], and from the peer-equivalent start point (vs peer)", title_justify="left")
    t.add_column("configuration", no_wrap=True)
    objective = report.get("objective")
    if objective:
        t.add_column(f"{objective} (the pick's criterion)", justify="right")
    shown = [m for m in report["metrics"] if any(m in r["metrics"] for r in report["rows"])]
    for m in shown:
        t.add_column(m, justify="right")
    chosen = report.get("pick", {}).get("label")
    for r in report["rows"]:
        cells = []
        if objective:
            cells.append("-" if r.get("objective") is None else f"{r['objective']:.4f}")
        for m in shown:
            e = r["metrics"].get(m)
            if e is None:
                cells.append("-")
                continue
            text = cell(e)
            for key, tag in (("lift", ""), ("lift_peer", "vs peer ")):
                lf = e.get(key)
                if lf is not None:
                    ci = lf["ci95"]
                    text += f"\n{tag}{lf['mean']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
            cells.append(text)
        t.add_row(r["label"] + (" (pick)" if r["label"] == chosen else ""), *cells)
    abl = report.get("ablation")
    blank = [""] if objective else []
    if abl:
        for name, share in abl["share"].items():
            t.add_row(f"share of {abl['of']}'s lift carried by {name}",
                      *blank, *[f"{share[m]:.0%}" if m in share else "-" for m in shown])
        for name in abl["unused"]:
            t.add_row(f"{name}: not used by {abl['of']}", *blank, *["" for _ in shown])
    return t
