"""``rectune bench augment``: the augmentation plan through Ray Data against the same operations
applied by numpy in one process (the in-process limit), on the same rows, side by side.

Preparation (reading, encoding, materialising) is excluded on both sides: what is timed is one
epoch of augmentation + within-batch shuffle, consumed as numpy batches by the driver.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from rectune.augment import AugmentConfig, AugmentPlan
from rectune.batches import table_to_batch
from rectune.data.prepared import open_dataset

DEFAULT_SETS = {"augment.noise.std": 0.1, "augment.mask.prob": 0.2}


def in_process(ds, config: AugmentConfig, batch_size: int, repeat: int) -> float:
    """Best rows/s of one epoch of plan.apply over prepared numpy batches, in this process."""
    table = ds.read_split("train")
    plan = AugmentPlan(config, ds, seed=0)
    batches = [table_to_batch(table.slice(s, batch_size), ds.schema, first_row=s)
               for s in range(0, table.num_rows, batch_size)]
    best = 0.0
    for epoch in range(repeat):
        t0 = time.perf_counter()
        for b in batches:
            out = plan.apply(b, epoch)
            perm = np.random.default_rng([epoch, int(b["_row"][0])]).permutation(len(b["_row"]))
            out = {k: v[perm] for k, v in out.items()}
        best = max(best, table.num_rows / (time.perf_counter() - t0))
    return best


def through_ray(ds, config: AugmentConfig, cpus: int, batch_size: int, repeat: int) -> float:
    import ray

    from rectune.pipeline import EpochClock, ResourcePlan, stream

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        # no Train worker here: Ray Data may use the whole machine
        plan = ResourcePlan(trials=1, workers_per_trial=0, cpus_per_worker=0, gpus_per_worker=0,
                            driver_cpus=0, data_cpus_per_task=0.5, data_max_tasks=2 * cpus)
        clock = EpochClock("bench")
        s = stream(ds, "train", plan, config, seed=0, clock=clock, batch_size=batch_size)
        best = 0.0
        for epoch in range(repeat):
            clock.set(epoch)
            t0 = time.perf_counter()
            n = sum(len(b["_row"]) for b in s.iter_batches(batch_size=batch_size, batch_format="numpy"))
            best = max(best, n / (time.perf_counter() - t0))
        clock.kill()
        return best
    finally:
        ray.shutdown()


def run(path: str | Path, sets: dict | None = None, batch_size: int = 8192, repeat: int = 3,
        cpus: tuple[int, ...] = (1, 2), console: Console | None = None) -> dict:
    console = console or Console()
    ds = open_dataset(path)
    config = AugmentConfig(sets or DEFAULT_SETS)
    rows = ds.schema.rows["train"]
    results = {"in_process": in_process(ds, config, batch_size, repeat)}
    for n in cpus:
        results[f"ray_{n}cpu"] = through_ray(ds, config, n, batch_size, repeat)
    table = Table(title=f"augmentation of {ds.schema.name} train ({rows:,} rows): "
                        + ", ".join(f"{k}={v}" for k, v in config.to_dict().items() if k in (sets or DEFAULT_SETS)))
    table.add_column("mode")
    table.add_column("rows/s", justify="right")
    table.add_column("vs in-process", justify="right")
    base = results["in_process"]
    for k, v in results.items():
        table.add_row(k.replace("_", " "), f"{v:,.0f}", f"{v / base:.2f}x")
    console.print(table)
    return results
