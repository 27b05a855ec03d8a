"""The space built from a dataset (no --space), and the start points every campaign tries first."""

from __future__ import annotations

import shutil
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rectune.data.prepared import open_dataset
from rectune.data.schema import TEXT_EMB_COLUMN
from rectune.runconfig import RunConfig
from rectune.tune.auto import PEER_SETTINGS, auto_space, floor_points, reference_config, start_points
from rectune.tune.campaign import StudySearch, campaign_space, check_on_dataset
from rectune.tune.folder import CampaignFolder
from tests.tune.test_space import space

from ..conftest import SHARED


def _searched(sp) -> dict:
    return {d.key: d for d in sp.params}


def test_every_campaign_first_tries_the_defaults_then_the_peer_equivalent(tmp_path):
    sp = space(**{"search/augment.mask.prob": {"float": [0.0, 0.3]}, "start": [{"model.mtl": "ple"}]})
    searcher = StudySearch(sp, f"sqlite:///{tmp_path}/study.db", f"s-{uuid.uuid4().hex[:8]}")
    first, second, third = (searcher.suggest(f"t{i}") for i in range(3))
    defaults, tried = RunConfig(), sp.config(first)
    experts = {"model.mtl.experts"} if defaults["model.mtl"] in ("mmoe", "ple") else set()
    assert set(first) == {"optim.lr", "model.mtl", "model.hidden", "augment.mask.prob"} | experts  # all searched there
    assert all(tried[k] == defaults[k] for k in first) and first["model.mtl"] == defaults["model.mtl"]
    assert second["model.mtl"] == "mmoe" and second["model.mtl.experts"] == 4 and second["optim.lr"] == 1e-3
    assert second["augment.mask.prob"] == 0.0 and second["model.hidden"] == "128,64"
    assert third["model.mtl"] == "ple"  # then the space's own start points
    # what evaluate retrains as the peer-equivalent is the point the campaign tried
    peer = reference_config(sp, "peer-equivalent")
    assert {k: peer[k] for k in ("model.mtl", "model.mtl.experts", "optim.lr")} == {
        "model.mtl": "mmoe", "model.mtl.experts": 4, "optim.lr": 1e-3}


def test_a_reference_outside_the_space_gets_the_nearest_value_or_is_left_to_the_sampler():
    sp = space(search={"optim.lr": {"float": [5e-3, 1e-2], "log": True},
                       "augment.mask.prob": {"float": [0.1, 0.3], "step": 0.1},
                       "model.mtl": {"categorical": ["ple", "esmm"]},
                       "model.mtl.experts": {"int": [6, 8]}})
    points = floor_points(sp)
    assert points["defaults"] == {"optim.lr": 5e-3, "augment.mask.prob": 0.1}  # model.mtl: no choice fits
    assert points["peer-equivalent"] == points["defaults"]
    assert start_points(sp) == [points["defaults"]]  # the same point once


def test_start_points_fill_in_what_a_space_fixes(tmp_path):
    sp = space(fixed={"train.epochs": 2, "model.norm": "layer"})
    peer = reference_config(sp, "peer-equivalent")
    assert peer["model.norm"] == "layer" and peer["train.epochs"] == 2  # fixed keys are the space's
    assert peer["model.mtl"] == "mmoe"


@pytest.fixture(scope="module")
def worlds(small_world, tmp_path_factory):
    """The small world as written; without relations; with item-text embeddings."""
    tmp = tmp_path_factory.mktemp("auto")
    bare, text = tmp / "bare", tmp / "text"
    shutil.copytree(small_world, bare)
    (bare / "relations.parquet").unlink()
    shutil.copytree(small_world, text)
    items = pq.read_table(text / "items.parquet")
    emb = np.random.default_rng(0).normal(size=(items.num_rows, 8)).astype(np.float32)
    items = items.append_column(TEXT_EMB_COLUMN, pa.array(list(emb), type=pa.list_(pa.float32())))
    pq.write_table(items, text / "items.parquet")
    return {"full": small_world, "bare": bare, "text": text}


def test_the_automatic_space_searches_what_the_dataset_has(worlds):
    full = open_dataset(worlds["full"])
    sp = auto_space(full, cpus=2)
    keys = _searched(sp)
    assert {"loss.weights.click", "loss.weights.conversion"} <= set(keys)  # one weight per task
    assert {"model.history", "augment.sequence.mask"} <= set(keys)  # a history field
    assert "augment.noise.std" in keys  # dense fields (price, discount)
    assert {"model.kg", "augment.neighbor.rate"} <= set(keys)  # relations
    assert "model.text_dim" not in keys  # no text embeddings
    assert set(keys["model.mtl"].choices) >= {"shared_bottom", "mmoe", "ple"}
    check_on_dataset(sp, full)  # every choice builds on the dataset
    assert {"model.kg", "augment.neighbor.rate"}.isdisjoint(_searched(auto_space(open_dataset(worlds["bare"]), 2)))
    text = open_dataset(worlds["text"])
    assert "model.text_dim" in _searched(auto_space(text, 2))
    check_on_dataset(auto_space(text, 2), text)


def test_augmentation_strengths_can_be_exactly_zero_and_the_floor_sets_them_so(worlds):
    sp = auto_space(open_dataset(worlds["full"]), cpus=2)
    augment = [d for d in sp.params if d.key.startswith("augment.")]
    assert augment and all(d.low == 0.0 and d.step for d in augment)
    for point in floor_points(sp).values():
        assert all(point[d.key] == 0.0 for d in augment)
    assert floor_points(sp)["peer-equivalent"]["model.norm"] == PEER_SETTINGS["model.norm"]


def _tree_space(ds, cpus, minutes=60.0):
    """The automatic space before the choices are built (the budget and the keys' rules only)."""
    from rectune.tune.auto import auto_tree
    from rectune.tune.space import from_mapping

    return from_mapping(auto_tree(ds, cpus, minutes), "t")


def test_the_budget_follows_the_rows_and_the_cpus(worlds):
    ds = open_dataset(worlds["full"])
    small, more_cpus, longer = _tree_space(ds, 2, 10), _tree_space(ds, 4, 10), _tree_space(ds, 2, minutes=20)
    assert (small.concurrency, more_cpus.concurrency) == (2, 4)
    assert small.time_limit_s == 600 and longer.time_limit_s == 1200 and _tree_space(ds, 2).time_limit_s == 3600
    assert more_cpus.trials > small.trials and longer.trials > small.trials


@pytest.mark.skipif(not (SHARED / "bench" / "grocery-kg").is_dir(), reason="needs ../shared/bench")
def test_a_one_task_table_gets_no_task_weights_and_no_noise_and_more_rows_fewer_trials():
    grocery = open_dataset(SHARED / "bench" / "grocery-kg")
    keys = _searched(_tree_space(grocery, 2))
    assert not [k for k in keys if k.startswith("loss.weights.")] and "augment.noise.std" not in keys
    assert "ple" not in keys["model.mtl"].choices and "model.kg" in keys
    small = open_dataset(SHARED / "bench" / "ml100k-mtl")
    assert _tree_space(small, 2, 30).trials > _tree_space(grocery, 2, 30).trials  # 400k rows against 463k
    assert _tree_space(open_dataset(SHARED / "bench" / "ml100k-mtl"), 2, 30).trials < _tree_space(small, 2, 60).trials


def test_tune_without_a_space_builds_it_and_resume_keeps_it(worlds, tmp_path):
    ds = open_dataset(worlds["full"])
    folder = CampaignFolder(str(tmp_path), "c")
    sp = campaign_space(None, ds, folder, resume=False, address=None, cpus=2, minutes=5)
    assert sp.time_limit_s == 300 and sp.concurrency == 2
    assert sp.fingerprint() == auto_space(ds, 2).fingerprint()  # the budget is not part of it
    import yaml

    folder.local.mkdir(parents=True)
    folder.write("space.yaml", yaml.safe_dump(sp.to_dict(), sort_keys=False))
    again = campaign_space(None, ds, folder, resume=True, address=None, cpus=16, minutes=None)
    assert again.fingerprint() == sp.fingerprint() and again.concurrency == 2  # as the campaign started


@pytest.mark.slow
def test_rectune_tune_with_no_space_runs_the_floor_first_and_ends_on_its_time_limit(small_world, tmp_path):
    """`rectune tune --data X --name N`: the built space, the defaults then the peer-equivalent as the
    first trials, and a campaign that the time limit ends is finished, not interrupted."""
    import json

    import optuna

    from ..conftest import run_cli

    storage = tmp_path / "campaigns"
    r = run_cli("tune", "--data", str(small_world), "--name", "auto", "--storage", str(storage), "--minutes", "1.5")
    assert r.exit_code == 0, r.output
    meta = json.loads((storage / "auto" / "campaign.json").read_text())
    assert meta["space_file"] == "auto" and meta["status"] == "finished" and meta.get("time_limit_reached")
    trials = optuna.load_study(study_name="auto", storage=f"sqlite:///{storage / 'auto' / 'study.db'}").trials
    points = floor_points(auto_space(open_dataset(small_world), 2))
    assert trials[0].params == points["defaults"] and trials[1].params == points["peer-equivalent"]
    from rectune.tune.campaign import TIMED_OUT

    stopped = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.user_attrs.get("error") == TIMED_OUT for t in stopped)


def test_a_choice_the_dataset_cannot_serve_is_left_out_not_the_campaign(worlds, monkeypatch):
    import rectune.tune.auto as auto

    ds = open_dataset(worlds["full"])  # no text embeddings, which the rule below misjudges
    monkeypatch.setattr(auto, "_footer_columns", lambda path: [TEXT_EMB_COLUMN])
    assert "model.text_dim" in _searched(auto.from_mapping(auto.auto_tree(ds, 2), "t"))  # the rule alone
    sp = auto_space(ds, 2)
    assert "model.text_dim" not in _searched(sp) and "model.kg" in _searched(sp)
    check_on_dataset(sp, ds)


def test_no_more_start_points_than_the_budget_wait_in_the_study(tmp_path):
    import optuna

    sp = space(**{"budget/trials": 1, "start": [{"model.mtl": "ple"}]})
    name = f"s-{uuid.uuid4().hex[:8]}"
    first = StudySearch(sp, f"sqlite:///{tmp_path}/study.db", name).suggest("t0")
    assert first == floor_points(sp)["defaults"]
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/study.db").trials
    assert len(trials) == 1  # the peer-equivalent and the space's point were not enqueued to wait for ever
