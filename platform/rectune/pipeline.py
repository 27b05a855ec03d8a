"""The Ray Data stream that feeds Ray Train: read once, prepare once, augment every epoch.

::

    read_parquet(columns)  ->  encode (pad sequences, labels as float)  ->  materialize   (one-off)
                           ->  augment + shuffle within the batch          (re-runs every epoch)

Ray Data re-runs everything after ``materialize()`` each time a Train worker iterates its shard,
but gives a user function no epoch number. The :class:`EpochClock` (a tiny named actor) carries
it: the worker sets it at the start of each epoch, the augmentation step reads it, so the draws
are reproducible from (seed, epoch) and differ between epochs. Validation and test streams are
never augmented.

The :class:`ResourcePlan` splits the machine between trial drivers, Train workers and Ray Data
steps. On a 2-CPU machine, Ray Data with its default 1 CPU per step gets nothing once a Train
worker holds a CPU and the epoch never starts (see ../shared/notes/ray-2.60.md); the plan gives
Data steps fractional CPUs out of what Train leaves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from rectune.augment import AugmentConfig, AugmentPlan
from rectune.batches import ROW_ID, arrow_to_batch, batch_to_arrow, table_to_batch
from rectune.data.prepared import PreparedDataset

CLOCK_PREFIX = "rectune-epoch-clock"


@dataclass(frozen=True)
class ResourcePlan:
    """How one cluster's CPUs and GPUs are shared by concurrent trials."""

    trials: int
    workers_per_trial: int
    cpus_per_worker: float
    gpus_per_worker: float
    driver_cpus: float
    data_cpus_per_task: float
    data_max_tasks: int

    @classmethod
    def for_cluster(cls, cpus: float, gpus: float = 0.0, trials: int = 1, workers: int = 1,
                    use_gpu: bool = False) -> "ResourcePlan":
        if cpus <= 0 or trials < 1 or workers < 1:
            raise ValueError("cpus must be > 0, trials and workers >= 1")
        driver = 0.01
        per_trial = cpus / trials
        # Train workers take at most half of a trial's share, and never more than one CPU each:
        # the rest is for Ray Data, which augments while the model trains.
        per_worker = max(0.1, min(1.0, (per_trial - driver) / (2 * workers))) if per_trial < 2 * workers + 1 \
            else min(float(math.floor((per_trial - driver) / 2 / workers)), 4.0)
        left = per_trial - driver - per_worker * workers
        data_task = 0.25 if left < 2 else 0.5
        max_tasks = max(1, int(left / data_task))
        gpus_per_worker = (gpus / trials / workers) if use_gpu and gpus else 0.0
        return cls(trials, workers, round(per_worker, 3), gpus_per_worker, driver, data_task, max_tasks)

    def to_dict(self) -> dict:
        return asdict(self)


class _Clock:
    def __init__(self) -> None:
        self.epoch = 0

    def set(self, epoch: int) -> int:
        self.epoch = epoch
        return epoch

    def get(self) -> int:
        return self.epoch


class EpochClock:
    """A named actor holding the current epoch of one training run.

    Not detached: it lives as long as the process that made it (the trial driver), so a crashed
    run leaves nothing behind in a long-lived cluster.
    """

    def __init__(self, run_id: str):
        import ray

        self.name = f"{CLOCK_PREFIX}-{run_id}"
        actor = ray.remote(num_cpus=0)(_Clock)
        self.handle = actor.options(name=self.name, get_if_exists=True).remote()

    def set(self, epoch: int) -> None:
        import ray

        ray.get(self.handle.set.remote(epoch))

    def kill(self) -> None:
        import ray

        ray.kill(self.handle)


def _epoch_of(clock_name: str | None) -> int:
    if clock_name is None:
        return 0
    import ray

    return ray.get(ray.get_actor(clock_name).get.remote())


class _Encode:
    def __init__(self, schema):
        self.schema = schema

    def __call__(self, table):
        batch = table_to_batch(table, self.schema)
        # a stable key per row (the same every epoch): Ray's hash of the row's file and position
        if "row_hash" in table.column_names:
            batch[ROW_ID] = table.column("row_hash").to_numpy().astype(np.uint64).view(np.int64) & 0x7FFFFFFFFFFFFFFF
        return batch_to_arrow(batch)


class _Augment:
    """The per-epoch step: augmentation (if any) and a shuffle of the rows within the batch."""

    def __init__(self, plan: AugmentPlan | None, clock_name: str | None, seed: int, shuffle: bool):
        self.plan, self.clock_name, self.seed, self.shuffle = plan, clock_name, seed, shuffle

    def __call__(self, table):
        batch = arrow_to_batch(table)
        epoch = _epoch_of(self.clock_name)
        if self.plan:
            batch = self.plan.apply(batch, epoch)
        if self.shuffle:
            first = int(batch[ROW_ID][0]) if len(batch[ROW_ID]) else 0
            perm = np.random.default_rng([self.seed, epoch, 1 << 20, first & 0x7FFFFFFF]).permutation(len(batch[ROW_ID]))
            batch = {k: v[perm] for k, v in batch.items()}
        return batch_to_arrow(batch)


def fits_in_object_store(parquet_bytes: int, share: float = 0.25) -> bool:
    """Whether a split, once decoded (taken as 4x its compressed Parquet size), fits the share."""
    import ray

    store = ray.available_resources().get("object_store_memory", 0)
    return 4 * parquet_bytes < share * store


def stream(ds: PreparedDataset, split: str, resources: ResourcePlan, augment: AugmentConfig | None = None,
           seed: int = 0, clock: EpochClock | None = None, batch_size: int = 4096, materialize: bool | None = None):
    """A Ray Dataset of encoded batches of ``split``; augmented and shuffled only for ``train``.

    ``materialize``: keep the encoded split in the object store so that only the per-epoch step
    re-runs; ``None`` decides by size (when it takes under a quarter of the object store).
    """
    import ray
    import ray.data

    schema = ds.schema
    columns = [f.name for f in schema.row_fields] + list(schema.tasks)
    rows = ds.schema.rows.get(split, 0)
    blocks = max(1, min(resources.data_max_tasks * 4, math.ceil(rows / batch_size)))
    data = ray.data.read_parquet(str(ds.split_path(split)), columns=columns, include_row_hash=True,
                                 num_cpus=resources.data_cpus_per_task, override_num_blocks=blocks)
    data = data.map_batches(_Encode(schema), batch_format="pyarrow", batch_size=batch_size,
                            num_cpus=resources.data_cpus_per_task, concurrency=resources.data_max_tasks)
    if materialize is None:
        materialize = fits_in_object_store(ds.split_path(split).stat().st_size)
    if materialize:
        data = data.materialize()
    if split == "train":
        plan = AugmentPlan(augment, ds, seed=seed) if augment is not None else None
        data = data.map_batches(_Augment(plan if plan else None, clock.name if clock else None, seed, True),
                                batch_format="pyarrow", batch_size=batch_size,
                                num_cpus=resources.data_cpus_per_task, concurrency=resources.data_max_tasks)
    return data
