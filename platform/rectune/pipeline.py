"""The Ray Data stream that feeds Ray Train: read once, prepare once, augment and shuffle every epoch.

::

    Parquet row groups  ->  encode (pad sequences, labels as float, row ids)  ->  materialize   (one-off)
                        ->  per window of units: augment, exchange rows, shuffle   (re-runs every epoch)

The split is cut into *units* (a Parquet row group, or a slice of ``block_rows`` rows of a
materialised block). The per-epoch step runs over a small index dataset, one item per *window*
of units: at epoch ``e`` window ``j`` takes the units ``order[j*w:(j+1)*w]`` of a permutation of
all units drawn from ``(seed, e)``, augments each unit (draws keyed by the unit's first row id,
its size, seed and epoch), then permutes the rows of the whole window. So the order of units,
the window a row falls into and the rows it is batched with all change every epoch, and an epoch
is reproducible from ``(seed, epoch)``: no local shuffle buffer, and one pass over the rows.

Row ids (``batches.ROW_ID``) are the row's index in its split, as in ``batches.table_to_batch``.

Ray Data re-runs everything after ``materialize()`` each time a Train worker iterates its shard,
but gives a user function no epoch number. The :class:`EpochClock` (a tiny named actor) carries
it: the worker sets it at the start of each epoch, the per-epoch step reads it once per task
(a few tasks per epoch, each streaming out one block per window).
Validation and test streams are never augmented nor shuffled.

Consumers: ``iter_torch_batches(collate_fn=TorchCollate())`` (or :func:`torch_batches`) converts
Arrow batches to tensors without copying: ~160 us per 8,192-row batch against ~915 us for Ray's
default collate (a thread pool per batch) on a 2-core machine (BENCHMARKS.md). The order of rows
is deterministic when the stream runs with ``preserve_order`` (set on the returned dataset; Ray
Train replaces a dataset's execution options by its ``DataConfig``'s: pass :func:`data_config`).
With several Train workers the split of windows between workers depends on timing; each row's
augmentation does not.

The :class:`ResourcePlan` splits the machine between trial drivers, Train workers and Ray Data
steps. On a 2-CPU machine, Ray Data with its default 1 CPU per step gets nothing once a Train
worker holds a CPU and the epoch never starts (see ../shared/notes/ray-2.60.md); the plan gives
Data steps fractional CPUs out of what Train leaves.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from rectune.augment import AugmentConfig, AugmentPlan
from rectune.batches import ROW_ID, arrow_to_batch, batch_to_arrow, table_to_batch
from rectune.data.prepared import PreparedDataset

CLOCK_PREFIX = "rectune-epoch-clock"
BLOCK_ROWS = 65536
SHUFFLE_WINDOW = 2
MIN_TRIAL_CPUS = 0.1
_DRIVER_CPUS = 0.01
# stream tags of the per-epoch generators (never equal to an augmenter's index in AugmentPlan)
_UNIT_ORDER, _ROW_ORDER = 1 << 20, (1 << 20) + 1


def _floor(x: float, digits: int) -> float:
    scale = 10 ** digits
    return math.floor(x * scale + 1e-9) / scale


@dataclass(frozen=True)
class ResourcePlan:
    """How one cluster's CPUs and GPUs are shared by concurrent trials.

    Per trial: a driver (``driver_cpus``), ``workers_per_trial`` Train workers of
    ``cpus_per_worker`` (+ ``gpus_per_worker``) and up to ``data_max_tasks`` Ray Data tasks of
    ``data_cpus_per_task``; ``trials`` times that never exceeds the cluster, and Ray Data always
    has at least one task's worth of CPU beside the Train workers.
    """

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
        per_trial = cpus / trials
        if per_trial < MIN_TRIAL_CPUS:
            raise ValueError(f"{trials} concurrent trials on {cpus:g} CPUs leave {per_trial:.3f} CPU per trial "
                             f"(at least {MIN_TRIAL_CPUS} needed): run at most {int(cpus / MIN_TRIAL_CPUS)} at once")
        if use_gpu and gpus <= 0:
            raise ValueError("use_gpu: the cluster has no GPU")
        avail = per_trial - _DRIVER_CPUS
        # Train workers take at most half of a trial's share and at most one CPU each, until the
        # share is large (then whole CPUs, at most 4): the rest is for Ray Data, which augments
        # while the model trains.
        if avail >= 2 * workers + 1:
            per_worker = min(float(math.floor(avail / 2 / workers)), 4.0)
        else:
            per_worker = _floor(min(1.0, avail / (2 * workers)), 3)
        left = avail - per_worker * workers  # >= avail / 2 > 0
        data_task = 0.5 if left >= 2 else _floor(min(0.25, left), 3)
        max_tasks = max(1, int(left / data_task + 1e-9))
        gpus_per_worker = 0.0
        if use_gpu:
            share = gpus / trials / workers
            gpus_per_worker = float(math.floor(share)) if share >= 1 else _floor(share, 4)
        return cls(trials, workers, per_worker, gpus_per_worker, _DRIVER_CPUS, data_task, max_tasks)

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


# ---------------------------------------------------------------------------------------------
# units: where the rows of a split come from


def _row_groups(path) -> list[tuple[int, int, int]]:
    """(row group, first row in the split, rows) of a Parquet file."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    out, first = [], 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if n:
            out.append((g, first, n))
        first += n
    return out


def block_units(sizes: list[int], rows: int) -> list[tuple[int, int, int]]:
    """``(block, start, stop)``: each block cut into equal slices of about ``rows`` rows."""
    units = []
    for i, n in enumerate(sizes):
        k = max(1, round(n / rows))
        cuts = [n * q // k for q in range(k + 1)]
        units += [(i, a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    return units


class _Encode:
    """Reads row groups of one Parquet split and encodes them (one block per row group)."""

    def __init__(self, path: str, schema, columns: list[str]):
        self.path, self.schema, self.columns = path, schema, columns

    def table(self, group: int, first: int) -> pa.Table:
        import pyarrow.parquet as pq

        raw = pq.ParquetFile(self.path).read_row_group(group, columns=self.columns)
        return batch_to_arrow(table_to_batch(raw, self.schema, first_row=first))

    def __call__(self, items: pa.Table):
        for g, first in zip(items.column("group").to_pylist(), items.column("first").to_pylist()):
            yield self.table(g, first)


class _EpochStep:
    """The per-epoch step over windows of units: augmentation (if any) and the shuffle.

    ``units``: ``(block, start, stop)`` slices of the materialised ``refs`` (object refs, or Arrow
    tables when run in process) or, when ``refs`` is None, ``(row group, first row, rows)`` of the
    Parquet split, read and encoded here each epoch.
    """

    def __init__(self, units, refs, encode: _Encode | None, plan: AugmentPlan | None, clock_name: str | None,
                 seed: int, window: int, shuffle: bool = True):
        self.units, self.refs, self.encode = units, refs, encode
        self.plan, self.clock_name, self.seed, self.window, self.shuffle = plan, clock_name, seed, window, shuffle

    def unit_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.units))
        return np.random.default_rng([self.seed, epoch, _UNIT_ORDER]).permutation(len(self.units))

    def _tables(self, picks) -> list[pa.Table]:
        if self.refs is None:
            return [self.encode.table(self.units[u][0], self.units[u][1]) for u in picks]
        blocks = sorted({self.units[u][0] for u in picks})
        if isinstance(self.refs[0], pa.Table):  # in-process (the benchmark's reference)
            got = {b: self.refs[b] for b in blocks}
        else:
            import ray

            got = dict(zip(blocks, ray.get([self.refs[b] for b in blocks])))
        return [got[self.units[u][0]].slice(self.units[u][1], self.units[u][2] - self.units[u][1]) for u in picks]

    def windows(self) -> int:
        return max(1, math.ceil(len(self.units) / self.window)) if self.units else 0

    def window_batch(self, j: int, epoch: int, order: np.ndarray) -> dict:
        """Window ``j`` of ``epoch``: its units augmented one by one, then its rows permuted."""
        picks = order[j * self.window:(j + 1) * self.window]
        parts = [arrow_to_batch(t) for t in self._tables(picks)]
        if self.plan:
            parts = [self.plan.apply(b, epoch) for b in parts]
        n = sum(len(b[ROW_ID]) for b in parts)
        perm = np.random.default_rng([self.seed, epoch, _ROW_ORDER, j]).permutation(n) if self.shuffle else None
        out = {}
        for k in parts[0]:
            col = parts[0][k] if len(parts) == 1 else np.concatenate([b[k] for b in parts])
            # np.take along axis 0 is 3-4x faster than fancy indexing for the 2-D sequence columns
            out[k] = col if perm is None else np.take(col, perm, axis=0)
        return out

    def __call__(self, items: pa.Table):
        """One task per item: a contiguous range of windows, one output block per window."""
        epoch = _epoch_of(self.clock_name)
        order = self.unit_order(epoch)
        for lo, hi in zip(items.column("lo").to_pylist(), items.column("hi").to_pylist()):
            for j in range(lo, hi):
                yield batch_to_arrow(self.window_batch(j, epoch, order))


def _row_bytes(schema) -> int:
    """Bytes of one encoded row (ids and labels 4 bytes, sequences 4 per position, row id 8)."""
    return 8 + 4 * len(schema.tasks) + sum(4 * (f.max_len if f.kind == "sequence" else 1) for f in schema.row_fields)


# ---------------------------------------------------------------------------------------------
# consumers


class _TorchCollate:
    """``iter_torch_batches(collate_fn=TorchCollate())``: Arrow batch -> dict of CPU tensors,
    zero-copy (the tensors share the batch's read-only buffers, as with Ray's default collate: do
    not write into them). Ray moves them to the Train worker's device afterwards."""

    def __call__(self, batch: pa.Table) -> dict:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "The given NumPy array is not writable"
            return {name: torch.from_numpy(arr) for name, arr in arrow_to_batch(batch).items()}


_LAZY: dict = {}


def __getattr__(name: str):
    # TorchCollate subclasses Ray's ArrowBatchCollateFn (Ray checks the type), made on first use
    # so that importing this module does not import Ray Data
    if name == "TorchCollate":
        if name not in _LAZY:
            from ray.data.collate_fn import ArrowBatchCollateFn

            _LAZY[name] = type("TorchCollate", (_TorchCollate, ArrowBatchCollateFn),
                               {"__module__": __name__, "__doc__": _TorchCollate.__doc__})
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def torch_batches(iterator, batch_size: int, **kwargs):
    """Torch batches of a dataset or a Train shard (``ray.train.get_dataset_shard``), converted
    with :class:`TorchCollate`; other arguments go to ``iter_torch_batches``."""
    return iterator.iter_torch_batches(batch_size=batch_size, collate_fn=__getattr__("TorchCollate")(), **kwargs)


def data_config(**kwargs):
    """``ray.train.DataConfig`` whose execution options keep the stream's row order (so an epoch's
    order is reproducible from (seed, epoch) with one worker); kwargs go to DataConfig."""
    import ray.data
    import ray.train

    options = ray.data.ExecutionOptions()
    options.preserve_order = True
    return ray.train.DataConfig(execution_options=options, **kwargs)


# ---------------------------------------------------------------------------------------------


def fits_in_object_store(parquet_bytes: int, share: float = 0.25) -> bool:
    """Whether a split, once decoded (taken as 4x its compressed Parquet size), fits the share."""
    import ray

    store = ray.available_resources().get("object_store_memory", 0)
    return 4 * parquet_bytes < share * store


def _tasks(n: int):
    """At most ``n`` tasks at once (``compute=``: ``concurrency=`` is deprecated since Ray 2.51)."""
    import ray.data

    return ray.data.TaskPoolStrategy(size=n)


def _configure(data):
    """Options of one stream (its own DataContext copy; the global one is left alone): rows in a
    reproducible order, and no per-operator reservations (one map step needs none; with them an
    epoch on 1-2 CPUs ran ~1.3x slower, BENCHMARKS.md)."""
    data.context.execution_options.preserve_order = True
    data.context.op_resource_reservation_enabled = False
    return data


def stream(ds: PreparedDataset, split: str, resources: ResourcePlan, augment: AugmentConfig | None = None,
           seed: int = 0, clock: EpochClock | None = None, batch_size: int = 4096, materialize: bool | None = None,
           block_rows: int = BLOCK_ROWS, shuffle_window: int = SHUFFLE_WINDOW):
    """A Ray Dataset of encoded rows of ``split``; augmented and shuffled every epoch only for ``train``.

    ``materialize``: keep the encoded split in the object store so that only the per-epoch step
    re-runs; ``None`` decides by size (when it takes under a quarter of the object store).
    ``block_rows``: rows per unit of the per-epoch step (materialised splits; otherwise a unit
    is a Parquet row group); ``shuffle_window``: units whose rows are exchanged in one window.
    ``batch_size`` is the consumer's: units are never smaller.
    """
    import pyarrow.parquet as pq
    import ray
    import ray.data

    schema = ds.schema
    path = ds.split_path(split)
    present = set(pq.read_schema(path).names)
    columns = [c for c in [f.name for f in schema.row_fields] + list(schema.tasks) if c in present]
    encode = _Encode(str(path), schema, columns)
    groups = _row_groups(path)
    cpus, tasks = resources.data_cpus_per_task, resources.data_max_tasks
    if materialize is None:
        materialize = fits_in_object_store(path.stat().st_size)
    train = split == "train"
    rows = max(block_rows, batch_size)
    plan = AugmentPlan(augment, ds, seed=seed) if train and augment is not None else None

    if materialize or not train:
        items = ray.data.from_items([{"group": g, "first": f} for g, f, _ in groups] or [{"group": 0, "first": 0}],
                                    override_num_blocks=max(1, len(groups)))
        if not groups:
            items = items.limit(0)
        encoded = _configure(items.map_batches(encode, batch_format="pyarrow", batch_size=None,
                                               num_cpus=cpus, compute=_tasks(max(1, min(tasks, len(groups))))))
        if materialize:
            encoded = encoded.materialize()
        if not train:
            return encoded
        entries = [e for bundle in encoded.iter_internal_ref_bundles() for e in bundle.blocks]
        refs, units = [e.ref for e in entries], block_units([e.metadata.num_rows for e in entries], rows)
        step = _EpochStep(units, refs, None, plan, clock.name if clock else None, seed, shuffle_window)
    else:
        units = [(g, f, n) for g, f, n in groups]
        step = _EpochStep(units, None, encode, plan, clock.name if clock else None, seed, shuffle_window)

    windows = step.windows()
    # one task per parallel slot, each streaming its windows out one block at a time: Ray Data's
    # executor costs ~13 ms of driver time per task (BENCHMARKS.md), so tasks are few and long
    n_tasks = max(1, min(tasks, windows))
    bounds = [windows * t // n_tasks for t in range(n_tasks + 1)]
    index = ray.data.from_items([{"lo": a, "hi": b} for a, b in zip(bounds[:-1], bounds[1:])],
                                override_num_blocks=n_tasks)
    if not windows:
        index = index.limit(0)
    data = _configure(index.map_batches(step, batch_format="pyarrow", batch_size=None,
                                         num_cpus=cpus, compute=_tasks(n_tasks)))
    # each window its own block (not merged up to Ray's 128 MiB target): the consumer starts
    # on the first window instead of waiting for a whole task
    data.context.target_max_block_size = max(1 << 20, int(0.75 * _row_bytes(schema) * step.window * rows))
    return data
