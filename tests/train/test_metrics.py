"""Metrics against reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from rectune.train.metrics import auc, gauc, logloss, task_metrics


def test_auc_and_logloss_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.3
    p = np.round(np.clip(y * 0.2 + rng.random(5000) * 0.8, 0, 1), 2)  # ties on purpose
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert logloss(y, p) == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), rel=1e-9)
    assert auc(np.zeros(10), p[:10]) is None


def test_gauc_is_the_impression_weighted_mean_of_per_user_aucs():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 50, 4000)
    y = rng.random(4000) < 0.25
    p = np.round(rng.random(4000) * 0.7 + y * 0.3, 2)
    num = den = 0.0
    for u in np.unique(users):
        sel = users == u
        if 0 < y[sel].sum() < sel.sum():
            num += roc_auc_score(y[sel], p[sel]) * sel.sum()
            den += sel.sum()
    assert gauc(users, y, p) == pytest.approx(num / den, abs=1e-12)


def test_task_metrics_keys_and_cold_rows():
    rng = np.random.default_rng(2)
    labels = np.stack([rng.random(1000) < 0.3, np.zeros(1000, bool)], 1).astype(np.float32)
    labels[:, 1] = labels[:, 0] * (rng.random(1000) < 0.3)
    probs = rng.random((1000, 2))
    cold = np.arange(1000) < 200
    new = np.arange(1000) < 80
    m = task_metrics("valid", ["click", "conversion"], labels, probs, users=rng.integers(0, 20, 1000), cold=cold,
                     parents={"conversion": "click"}, new=new)
    assert {"valid/click_auc", "valid/click_gauc", "valid/click_cold_auc", "valid/conversion_cvr_auc",
            "valid/mean_auc", "valid/conversion_logloss"} <= set(m)
    assert m["valid/click_cold_auc"] == pytest.approx(roc_auc_score(labels[:200, 0], probs[:200, 0]))
    assert m["valid/click_new_auc"] == pytest.approx(roc_auc_score(labels[:80, 0], probs[:80, 0]))
    assert "valid/click_new_auc" not in task_metrics("valid", ["click"], labels[:, :1], probs[:, :1],
                                                     new=np.zeros(1000, bool))  # no new rows: left out
    clicked = labels[:, 0] > 0
    assert m["valid/conversion_cvr_auc"] == pytest.approx(roc_auc_score(labels[clicked, 1], probs[clicked, 1]))
    assert "valid/ctcvr_auc" not in m  # only for ESMM


def test_cold_items_follow_the_rule_of_describe(small_world):
    from rectune.data.describe import describe
    from rectune.data.prepared import open_dataset
    from rectune.train.tensors import WARM_ITEM, train_item_status

    ds = open_dataset(small_world)
    status = train_item_status(ds)
    test_items = ds.read_split("test", columns=[ds.schema.item_field]).column(0).to_numpy()
    share = float((status[test_items] != WARM_ITEM).mean())
    assert 0 < share < 1
    assert share == pytest.approx(describe(small_world)["cold_items"]["test_rows_cold_share"])


def test_new_items_are_those_without_a_training_row(tmp_path):
    from rectune.data.prepared import open_dataset
    from rectune.data.synth import SynthConfig, generate
    from rectune.train.tensors import COLD_ITEM, NEW_ITEM, WARM_ITEM, train_item_status

    generate(SynthConfig(users=300, items=400, rows=20_000, seed=2, new_items=0.1)).write(tmp_path / "w")
    ds = open_dataset(tmp_path / "w")
    status = train_item_status(ds)
    train = ds.read_split("train", columns=["item_id", "click"]).to_pandas()
    rows = np.bincount(train.item_id, minlength=len(status))
    clicks = np.bincount(train.item_id[train.click == 1], minlength=len(status))
    assert (status[1:] == NEW_ITEM).sum() > 10
    assert np.array_equal(status == NEW_ITEM, rows == 0)
    assert np.array_equal(status == WARM_ITEM, clicks >= 5)
    assert np.array_equal(status == COLD_ITEM, (rows > 0) & (clicks < 5))
    from rectune.data.describe import describe

    test_items = ds.read_split("test", columns=["item_id"]).column(0).to_numpy()
    assert describe(tmp_path / "w")["new_items_test_share"] == pytest.approx((status[test_items] == NEW_ITEM).mean())


def test_weighted_metric_and_its_checks():
    from rectune.errors import ConfigError
    from rectune.train.metrics import parse_weights, weighted

    w = parse_weights("train.metric_weights", ["valid/click_auc:3", "valid/conversion_auc:1"], ["click", "conversion"])
    assert w == {"valid/click_auc": 3.0, "valid/conversion_auc": 1.0}
    m = {"test/click_auc": 0.8, "test/conversion_auc": 0.6}
    assert weighted("test", m, w) == {"test/weighted": pytest.approx(0.75)}
    assert weighted("valid", m, w) == {}  # its metrics are missing: left out, never 0
    losses = parse_weights("k", ["valid/click_logloss:1", "valid/conversion_logloss:1"], ["click", "conversion"])
    assert weighted("valid", {"valid/click_logloss": 0.4, "valid/conversion_logloss": 0.2}, losses) == {
        "valid/weighted_loss": pytest.approx(0.3)}
    for items, message in [(["valid/click_auc"], "expected metric:weight"),
                           (["valid/click_auc:-1"], "expected metric:weight"),
                           (["valid/clik_auc:1"], "did you mean 'valid/click_auc'"),
                           (["valid/click_auc:1", "valid/click_logloss:1"], "mixes metrics to maximise")]:
        with pytest.raises(ConfigError, match=message):
            parse_weights("train.metric_weights", items, ["click", "conversion"])
