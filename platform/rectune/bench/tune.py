"""Tuning efficiency: ASHA + Optuna (TPE) against random search, same space, same trial budget.

Both campaigns run one after the other on the same dataset and machine. For each, every trial's
epochs are put in the order they were reported; compute is counted in trial-epochs; the curve is
the best valid metric seen so far. The figure of merit: the share of the random search's total
compute that ASHA + Optuna needed to reach the random search's final best (goal: 40% or less).

Platform overhead per trial: a trial's wall time to its last report (Tune's ``time_total_s``: the
trial driver, the Train worker group, the data stream's set-up, the reports) less the time its
worker spent training and scoring (``train/time_s`` + ``eval/time_s``), as a share of the wall time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

SPACE = {
    "objective": "valid/mean_auc",
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "sampler": {"name": "tpe", "seed": 0, "startup_trials": 4},
    "fixed": {"train.patience": 0, "train.batch_size": 1024},
    "search": {
        "optim.lr": {"float": [1.0e-4, 3.0e-2], "log": True},
        "model.emb_dim": {"categorical": [8, 16, 32]},
        "model.history": {"categorical": ["none", "mean", "attention"]},
        "model.fusion": {"categorical": ["concat", "gate"]},
        "model.mtl": {"categorical": ["shared_bottom", "mmoe"]},
        "model.mtl.experts": {"int": [2, 6]},
        "model.dropout": {"float": [0.0, 0.3]},
        "optim.weight_decay": {"float": [1.0e-7, 1.0e-3], "log": True},
    },
}


def curve(trials: list[dict], metric: str) -> list[tuple[int, float]]:
    """(trial-epochs spent, best ``metric`` so far) after each reported epoch, in report order."""
    events = [(h.get("timestamp", 0), h.get(metric)) for t in trials for h in t.get("history", [])]
    events.sort(key=lambda e: e[0])
    out, best = [], None
    for i, (_, v) in enumerate(events, 1):
        if v is not None and v == v and (best is None or v > best):
            best = v
        out.append((i, best))
    return out


def reach(points: list[tuple[int, float]], target: float) -> int | None:
    for spent, best in points:
        if best is not None and best >= target:
            return spent
    return None


def overhead(trials: list[dict]) -> list[float]:
    shares = []
    for t in trials:
        h = t.get("history") or []
        if not h:
            continue
        wall = h[-1].get("time_total_s") or 0.0
        work = sum((e.get("train/time_s") or 0.0) + (e.get("eval/time_s") or 0.0) for e in h)
        if wall > 0:
            shares.append(max(0.0, wall - work) / wall)
    return shares


def run(path: str | Path, trials: int = 12, epochs: int = 4, concurrency: int = 2, seed: int = 0,
        storage: str | None = None, console: Console | None = None) -> dict:
    from rectune.tune.campaign import run_campaign

    console = console or Console()
    tmp = tempfile.TemporaryDirectory() if storage is None else None
    root = Path(storage or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    metric = "valid/mean_auc"
    arms = {
        "asha+tpe": {"scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
                     "sampler": {"name": "tpe", "seed": seed, "startup_trials": max(2, trials // 3)}},
        "random": {"scheduler": {"name": "fifo"}, "sampler": {"name": "random", "seed": seed}},
    }
    out: dict = {}
    try:
        for name, changes in arms.items():
            tree = {**SPACE, **changes, "budget": {"trials": trials, "concurrency": concurrency},
                    "fixed": {**SPACE["fixed"], "train.epochs": epochs, "train.seed": seed}}
            space = root / f"{name}.yaml"
            space.write_text(yaml.safe_dump(tree))
            t0 = time.perf_counter()
            result = run_campaign(path, space, f"bench-{name.replace('+', '-')}-{int(time.time())}",
                                  storage=str(root), console=console)
            wall = time.perf_counter() - t0
            points = curve(result.trials, metric)
            out[name] = {"wall_s": wall, "curve": points, "epochs": points[-1][0] if points else 0,
                         "best": points[-1][1] if points else None, "overhead": overhead(result.trials),
                         "errored": sum(t["status"] == "error" for t in result.trials)}
    finally:
        if tmp is not None:
            tmp.cleanup()
    a, r = out["asha+tpe"], out["random"]
    needed = reach(a["curve"], r["best"]) if r["best"] is not None else None
    out["share_of_random_compute"] = needed / r["epochs"] if needed and r["epochs"] else None

    table = Table(title=f"tuning efficiency on {path}: {trials} trials, up to {epochs} epochs, {concurrency} at a time",
                  title_justify="left")
    for col in ("campaign", "trial-epochs", f"best {metric}", "wall s", "overhead / trial (mean, max)", "errored"):
        table.add_column(col, justify="right" if col != "campaign" else "left")
    for name in arms:
        o = out[name]
        ov = o["overhead"]
        table.add_row(name, str(o["epochs"]), f"{o['best']:.4f}" if o["best"] is not None else "-",
                      f"{o['wall_s']:.0f}",
                      f"{sum(ov) / len(ov):.0%}, {max(ov):.0%}" if ov else "-", str(o["errored"]))
    console.print(table)
    share = out["share_of_random_compute"]
    if share is None:
        console.print(f"asha+tpe never reached the random search's best {r['best']:.4f} "
                      f"(its own best {a['best']:.4f}): goal (<= 40% of random's compute) not met")
    else:
        console.print(f"asha+tpe reached the random search's final best ({r['best']:.4f}) after {needed} "
                      f"trial-epochs = {share:.0%} of random's {r['epochs']}: goal (<= 40%) "
                      f"{'met' if share <= 0.4 else 'not met'}")
    return out
