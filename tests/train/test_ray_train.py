"""Training through Ray Train: the CLI end to end; two workers, resumed after a worker failure.

One local Ray (2 CPUs, as on the CI machine) serves the whole module; every test is bounded.
"""

from __future__ import annotations

import json

import pytest
import yaml

from rectune.runconfig import RunConfig
from tests.conftest import run_cli

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_cli_train_writes_a_run_folder_and_predict_reproduces_it(ray_session, small_world, tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "--data", small_world, "--out", out, "--set", "train.epochs=2",
                "--set", "augment.mask.prob=0.1", "--set", "model.mtl=mmoe")
    assert r.exit_code == 0, r.output
    assert "best epoch" in r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 2
    assert metrics["best"]["valid/click_auc"] > 0.55
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model.mtl"] == "mmoe" and config["augment.mask.prob"] == 0.1
    assert {"best.pt", "model.pt", "optim.pt", "state.json"} <= {p.name for p in (out / "checkpoint").iterdir()}
    # the saved config is taken by --config as it is
    assert RunConfig.from_file(out / "config.yaml").to_dict() == RunConfig(config).to_dict()
    r = run_cli("predict", "--run", out, "--data", small_world, "--out", tmp_path / "scores.parquet")
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("test/click_auc"))
    assert float(line.split()[1]) == pytest.approx(metrics["best"]["test/click_auc"], abs=1e-4)
    # an existing run folder is not overwritten without --resume
    r = run_cli("train", "--data", small_world, "--out", out)
    assert r.exit_code == 2 and "the folder exists; pass --resume" in r.output


def test_two_workers_and_a_failed_worker_group_resumes_from_its_checkpoint(ray_session, small_world, tmp_path):
    """Rank 0 of two workers fails after epoch 0: Train restarts the group from the last checkpoint
    (each epoch once, not from scratch) and the run ends with both workers' data-parallel model."""
    from rectune.train.run import train

    marker = tmp_path / "failed-once"
    result = train(small_world, RunConfig({"train.epochs": 3, "train.patience": 0, "augment.noise.std": 0.1}),
                   tmp_path / "run", workers=2, extra={"fail_once_after_epoch": 0, "fail_marker": str(marker)})
    assert marker.exists()  # the failure did happen
    epochs = [m["epoch"] for m in result.metrics["history"]]
    assert epochs == [0, 1, 2]  # each epoch once: resumed after epoch 0, not restarted
    assert result.metrics["best"]["valid/mean_auc"] > 0.55


@pytest.mark.parametrize("args, message", [
    (["--set", "model.fusion=transformer"], "model.fusion: 'transformer' is not one of"),
    (["--set", "loss.weights.like=2"], "loss.weights.like: the dataset has no task 'like'"),
    (["--set", "modle.mtl=mmoe"], "unknown config key 'modle.mtl'"),
])
def test_cli_train_bad_settings_exit_2_before_anything_starts(small_world, tmp_path, args, message):
    out = tmp_path / "run"
    r = run_cli("train", "--data", small_world, "--out", out, *args)
    assert r.exit_code == 2
    assert message in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists()
