"""``rectune bench augment``: one epoch of the training stream through Ray Data against the same
operations done by numpy in one process (the in-process limit), on the same rows, side by side.

Both sides run the same per-epoch step (``rectune.pipeline._EpochStep``: units of 64k rows in an
order drawn from (seed, epoch), augmentation per unit, rows exchanged within windows of two units)
and hand the result on as torch tensors in batches of ``batch_size``, which is what the Train
worker consumes. Preparation (reading, encoding, materialising) is excluded on both sides.
Ray Data with N CPUs: ``ray.init(num_cpus=N)`` and Data tasks of one CPU each, at most N at a
time; the consumer is this process, as the Train worker is its own process.

Also shown, for continuity with earlier figures: the previous in-process reference (the plan
and a permutation per 8,192-row batch, fancy indexing).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from rectune.augment import AugmentConfig, AugmentPlan
from rectune.batches import ROW_ID, table_to_batch
from rectune.data.prepared import open_dataset

DEFAULT_SETS = {"augment.noise.std": 0.1, "augment.mask.prob": 0.2}


def _timed(epochs, run) -> list[float]:
    """rows/s of ``run(epoch)`` (which returns the rows it delivered), one figure per epoch."""
    out = []
    for epoch in epochs:
        t0 = time.perf_counter()
        n = run(epoch)
        out.append(n / (time.perf_counter() - t0))
    return out


def in_process(ds, config: AugmentConfig, batch_size: int, repeat: int, block_rows: int, window: int) -> list[float]:
    """The stream's per-epoch step in this process, over the same units, to torch batches."""
    import torch

    from rectune.pipeline import _Encode, _EpochStep, _row_groups, block_units

    path = ds.split_path("train")
    encode = _Encode(str(path), ds.schema, [f.name for f in ds.schema.row_fields] + list(ds.schema.tasks))
    tables = [encode.table(g, first) for g, first, _ in _row_groups(path)]
    units = block_units([t.num_rows for t in tables], max(block_rows, batch_size))
    step = _EpochStep(units, tables, None, AugmentPlan(config, ds, seed=0), None, 0, window)

    def epoch_rows(epoch: int) -> int:
        order, n = step.unit_order(epoch), 0
        for j in range(step.windows()):
            out = step.window_batch(j, epoch, order)
            for s in range(0, len(out[ROW_ID]), batch_size):
                b = {k: torch.from_numpy(v[s:s + batch_size]) for k, v in out.items()}
                n += len(b[ROW_ID])
        return n

    return _timed(range(repeat), epoch_rows)


def in_process_batches(ds, config: AugmentConfig, batch_size: int, repeat: int) -> list[float]:
    """The previous reference: plan + permutation per batch of ``batch_size`` rows."""
    import torch

    table = ds.read_split("train")
    plan = AugmentPlan(config, ds, seed=0)
    batches = [table_to_batch(table.slice(s, batch_size), ds.schema, first_row=s)
               for s in range(0, table.num_rows, batch_size)]

    def epoch_rows(epoch: int) -> int:
        n = 0
        for b in batches:
            out = plan.apply(b, epoch)
            perm = np.random.default_rng([epoch, int(b[ROW_ID][0])]).permutation(len(b[ROW_ID]))
            out = {k: torch.from_numpy(v[perm]) for k, v in out.items()}
            n += len(out[ROW_ID])
        return n

    return _timed(range(repeat), epoch_rows)


def through_ray(ds, config: AugmentConfig, cpus: int, batch_size: int, repeat: int, block_rows: int,
                window: int) -> list[float]:
    import ray

    from rectune.pipeline import EpochClock, ResourcePlan, stream, torch_batches

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        # no Train worker here: Ray Data may use the whole of its CPUs, one task per CPU
        plan = ResourcePlan(trials=1, workers_per_trial=0, cpus_per_worker=0, gpus_per_worker=0,
                            driver_cpus=0, data_cpus_per_task=1.0, data_max_tasks=cpus)
        clock = EpochClock("bench")
        try:
            s = stream(ds, "train", plan, config, seed=0, clock=clock, batch_size=batch_size,
                       block_rows=block_rows, shuffle_window=window)

            def epoch_rows(epoch: int) -> int:
                clock.set(epoch)
                return sum(len(b[ROW_ID]) for b in torch_batches(s, batch_size))

            return _timed(range(repeat), epoch_rows)
        finally:
            clock.kill()
    finally:
        ray.shutdown()


def run(path: str | Path, sets: dict | None = None, batch_size: int = 8192, repeat: int = 3,
        cpus: tuple[int, ...] = (1, 2), console: Console | None = None, block_rows: int | None = None,
        window: int | None = None) -> dict:
    """Best rows/s of ``repeat`` epochs per mode (and the median), printed side by side."""
    from rectune.pipeline import BLOCK_ROWS, SHUFFLE_WINDOW

    block_rows, window = block_rows or BLOCK_ROWS, window or SHUFFLE_WINDOW
    console = console or Console()
    ds = open_dataset(path)
    config = AugmentConfig(sets or DEFAULT_SETS)
    rows = ds.schema.rows["train"]
    runs = {"in_process": in_process(ds, config, batch_size, repeat, block_rows, window),
            "in_process_8k_batches": in_process_batches(ds, config, batch_size, repeat)}
    for n in cpus:
        runs[f"ray_{n}cpu"] = through_ray(ds, config, n, batch_size, repeat, block_rows, window)
    results = {k: max(v) for k, v in runs.items()}
    table = Table(title=f"one epoch of {ds.schema.name} train ({rows:,} rows) to torch batches of {batch_size:,}: "
                        + ", ".join(f"{k}={v}" for k, v in config.to_dict().items() if k in (sets or DEFAULT_SETS))
                        + f"; best of {repeat} epochs")
    table.add_column("mode")
    table.add_column("rows/s (best)", justify="right")
    table.add_column("rows/s (median)", justify="right")
    table.add_column("vs in-process", justify="right")
    base = results["in_process"]
    names = {"in_process": "in process (same ops)", "in_process_8k_batches": "in process, 8k batches (old ref.)"}
    for k, v in results.items():
        table.add_row(names.get(k, k.replace("_", " ")), f"{v:,.0f}", f"{np.median(runs[k]):,.0f}", f"{v / base:.2f}x")
    console.print(table)
    return results
