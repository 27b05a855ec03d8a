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
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_resource_plan_leaves_room_for_data():
    p = ResourcePlan.for_cluster(2, trials=1, workers=1)
    assert p.cpus_per_worker + p.driver_cpus + p.data_cpus_per_task <= 2
    assert p.data_cpus_per_task < 1  # Ray Data's default of 1 CPU would starve here
    for cpus, trials, workers in [(2, 2, 1), (2, 1, 2), (16, 4, 2), (64, 1, 4)]:
        p = ResourcePlan.for_cluster(cpus, trials=trials, workers=workers)
        used = trials * (p.driver_cpus + workers * p.cpus_per_worker + p.data_cpus_per_task)
        assert used <= cpus + 1e-9, (cpus, trials, workers, p)


def _epoch_items(stream, clock, epoch):
    clock.set(epoch)
    rows, items = [], []
    for b in stream.iter_batches(batch_size=4096, batch_format="numpy"):
        rows.append(b[ROW_ID])
        items.append(b["item_id"])
    rows, items = np.concatenate(rows), np.concatenate(items)
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
