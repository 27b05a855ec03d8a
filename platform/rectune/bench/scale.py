"""``rectune bench scale``: throughput of one trial with 1 and 2 Train workers, and of a campaign
with 1, 2 and 4 trials at a time, on this machine (issue 7).

- **Workers**: ``rectune train`` (Ray Train, the Ray Data stream, no augmentation) on the same rows
  and settings with each worker count; samples/s = training rows / the steady epoch's time (the
  median epoch after the first: the first also pulls each worker's shard). With several workers
  each trains its shard and gradients are averaged every step.
- **Concurrency**: the same campaign (random search, FIFO: no early stopping, so every campaign
  trains exactly the same configurations in the same order) with each ``budget.concurrency``;
  figures: wall time, trials per hour, and the speed-up against one trial at a time.
A setting the machine cannot hold (more trials at once than its CPUs allow) is reported, not run.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

SPACE = {
    "objective": "valid/mean_auc",
    "scheduler": {"name": "fifo"},
    "sampler": {"name": "random", "seed": 0},
    "fixed": {"train.patience": 0, "train.batch_size": 1024},
    "search": {"optim.lr": {"float": [1.0e-3, 1.0e-2], "log": True},
               "model.mtl": {"categorical": ["shared_bottom", "mmoe"]}},
}


def _steady(times: list[float]) -> float:
    return statistics.median(times[1:]) if len(times) > 1 else times[0]


def run(path: str | Path, epochs: int = 2, trials: int = 4, workers: tuple[int, ...] = (1, 2),
        concurrency: tuple[int, ...] = (1, 2, 4), console: Console | None = None) -> dict:
    from rectune.data.prepared import open_dataset
    from rectune.errors import RectuneError
    from rectune.runconfig import RunConfig
    from rectune.train.run import train
    from rectune.tune.campaign import run_campaign

    console = console or Console()
    ds = open_dataset(path)
    rows = ds.schema.rows.get("train", 0)
    out: dict = {"workers": {}, "concurrency": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for w in workers:
            cfg = RunConfig({"model.mtl": "mmoe", "train.epochs": max(2, epochs), "train.patience": 0,
                             "train.batch_size": 1024})
            t0 = time.perf_counter()
            try:
                result = train(path, cfg, root / f"workers-{w}", workers=w, console=Console(file=io.StringIO()))
            except (RectuneError, ValueError) as exc:
                out["workers"][w] = {"skipped": str(exc)}
                continue
            times = [m["train/time_s"] for m in result.metrics["history"]]
            out["workers"][w] = {"wall_s": time.perf_counter() - t0, "epoch_s": times,
                                 "samples_s": rows / _steady(times)}
            console.print(f"  {w} worker(s): epochs {', '.join(f'{t:.1f}' for t in times)} s")
        for c in concurrency:
            tree = {**SPACE, "budget": {"trials": trials, "concurrency": c},
                    "fixed": {**SPACE["fixed"], "train.epochs": epochs}}
            space = root / f"c{c}.yaml"
            space.write_text(yaml.safe_dump(tree))
            t0 = time.perf_counter()
            try:
                result = run_campaign(path, space, f"scale-c{c}", storage=str(root / "campaigns"),
                                      console=Console(file=io.StringIO()))
            except (RectuneError, ValueError) as exc:
                out["concurrency"][c] = {"skipped": str(exc).splitlines()[0]}
                console.print(f"  {c} at a time: not run ({out['concurrency'][c]['skipped']})")
                continue
            wall = time.perf_counter() - t0
            done = sum(t["status"] == "done" for t in result.trials)
            out["concurrency"][c] = {"wall_s": wall, "trials": done, "trials_per_hour": done / wall * 3600}
            console.print(f"  {c} at a time: {done} trials in {wall:.0f} s")
    _print(out, path, rows, epochs, trials, console)
    return out


def _table(title: str, columns: tuple[str, ...], results: dict, rate: str, cells) -> Table:
    """One row per setting: ``cells(o)`` for a measured one, then its ``rate`` against the first
    setting's (1 worker, 1 at a time); a skipped setting shows why."""
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="right")
    base = next(iter(results.values()), {}).get(rate)
    for k, o in results.items():
        if "skipped" in o:
            t.add_row(str(k), "-", "-", o["skipped"][:80])
            continue
        t.add_row(str(k), *cells(o), f"{o[rate] / base:.2f}x" if base else "-")
    return t


def _print(out: dict, path, rows: int, epochs: int, trials: int, console: Console) -> None:
    console.print(_table(f"one trial's throughput by Train workers ({path}, {rows:,} training rows, MMoE)",
                         ("workers", "steady epoch s", "samples/s", "vs 1 worker"), out["workers"], "samples_s",
                         lambda o: (f"{_steady(o['epoch_s']):.2f}", f"{o['samples_s']:,.0f}")))
    console.print(_table(f"a campaign's throughput by trials at a time ({trials} trials, {epochs} epochs, FIFO, "
                         f"same configurations)", ("at a time", "wall s", "trials/hour", "vs 1 at a time"),
                         out["concurrency"], "trials_per_hour",
                         lambda o: (f"{o['wall_s']:.0f}", f"{o['trials_per_hour']:.1f}")))
