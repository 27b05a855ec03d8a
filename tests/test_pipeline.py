"""The Ray Data stream: per-epoch augmentation through the epoch clock, and no 2-CPU deadlock."""

from __future__ import annotations

import numpy as np
import pytest

from rectune.augment import AugmentConfig
from rectune.batches import ROW_ID
from rectune.data import open_dataset
from rectune.pipeline import ResourcePlan


@pytest.fixture(scope="module")
def ray_2cpu():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


GRID = [(cpus, gpus, trials, workers, use_gpu)
        for cpus in (0.5, 1, 2, 3, 4, 7, 8, 16, 64, 96)
        for gpus in (0, 1, 2, 8)
        for trials in (1, 2, 3, 4, 8, 16)
        for workers in (1, 2, 4)
        for use_gpu in (False, True)
        if cpus / trials >= 0.1 and not (use_gpu and gpus == 0)]


def test_resource_plan_invariants_over_a_grid():
    for cpus, gpus, trials, workers, use_gpu in GRID:
        p = ResourcePlan.for_cluster(cpus, gpus, trials=trials, workers=workers, use_gpu=use_gpu)
        case = (cpus, gpus, trials, workers, use_gpu, p)
        per_trial = p.driver_cpus + workers * p.cpus_per_worker + p.data_max_tasks * p.data_cpus_per_task
        assert trials * per_trial <= cpus + 1e-9, case  # never more than the cluster
        # Ray Data always has at least one task's worth of CPU beside the Train workers
        assert cpus / trials - p.driver_cpus - workers * p.cpus_per_worker >= p.data_cpus_per_task - 1e-9, case
        assert p.cpus_per_worker > 0 and p.data_cpus_per_task > 0 and p.data_max_tasks >= 1, case
        assert p.trials == trials and p.workers_per_trial == workers, case
        if use_gpu:
            assert 0 < p.gpus_per_worker and trials * workers * p.gpus_per_worker <= gpus + 1e-9, case
            assert p.gpus_per_worker < 1 or p.gpus_per_worker == int(p.gpus_per_worker), case  # Ray: >1 must be whole
        else:
            assert p.gpus_per_worker == 0, case
        for v in (p.cpus_per_worker, p.data_cpus_per_task, p.gpus_per_worker):
            assert round(v, 4) == v, case  # Ray's resource precision


def test_resource_plan_refuses_what_cannot_fit():
    with pytest.raises(ValueError, match="at most 20"):
        ResourcePlan.for_cluster(2, trials=32)
    with pytest.raises(ValueError, match="no GPU"):
        ResourcePlan.for_cluster(8, 0, use_gpu=True)
    with pytest.raises(ValueError):
        ResourcePlan.for_cluster(0)


def test_resource_plan_leaves_room_for_data():
    p = ResourcePlan.for_cluster(2, trials=1, workers=1)
    assert p.cpus_per_worker + p.driver_cpus + p.data_cpus_per_task <= 2
    assert p.data_cpus_per_task < 1  # Ray Data's default of 1 CPU would starve here
    for cpus, trials, workers in [(2, 2, 1), (2, 1, 2), (16, 4, 2), (64, 1, 4)]:
        p = ResourcePlan.for_cluster(cpus, trials=trials, workers=workers)
        used = trials * (p.driver_cpus + workers * p.cpus_per_worker + p.data_cpus_per_task)
        assert used <= cpus + 1e-9, (cpus, trials, workers, p)


def _epoch_rows(stream, clock, epoch, batch_size=4096):
    """(row ids, item ids) of one epoch, in the order the stream gave them."""
    clock.set(epoch)
    rows, items = [], []
    for b in stream.iter_batches(batch_size=batch_size, batch_format="numpy"):
        rows.append(b[ROW_ID])
        items.append(b["item_id"])
    return np.concatenate(rows), np.concatenate(items)


def _epoch_items(stream, clock, epoch):
    """The item ids of one epoch, by row id."""
    rows, items = _epoch_rows(stream, clock, epoch)
    return items[np.argsort(rows)]


@pytest.mark.timeout(300)
def test_epochs_draw_afresh_and_reproducibly(ray_2cpu, small_world):
    from rectune.pipeline import EpochClock, stream

    ds = open_dataset(small_world)
    plan = ResourcePlan.for_cluster(2)
    clock = EpochClock("test-epochs")
    try:
        s = stream(ds, "train", plan, AugmentConfig({"augment.mask.prob": 0.3}), seed=5, clock=clock)
        e1, e1_again, e2 = _epoch_items(s, clock, 1), _epoch_items(s, clock, 1), _epoch_items(s, clock, 2)
    finally:
        clock.kill()
    assert len(e1) == ds.schema.rows["train"]
    assert np.array_equal(e1, e1_again)
    assert not np.array_equal(e1, e2)
    assert (e1 == 0).mean() == pytest.approx(0.3, abs=0.02)
    valid = stream(ds, "valid", plan, AugmentConfig({"augment.mask.prob": 0.3}), seed=5)
    v = np.concatenate([b["item_id"] for b in valid.iter_batches(batch_format="numpy")])
    assert (v == 0).sum() == 0  # validation is never augmented


@pytest.mark.timeout(400)
def test_train_worker_and_augmentation_finish_on_two_cpus(ray_2cpu, small_world, tmp_path):
    """Ray's defaults deadlock here (notes/ray-2.60.md); the resource plan must not."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from rectune.pipeline import EpochClock, stream

    ds = open_dataset(small_world)
    plan = ResourcePlan.for_cluster(2)
    clock = EpochClock("test-train")

    def loop(cfg):
        import ray
        import ray.train

        c = ray.get_actor(cfg["clock"])
        shard = ray.train.get_dataset_shard("train")
        for epoch in range(2):
            ray.get(c.set.remote(epoch))
            n = masked = 0
            for b in shard.iter_torch_batches(batch_size=2048):
                n += len(b["item_id"])
                masked += int((b["item_id"] == 0).sum())
            ray.train.report({"epoch": epoch, "rows": n, "masked": masked / n})
            with open(cfg["log"], "a") as f:  # the worker is on this machine: a file is the plainest witness
                f.write(f"{epoch} {n} {masked / n}\n")

    log = tmp_path / "epochs.txt"
    try:
        trainer = TorchTrainer(
            loop, train_loop_config={"clock": clock.name, "log": str(log)},
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": plan.cpus_per_worker}),
            datasets={"train": stream(ds, "train", plan, AugmentConfig({"augment.mask.prob": 0.2}), clock=clock)},
            run_config=ray.train.RunConfig(storage_path=str(tmp_path), name="deadlock"),
        )
        result = trainer.fit()
    finally:
        clock.kill()
    assert result.error is None
    epochs = [line.split() for line in log.read_text().splitlines()]
    assert [int(e[0]) for e in epochs] == [0, 1]
    assert all(int(e[1]) == ds.schema.rows["train"] for e in epochs)  # every row, every epoch
    assert all(abs(float(e[2]) - 0.2) < 0.02 for e in epochs)


@pytest.mark.timeout(300)
def test_per_epoch_shuffle_across_blocks(ray_2cpu, small_world):
    """Rows change order (also across units) every epoch; same (seed, epoch), same order; no row
    lost or repeated; the same materialised and streamed from Parquet."""
    from rectune.pipeline import EpochClock, stream

    ds = open_dataset(small_world)
    n = ds.schema.rows["train"]
    plan = ResourcePlan.for_cluster(2)
    clock = EpochClock("test-shuffle")
    try:
        s = stream(ds, "train", plan, seed=3, clock=clock, block_rows=2048, shuffle_window=2, materialize=True)
        r1, i1 = _epoch_rows(s, clock, 1)
        r1b, i1b = _epoch_rows(s, clock, 1)
        r2, _ = _epoch_rows(s, clock, 2)
        other_seed = stream(ds, "train", plan, seed=4, clock=clock, block_rows=2048, materialize=True)
        r1_seed4, _ = _epoch_rows(other_seed, clock, 1)
        again = stream(ds, "train", plan, seed=3, clock=clock, block_rows=2048, shuffle_window=2, materialize=True)
        r1_rebuilt, _ = _epoch_rows(again, clock, 1)
    finally:
        clock.kill()
    assert np.array_equal(np.sort(r1), np.arange(n))  # every row once: ids are positions in the split
    assert np.array_equal(np.sort(r2), np.arange(n))
    assert np.array_equal(r1, r1b) and np.array_equal(i1, i1b)  # same (seed, epoch): same order
    assert np.array_equal(r1, r1_rebuilt)  # also from a stream built anew (a restarted trial)
    assert not np.array_equal(r1, r2) and not np.array_equal(r1, r1_seed4)
    # rows leave their 2048-row unit: the first 2048 delivered come from several units, and which
    # units they come from changes between epochs
    first1, first2 = set(r1[:2048] // 2048), set(r2[:2048] // 2048)
    assert len(first1) >= 2 and first1 != first2
    # without augmentation the rows themselves are unchanged (no row duplicated or altered)
    table = ds.read_split("train", columns=["item_id"]).column("item_id").to_numpy()
    assert np.array_equal(i1, table[r1])


def test_per_epoch_step_orders_and_windows():
    """The unit order and the windows, in process: a permutation per (seed, epoch)."""
    import pyarrow as pa

    from rectune.batches import batch_to_arrow
    from rectune.pipeline import _EpochStep, block_units

    tables = [batch_to_arrow({ROW_ID: np.arange(s, s + 1000, dtype=np.int64)}) for s in (0, 1000, 2000)]
    units = block_units([t.num_rows for t in tables], 250)
    assert len(units) == 12 and units[0] == (0, 0, 250) and units[-1] == (2, 750, 1000)
    step = _EpochStep(units, tables, None, None, None, seed=1, window=3)
    assert step.windows() == 4
    o1, o2 = step.unit_order(1), step.unit_order(2)
    assert sorted(o1) == list(range(12)) and not np.array_equal(o1, o2)
    assert np.array_equal(o1, _EpochStep(units, tables, None, None, None, seed=1, window=3).unit_order(1))
    out = np.concatenate([step.window_batch(j, 1, o1)[ROW_ID] for j in range(step.windows())])
    assert np.array_equal(np.sort(out), np.arange(3000))
    w0 = step.window_batch(0, 1, o1)[ROW_ID]
    assert set(w0 // 250) == set(o1[:3])  # window 0 holds exactly the first three units drawn
    assert not np.array_equal(w0, np.sort(w0))  # and its rows are mixed
    still = _EpochStep(units, tables, None, None, None, seed=1, window=3, shuffle=False)
    assert np.array_equal(np.concatenate([still.window_batch(j, 1, still.unit_order(1))[ROW_ID]
                                          for j in range(4)]), np.arange(3000))
    assert isinstance(tables[0], pa.Table)


def test_torch_collate_keeps_types_and_shapes(ray_2cpu):
    import ray.data
    import torch

    from rectune.pipeline import TorchCollate, torch_batches

    from ray.data.collate_fn import ArrowBatchCollateFn

    assert issubclass(TorchCollate, ArrowBatchCollateFn)
    ds = ray.data.from_items([{"a": i, "b": float(i), "s": np.array([i, i + 1], np.int32)} for i in range(10)])
    got = list(torch_batches(ds, 4))
    assert [len(b["a"]) for b in got] == [4, 4, 2]
    assert got[0]["s"].shape == (4, 2) and got[0]["s"].dtype == torch.int32 and got[0]["b"].dtype == torch.float64
    assert got[2]["s"].tolist() == [[8, 9], [9, 10]]
