"""``synthetic`` with ``generator=gan``: checked by statistics (distributions of generated fields
close to the real ones, label logic, consistency with the catalogue), the cache and pickling.

One GAN is trained per module on the small world (a few seconds with a short schedule) into a
temporary cache folder; every other construction must come from that cache.
"""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest
import torch

from rectune.augment import AugmentConfig, AugmentPlan, gan
from rectune.batches import ROW_ID, table_to_batch
from rectune.bench.gan import consistency, ks, tv
from rectune.data import open_dataset
from rectune.errors import ConfigError

STEPS = 300
LOW = ("age_bucket", "gender", "city_tier", "brand", "category", "shop", "price_band")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECTUNE_CACHE", str(path))
        threads = torch.get_num_threads()
        torch.set_num_threads(min(2, threads))
        yield path
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(small_world, cache):
    return open_dataset(small_world)


@pytest.fixture(scope="module")
def batch(world):
    return table_to_batch(world.read_split("train"), world.schema)


def gan_plan(world, seed=0, **values):
    sets = {"augment.synthetic.generator": "gan", "augment.synthetic.gan_steps": STEPS,
            "augment.synthetic.ratio": 1.0}
    sets.update({f"augment.synthetic.{k}": v for k, v in values.items()})
    return AugmentPlan(AugmentConfig(sets), world, seed)


@pytest.fixture(scope="module")
def trained(world, cache):
    t0 = time.perf_counter()
    plan = gan_plan(world)
    return plan, time.perf_counter() - t0


@pytest.fixture(scope="module")
def out(trained, batch):
    return trained[0].apply(batch, epoch=0)


def synthetic(out):
    s = out[ROW_ID] < 0
    return {k: v[s] for k, v in out.items()}


def test_trains_once(trained):
    """Trained here (not from a cache); its training time is a benchmark figure (rectune bench gan)."""
    plan, _ = trained
    model = plan.augmenters[0].gan
    assert not model.from_cache
    assert model.meta["derived"]["brand"] == "item_id" and model.meta["derived"]["age_bucket"] == "user_id"
    assert [c["name"] for c in model.discrete] == ["user_id", "item_id"]
    # 300 users > top 256: an 'other' slot; 200 items: one slot each
    assert model.discrete[0]["other"] and not model.discrete[1]["other"]


def test_rows_and_labels(world, batch, out):
    n = len(batch[ROW_ID])
    s = out[ROW_ID] < 0
    assert (out[ROW_ID][~s] == batch[ROW_ID]).all()
    for k in batch:
        assert out[k].dtype == batch[k].dtype and len(out[k]) == len(out[ROW_ID])
        assert np.array_equal(out[k][~s], batch[k])  # the real rows untouched
    assert s.sum() == pytest.approx(n, rel=0.05)
    assert len(np.unique(out[ROW_ID][s])) == s.sum()
    syn = synthetic(out)
    assert ((syn["conversion"] == 1) & (syn["click"] == 0)).sum() == 0  # no conversion without a click
    # conditions are the batch's own label vectors: same shares up to binomial noise
    for task in ("click", "conversion"):
        p = float(batch[task].mean())
        assert syn[task].mean() == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / len(syn[task])))
    funnel_real = float(batch["conversion"][batch["click"] == 1].mean())
    assert syn["conversion"][syn["click"] == 1].mean() == pytest.approx(funnel_real, abs=0.04)


@pytest.mark.parametrize("task, value", [("click", 1), ("click", 0)])
def test_field_distributions_match(world, batch, out, task, value):
    syn = synthetic(out)
    r, g = batch[task] == value, syn[task] == value
    rng = np.random.default_rng(0)
    for f in LOW:
        vocab = world.schema.field(f).vocab_size
        d = tv(batch[f][r], syn[f][g])
        noise = tv(batch[f][r], rng.integers(1, vocab, g.sum()))
        assert d < 0.12, (f, d)
        if noise > 0.1:
            assert d < noise / 3, (f, d, noise)
    for f in ("price", "discount"):
        a, b = batch[f][r], syn[f][g]
        assert ks(a, b) < 0.15, (f, ks(a, b))
        assert abs(a.mean() - b.mean()) < 0.15 * a.std()
        assert b.std() == pytest.approx(a.std(), rel=0.3)
        assert b.min() >= batch[f].min() - 1e-6 and b.max() <= batch[f].max() + 1e-6  # the train range
    # the point mass of discount (no discount) is kept as an exact value
    zero_real, zero_syn = (batch["discount"][r] == 0).mean(), (syn["discount"][g] == 0).mean()
    assert zero_syn == pytest.approx(zero_real, abs=0.08)


def test_rows_agree_with_catalogue_and_histories(world, batch, out):
    syn = synthetic(out)
    agree = consistency(world, syn)
    assert agree and all(v == 1.0 for v in agree.values()), agree
    # every synthetic history is the history of a batch row with the same labels, of the same user
    # whenever the batch has a row of that user with those labels
    code = (batch["click"] * 1 + batch["conversion"] * 2).astype(np.int64)
    scode = (syn["click"] * 1 + syn["conversion"] * 2).astype(np.int64)
    hist = {}
    for i in range(len(code)):
        hist.setdefault((code[i], batch["user_id"][i]), set()).add(batch["hist_items"][i].tobytes())
        hist.setdefault((code[i], -1), set()).add(batch["hist_items"][i].tobytes())
    same_user = 0
    for i in range(0, len(scode), 7):
        key = (scode[i], syn["user_id"][i])
        h = syn["hist_items"][i].tobytes()
        if key in hist:
            assert h in hist[key]
            same_user += 1
        else:
            assert h in hist[(scode[i], -1)]
    assert same_user > 0


def test_only_positives_and_negatives(world, batch):
    pos = synthetic(gan_plan(world, ratio=0.3, only="positives:conversion").apply(batch, 0))
    assert len(pos["click"]) == pytest.approx(0.3 * len(batch[ROW_ID]), rel=0.05)
    assert (pos["conversion"] == 1).all() and (pos["click"] == 1).all()
    # the positives' own item distribution, not the overall one
    r = batch["conversion"] == 1
    assert tv(batch["price_band"][r], pos["price_band"]) < tv(batch["price_band"], pos["price_band"]) + 0.02
    neg = synthetic(gan_plan(world, ratio=0.3, only="negatives").apply(batch, 0))
    assert len(neg["click"]) > 0 and (neg["click"] == 0).all() and (neg["conversion"] == 0).all()
    with pytest.raises(ConfigError, match="augment.synthetic.only: 'positives:like' is not one of"):
        gan_plan(world, only="positives:like")


def test_deterministic_per_seed_and_epoch(world, batch, trained):
    plan = trained[0]
    small = {k: v[:4096] for k, v in batch.items()}
    a, b, c = plan.apply(small, 1), plan.apply(small, 1), plan.apply(small, 2)
    for k in ("item_id", "user_id", "discount", "hist_items"):
        assert np.array_equal(a[k], b[k])
        assert not np.array_equal(a[k], c[k])
    other = gan_plan(world, seed=5).apply(small, 1)
    assert not np.array_equal(a["item_id"], other["item_id"])


def test_cheap_per_batch(trained, batch):
    plan = trained[0]
    small = {k: v[:4096] for k, v in batch.items()}
    plan.apply(small, 0)
    t0 = time.perf_counter()
    for e in range(5):
        plan.apply(small, e)
    assert (time.perf_counter() - t0) / 5 < 0.25  # ~4k synthetic rows; tens of ms measured


def test_second_construction_loads_from_cache(world, trained, cache, monkeypatch, batch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(gan, "train", no_training)
    t0 = time.perf_counter()
    plan = gan_plan(world)
    assert time.perf_counter() - t0 < 2.0
    model = plan.augmenters[0].gan
    assert model.from_cache
    files = list((cache / "gan").iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # written atomically: no temporary left
    # only tensors and a JSON string in the file
    obj = torch.load(files[0], weights_only=True)
    assert set(obj) == {"meta", "arrays", "state"} and isinstance(obj["meta"], str)
    small = {k: v[:2000] for k, v in batch.items()}
    a, b = trained[0].apply(small, 3), plan.apply(small, 3)
    for k in a:
        assert np.array_equal(a[k], b[k])
    # other settings are another cache entry
    with pytest.raises(AssertionError, match="trained again"):
        gan_plan(world, gan_steps=STEPS + 1)


def test_fingerprint_follows_data_and_settings(world, tmp_path):
    import shutil

    s = gan.GanSettings(steps=STEPS)
    key = gan.fingerprint(world, s)
    assert key == gan.fingerprint(world, gan.GanSettings(steps=STEPS))
    assert key != gan.fingerprint(world, gan.GanSettings(steps=STEPS, top=64))
    dst = tmp_path / "copy"
    shutil.copytree(world.path, dst)
    copy = open_dataset(dst)
    before = gan.fingerprint(copy, s)
    st = (dst / "train.parquet").stat()
    os.utime(dst / "train.parquet", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the split rewritten
    assert gan.fingerprint(copy, s) != before
    (dst / "schema.json").write_text((dst / "schema.json").read_text().replace('"synth-s7"', '"other"'))
    assert gan.fingerprint(copy, s) not in (before, key)


def test_damaged_cache_is_retrained(world, tmp_path, monkeypatch):
    monkeypatch.setenv("RECTUNE_CACHE", str(tmp_path))
    s = gan.GanSettings(steps=10, top=32, rows=2000, dim=32)
    path = gan.cache_dir() / f"{gan.fingerprint(world, s)}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable GAN cache"):
        model = gan.load_or_train(world, s)
    assert not model.from_cache and gan.load_or_train(world, s).from_cache


def test_pickles_small_and_samples_the_same(trained, batch):
    plan = trained[0]
    data = pickle.dumps(plan)
    assert len(data) < 8 * 2**20
    copy = pickle.loads(data)
    small = {k: v[:2000] for k, v in batch.items()}
    a, b = plan.apply(small, 7), copy.apply(small, 7)
    for k in a:
        assert np.array_equal(a[k], b[k])


def test_generator_choice_is_checked():
    with pytest.raises(ConfigError, match=r"augment.synthetic.generator: 'ctgan' is not one of \['interpolate', 'gan'\]"):
        AugmentConfig({"augment.synthetic.generator": "ctgan"})
    with pytest.raises(ConfigError, match="augment.synthetic.gan_steps: 5 is out of range"):
        AugmentConfig({"augment.synthetic.gan_steps": 5})


@pytest.mark.slow
def test_quickstart_quality(tmp_path, monkeypatch):
    """The default settings on the quickstart world (200k rows): TV <= 0.10 on every
    low-cardinality field, for click=1 and click=0, in under a minute of training."""
    from rectune.data.synth import SynthConfig, generate

    monkeypatch.setenv("RECTUNE_CACHE", str(tmp_path / "cache"))
    ds = generate(SynthConfig(rows=200_000)).write(tmp_path / "qs")
    b = table_to_batch(ds.read_split("train"), ds.schema)
    t0 = time.perf_counter()
    plan = AugmentPlan(AugmentConfig({"augment.synthetic.generator": "gan", "augment.synthetic.ratio": 1.0}), ds)
    assert time.perf_counter() - t0 < 90
    syn = synthetic(plan.apply(b, 0))
    for task, value in (("click", 1), ("click", 0)):
        r, g = b[task] == value, syn[task] == value
        for f in LOW:
            assert tv(b[f][r], syn[f][g]) <= 0.10, f
