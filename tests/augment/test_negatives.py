"""``augment.negatives``: sampled negatives, checked row by row against their positive."""

from __future__ import annotations

import numpy as np
import pytest

from rectune.augment import AugmentConfig, AugmentPlan
from rectune.batches import ROW_ID
from rectune.errors import ConfigError


def plan(world, **values):
    return AugmentPlan(AugmentConfig({f"augment.negatives.{k}": v for k, v in values.items()}), world)


@pytest.mark.parametrize("ratio", [1.0, 2.5])
def test_copies_of_each_positive_with_a_drawn_item_and_no_label(world, batch, ratio):
    out = plan(world, ratio=ratio).apply(batch, 0)
    n = len(batch[ROW_ID])
    new = out[ROW_ID] < 0
    assert (out[ROW_ID][:n] == batch[ROW_ID]).all() and not new[:n].any()
    positives = int((batch["click"] == 1).sum())
    assert new.sum() == pytest.approx(ratio * positives, rel=0.03)
    assert all(len(v) == len(out[ROW_ID]) for v in out.values())
    for task in world.schema.tasks:
        assert (out[task][new] == 0).all()
    # each copy is its positive's row (user, profile, history) but for the item and its attributes:
    # find the positive by the user and the history, which the copies keep
    user, hist = out["user_id"][new], out["hist_items"][new]
    pos = np.flatnonzero(batch["click"] == 1)
    key = {(int(u), h.tobytes()): i for i, u, h in zip(pos, batch["user_id"][pos], batch["hist_items"][pos])}
    src = np.array([key[(int(u), h.tobytes())] for u, h in zip(user, hist)])
    for name in ("age_bucket", "gender"):
        if name in batch:
            assert (out[name][new] == batch[name][src]).all()
    items = world.items().to_pandas().set_index("item_id")
    drawn = out["item_id"][new]
    for col in ("brand", "category", "price_band", "price"):  # the attributes follow the drawn item
        assert np.allclose(out[col][new], items.loc[drawn, col].to_numpy())
    # never the positive's own item, an item of its history, or an item the user took in train
    assert (drawn != batch["item_id"][src]).all()
    assert not (hist == drawn[:, None]).any()
    train = world.read_split("train", ["user_id", "item_id", "click"]).to_pandas()
    taken = set(zip(train.user_id[train.click == 1], train.item_id[train.click == 1]))
    assert not any((int(u), int(i)) in taken for u, i in zip(user, drawn))
    # the history alone is excluded too (here the train split's positives cover it: ignore them)
    only_history = plan(world, ratio=ratio)
    only_history.augmenters[0].seen = np.zeros(0, np.int64)
    out2 = only_history.apply(batch, 0)
    new2 = out2[ROW_ID] < 0
    assert not (out2["hist_items"][new2] == out2["item_id"][new2][:, None]).any()
    # uniform over the catalogue: every item is drawn, none much more than its share
    counts = np.bincount(drawn, minlength=world.schema.field("item_id").vocab_size)[1:]
    assert (counts > 0).mean() > 0.95 and counts.max() < 4 * counts.mean()


def test_alpha_draws_popular_items_more_often(world, batch):
    train = world.read_split("train", ["item_id", "click"]).to_pandas()
    counts = np.bincount(train.item_id[train.click == 1], minlength=world.schema.field("item_id").vocab_size)
    top = np.argsort(-counts[1:])[: len(counts) // 10] + 1
    rng = np.random.default_rng(0)
    for alpha in (0.0, 0.5, 1.0):  # the draw itself: each item's share is (positives + 1) ** alpha over the sum
        aug = plan(world, ratio=1.0, alpha=alpha).augmenters[0]
        weight = (counts[1:] + 1.0) ** alpha
        expected = weight[top - 1].sum() / weight.sum()
        assert np.isin(aug._draw(200_000, rng), top).mean() == pytest.approx(expected, abs=0.005)
    # in the stream too, after the redraws of the items the user took
    share = {}
    for alpha in (0.0, 1.0):
        out = plan(world, ratio=2.0, alpha=alpha).apply(batch, 0)
        share[alpha] = np.isin(out["item_id"][out[ROW_ID] < 0], top).mean()
    assert share[1.0] > 2 * share[0.0]


def test_determinism_and_the_task_key(world, batch):
    a, b = plan(world, ratio=1.0).apply(batch, 3), plan(world, ratio=1.0).apply(batch, 3)
    assert all((a[k] == b[k]).all() for k in a)
    c = plan(world, ratio=1.0).apply(batch, 4)
    assert not (c["item_id"][c[ROW_ID] < 0][:100] == a["item_id"][a[ROW_ID] < 0][:100]).all()
    # copies of the conversion positives only: fewer rows, and the funnel's labels all 0
    conv = plan(world, ratio=1.0, task="conversion").apply(batch, 0)
    assert (conv[ROW_ID] < 0).sum() == pytest.approx((batch["conversion"] == 1).sum(), rel=0.05)
    assert AugmentConfig({}).enabled() == [] and "negatives" not in AugmentConfig({"augment.negatives.alpha": 0.5}).enabled()


def test_errors_name_the_key(world, tmp_path):
    with pytest.raises(ConfigError, match=r"augment.negatives.task: 'like' is not a task of dataset '.*'; tasks: "
                                          r"\['click', 'conversion'\]"):
        plan(world, ratio=1.0, task="like")
    with pytest.raises(ConfigError, match=r"augment.negatives.ratio: 20.0 is out of range"):
        AugmentConfig({"augment.negatives.ratio": 20.0})
    with pytest.raises(ConfigError, match=r"augment.negatives.alpha: -1.0 is out of range; expected a value in \[0.0, 1.0\]"):
        AugmentConfig({"augment.negatives.alpha": -1})
