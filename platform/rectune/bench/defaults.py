"""``rectune bench defaults``: rectune's defaults against the usual peer, with no settings at all.

For each dataset and seed, on the same rows:

- **defaults**: what ``rectune train --data X`` trains with no ``--set`` (every key at its
  default, ``train.seed`` = the seed), by the plain loop (:func:`rectune.train.local.fit_local`:
  the same step as the Ray worker; the defaults have no data-stream augmentation);
- **peer**: torch-rechub 0.9's MMoE with the behaviour history mean-pooled, at the settings of its
  examples (emb 16, batch 1024, Adam lr 1e-3, weight decay 1e-5, experts [128, 64], towers [32]),
  best of ``--peer-epochs`` epochs by the mean valid AUC (``peer_rechub.py``);
- **variants**: other rectune configurations (defaults plus the variant's keys), to measure a
  candidate default before it becomes one.

Test AUC at each run's best valid epoch, mean ± std over the seeds, and each side's difference
from the peer per task. The check passes when the defaults' mean is at least the peer's on every
task of every dataset.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rectune.bench.train import peer_status, run_peer
from rectune.data.prepared import open_dataset

PEER = {"epochs": 5, "batch_size": 1024, "emb": 16, "lr": 1e-3}


def default_config(seed: int, sets: dict | None = None):
    from rectune.runconfig import RunConfig

    return RunConfig({"train.seed": seed}).update(sets or {})


def run_rectune(ds, cfg, data: dict) -> dict:
    from rectune.train.local import fit_local

    t0 = time.perf_counter()
    r = fit_local(ds, cfg, splits=("valid", "test"), data=dict(data))
    at = r.state.history[r.state.best_epoch]
    return {"test_auc": {t: float(at[f"test/{t}_auc"]) for t in ds.schema.tasks},
            "best_epoch": r.state.best_epoch, "epochs": len(r.state.history), "wall_s": time.perf_counter() - t0}


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def run(paths: list[Path], seeds: int = 3, peer_python: Path | None = None, variants: dict[str, dict] | None = None,
        console: Console | None = None) -> dict:
    """Every side on every dataset, seeds ``0 .. seeds-1``; prints the tables, returns the figures."""
    from rectune.train.tensors import TensorRows

    console = console or Console(width=None if sys.stdout.isatty() else 160)
    for sets in (variants or {}).values():  # a bad key is refused before the first run
        default_config(0, sets)
    skip = peer_status(peer_python)
    if skip:
        console.print(f"[yellow]{skip}[/yellow]")
    out = {}
    for path in paths:
        path = Path(path).resolve()
        ds = open_dataset(path)
        tasks = list(ds.schema.tasks)
        # the folder's name too where it differs: worlds of one generator share a schema name
        label = ds.schema.name if path.name == ds.schema.name else f"{path.name} ({ds.schema.name})"
        data = {s: TensorRows.from_split(ds, s) for s in ("train", "valid", "test")}
        sides: dict[str, list[dict]] = {"defaults": []}
        if not skip:
            sides["peer"] = []
        for name in variants or {}:
            sides[name] = []
        console.print(f"bench defaults: {label} ({ds.schema.rows['train']:,} train rows), tasks "
                      f"{', '.join(tasks)}, seeds 0..{seeds - 1}")
        for seed in range(seeds):
            for side in sides:
                if side == "peer":
                    r = run_peer(peer_python, path, seed, PEER["epochs"], PEER["batch_size"], PEER["emb"], PEER["lr"],
                                 True, 0)
                else:
                    r = run_rectune(ds, default_config(seed, (variants or {}).get(side)), data)
                sides[side].append(r)
                if "error" in r:
                    console.print(f"  seed {seed} {escape(side)}: [red]failed[/red] {escape(r['error'])}")
                else:
                    auc = " ".join(f"{t} {r['test_auc'][t]:.4f}" for t in tasks)
                    console.print(f"  seed {seed} {escape(side)}: test AUC {auc}; best epoch {r['best_epoch']}; "
                                  f"wall {r['wall_s']:.0f} s")
        out[label] = _summarise(sides, tasks)
        _print(console, label, out[label], tasks, seeds)
    verdicts = [v["defaults_vs_peer"] for v in out.values() if "defaults_vs_peer" in v]
    if verdicts:
        met = all(all(d >= 0 for d in v.values()) for v in verdicts)
        console.print(f"defaults >= peer on every task of every dataset: {'met' if met else 'NOT met'}")
    return out


def _summarise(sides: dict[str, list[dict]], tasks: list[str]) -> dict:
    summary = {}
    for side, runs in sides.items():
        ok = [r for r in runs if "error" not in r]
        if ok:
            summary[side] = {t: _mean_std([r["test_auc"][t] for r in ok]) for t in tasks}
    out = {"sides": summary, "runs": sides}
    if "peer" in summary:
        for side in summary:
            if side != "peer":
                out.setdefault("vs_peer", {})[side] = {t: summary[side][t][0] - summary["peer"][t][0] for t in tasks}
        if "defaults" in summary:
            out["defaults_vs_peer"] = out["vs_peer"]["defaults"]
    return out


def _print(console: Console, name: str, fig: dict, tasks: list[str], seeds: int) -> None:
    table = Table(title=f"{name}: test AUC, mean ± std over {seeds} seed(s) (vs peer: difference of the means)",
                  title_justify="left")
    table.add_column("side")
    for t in tasks:
        table.add_column(t, justify="right")
        if "vs_peer" in fig:
            table.add_column(f"{t} vs peer", justify="right")
    for side, auc in fig["sides"].items():
        row = [escape("torch-rechub MMoE + history (its defaults)" if side == "peer" else
                      "rectune defaults" if side == "defaults" else f"rectune defaults + {side}")]
        for t in tasks:
            row.append(f"{auc[t][0]:.4f} ± {auc[t][1]:.4f}")
            if "vs_peer" in fig:
                d = fig["vs_peer"].get(side, {}).get(t)
                row.append("" if d is None else f"{d:+.4f}")
        table.add_row(*row)
    console.print(table)
