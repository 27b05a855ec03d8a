"""The synthetic world: determinism, the funnel, the long tail, and signal where it should be."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from rectune.data import open_dataset
from rectune.data.synth import CATEGORIES, TRAITS, SynthConfig, generate
from rectune.errors import ConfigError


def test_deterministic_per_seed():
    a = generate(SynthConfig(users=100, items=80, rows=3000, seed=3))
    b = generate(SynthConfig(users=100, items=80, rows=3000, seed=3))
    c = generate(SynthConfig(users=100, items=80, rows=3000, seed=4))
    for s in ("train", "valid", "test"):
        assert a.splits[s].equals(b.splits[s])
    assert a.items.equals(b.items) and a.relations.equals(b.relations)
    assert not a.splits["train"].equals(c.splits["train"])


def test_world_is_valid_and_funnel_holds(small_world):
    ds = open_dataset(small_world, validate=True)
    assert ds.schema.task_parents == {"conversion": "click"}
    assert ds.schema.text_field.name == "title"
    t = pq.read_table(small_world / "train.parquet").to_pandas()
    assert ((t.conversion == 1) & (t.click == 0)).sum() == 0
    assert 0.1 < t.click.mean() < 0.35
    cvr = t.conversion[t.click == 1].mean()
    assert 0.1 < cvr < 0.5
    # splits are in time order
    v = pq.read_table(small_world / "valid.parquet").column("ts").to_numpy()
    assert t.ts.max() <= v.min()


def test_history_is_the_users_earlier_clicks(small_world):
    t = pq.read_table(small_world / "train.parquet").to_pandas()
    for uid in t.user_id.unique()[:20]:
        rows = t[t.user_id == uid]
        for _, r in rows.iloc[::7].iterrows():
            earlier = rows[(rows.ts < r.ts) & (rows.click == 1)].sort_values("ts", kind="stable")
            assert list(r.hist_items) == earlier.item_id.tolist()[-20:]


def test_long_tail_popularity(small_world):
    t = pq.read_table(small_world / "train.parquet", columns=["item_id", "click"]).to_pandas()
    counts = np.sort(t.item_id.value_counts().reindex(range(1, 201), fill_value=0).to_numpy())[::-1]
    assert counts[:20].sum() > 0.5 * counts.sum()  # the top 10% of items take most impressions
    clicks = t[t.click == 1].item_id.value_counts().reindex(range(1, 201), fill_value=0)
    assert (clicks < 5).mean() > 0.2  # and many items have too few positives to learn an id embedding


def test_titles_carry_the_items_character():
    tabs = generate(SynthConfig(users=100, items=400, rows=2000, seed=1))
    items = tabs.items.to_pandas()
    cats = [c for c, _ in CATEGORIES]
    # the category noun is in the title
    assert all(t.split(",")[0].endswith(cats[c - 1]) for t, c in zip(items.title, items.category))
    # same brand -> same first word
    brand_word = items.title.str.split().str[0]
    assert (items.groupby("brand").apply(lambda g: brand_word[g.index].nunique()) == 1).all()
    words = {w for pair in TRAITS for w in pair}
    assert all(sum(w in words for w in t.replace(",", "").split()) >= 2 for t in items.title)


def test_relations_are_real_neighbours(small_world):
    ds = open_dataset(small_world)
    rel = ds.relations().to_pandas()
    items = ds.items().to_pandas().set_index("item_id")
    for name, col in (("same_brand", "brand"), ("same_category", "category"), ("same_shop", "shop")):
        r = rel[rel.relation == name]
        assert len(r) and (items.loc[r.head_item_id, col].values == items.loc[r.tail_item_id, col].values).all()
        assert (r.head_item_id != r.tail_item_id).all()
    comp = rel[rel.relation == "complement"]
    pairs = set(zip(items.loc[comp.head_item_id, "category"], items.loc[comp.tail_item_id, "category"]))
    assert len(comp) and all(a != b for a, b in pairs)


def test_signal_sits_where_the_generator_puts_it(small_world):
    """Without any id, title words + category + profile predict clicks: the text carries signal.

    (How much each component helps a real model, cold items apart, is what a campaign's ablation measures.)"""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    import scipy.sparse as sp

    ds = open_dataset(small_world)
    tr = pq.read_table(small_world / "train.parquet").to_pandas()
    te = pq.read_table(small_world / "test.parquet").to_pandas()
    items = ds.items().to_pandas().set_index("item_id")
    pop = tr.groupby("item_id").click.agg(["sum", "count"])
    ctr = ((pop["sum"] + 1) / (pop["count"] + 5)).reindex(items.index, fill_value=0.2)
    # the popularity score works on warm items ...
    assert roc_auc_score(te.click, ctr.loc[te.item_id].values) > 0.55
    # ... and so do the title words, with no item id at all
    vec = CountVectorizer().fit(items.title)
    words = vec.transform(items.title)

    def design(df):
        w = words[df.item_id.values - 1]
        prof = sp.csr_matrix(np.eye(8)[df.age_bucket.values])
        return sp.hstack([w, sp.csr_matrix(np.eye(25)[df.category.values]), prof]).tocsr()

    lr = LogisticRegression(max_iter=300).fit(design(tr), tr.click)
    assert roc_auc_score(te.click, lr.predict_proba(design(te))[:, 1]) > 0.55


@pytest.mark.parametrize("kw", [{"users": 5}, {"items": 3}, {"rows": 0}])
def test_bad_sizes(kw):
    with pytest.raises(ConfigError, match="expected at least 10"):
        generate(SynthConfig(**kw))


def _unseen_in_test(tabs) -> tuple[set[int], float]:
    """The test split's items without a training row, and their share of the test rows."""
    train = set(tabs.splits["train"].column("item_id").to_pylist())
    test = tabs.splits["test"].column("item_id").to_numpy()
    unseen = set(test.tolist()) - train
    return unseen, float(np.isin(test, list(unseen)).mean())


def test_new_items_launch_late_and_never_reach_the_training_split():
    base = SynthConfig(users=300, items=400, rows=20_000, seed=2)
    old = generate(base)
    tabs = generate(SynthConfig(**{**base.__dict__, "new_items": 0.1}))
    assert tabs.items.equals(old.items) and tabs.users.equals(old.users)  # the catalogue is the same
    unseen, share = _unseen_in_test(tabs)
    old_unseen, old_share = _unseen_in_test(old)
    assert 15 <= len(unseen) <= 60 and share > 0.03, (len(unseen), share)  # ~10% of 400 items launch late
    assert len(unseen) > 3 * len(old_unseen) and share > 5 * old_share, (len(old_unseen), old_share)


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_bad_new_item_share(share):
    with pytest.raises(ConfigError, match="--new-items"):
        generate(SynthConfig(new_items=share))


def test_conversion_shift_makes_conversions_rarer_and_changes_nothing_else():
    base = SynthConfig(users=300, items=400, rows=20_000, seed=2)
    old = generate(base)
    rare = generate(SynthConfig(**{**base.__dict__, "conversion_shift": -1.5}))
    for split in ("train", "valid", "test"):
        a, b = old.splits[split], rare.splits[split]
        assert a.drop(["conversion"]).equals(b.drop(["conversion"]))
        before, after = (t.column("conversion").to_numpy() for t in (a, b))
        assert (after <= before).all()  # the same draws against a lower probability: a subset
    before = np.concatenate([old.splits[s].column("conversion").to_numpy() for s in ("train", "valid", "test")])
    after = np.concatenate([rare.splits[s].column("conversion").to_numpy() for s in ("train", "valid", "test")])
    assert 0 < after.sum() < 0.5 * before.sum(), (after.sum(), before.sum())


@pytest.mark.parametrize("shift", [-11.0, 10.5, float("nan")])
def test_bad_conversion_shift(shift):
    with pytest.raises(ConfigError, match=r"^--conversion-shift .*: expected a logit offset in \[-10, 10\]$"):
        generate(SynthConfig(conversion_shift=shift))
