"""Each augmenter checked by its statistics, not just its shape."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from rectune.augment import AUGMENTERS, AugmentConfig, AugmentPlan
from rectune.batches import ITEM_KEY, ROW_ID, pad_sequences, sequence_lengths, table_to_batch
from rectune.data import open_dataset
from rectune.errors import ConfigError
from tests.conftest import shared_path


def plan(world, seed=0, **values):
    return AugmentPlan(AugmentConfig({f"augment.{k.replace('__', '.')}": v for k, v in values.items()}), world, seed)


def test_registry_and_keys():
    assert set(AUGMENTERS.names()) >= {"noise", "mask", "sequence", "neighbor", "adversarial"}
    keys = AugmentConfig.valid_keys()
    assert "augment.mask.prob" in keys and "augment.adversarial.eps" in keys
    cfg = AugmentConfig({"augment.mask.prob": 0.3})
    assert cfg.to_dict()["augment.mask.prob"] == 0.3 and cfg.enabled() == ["mask"]


def test_padding_is_right_aligned(world):
    t = world.read_split("train").slice(0, 500)
    padded = pad_sequences(t.column("hist_items"), 20)
    for lst, row in zip(t.column("hist_items").to_pylist(), padded):
        assert row[20 - len(lst):].tolist() == lst and (row[: 20 - len(lst)] == 0).all()


def test_noise_std(world, batch):
    out = plan(world, noise__std=0.1).apply(batch, epoch=0)
    for name in ("price", "discount"):
        diff = out[name] - batch[name]
        expected = 0.1 * world.schema.field(name).stats["std"]
        assert diff.std() == pytest.approx(expected, rel=0.03)
        assert abs(diff.mean()) < 4 * expected / np.sqrt(len(diff))
    assert (out["click"] == batch["click"]).all() and (out["item_id"] == batch["item_id"]).all()


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_mask_share_close_to_p(world, batch, p):
    out = plan(world, mask__prob=p, mask__groups=["item"]).apply(batch, epoch=0)
    n = len(batch["item_id"])
    for name in ("item_id", "brand", "category", "shop", "price_band"):
        share = ((out[name] == 0) & (batch[name] != 0)).mean()
        assert share == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / n))
    for name in ("user_id", "age_bucket", "gender"):  # other groups untouched
        assert (out[name] == batch[name]).all()
    assert (out["click"] == batch["click"]).all() and (out["conversion"] == batch["conversion"]).all()


def test_determinism_per_seed_and_epoch(world, batch):
    p = plan(world, seed=3, mask__prob=0.3, noise__std=0.1, sequence__mask=0.2)
    a, b, c = p.apply(batch, epoch=1), p.apply(batch, epoch=1), p.apply(batch, epoch=2)
    for k in ("item_id", "price", "hist_items"):
        assert np.array_equal(a[k], b[k])
        assert not np.array_equal(a[k], c[k])
    other = plan(world, seed=4, mask__prob=0.3).apply(batch, epoch=1)
    assert not np.array_equal(a["item_id"], other["item_id"])


def test_sequence_crop_mask_reorder(world, batch):
    seq = batch["hist_items"]
    length = sequence_lengths(seq)
    crop = plan(world, sequence__crop=0.4).apply(batch, 0)["hist_items"]
    new_len = sequence_lengths(crop)
    long = length >= 2
    assert (new_len[long] == np.maximum(1, np.ceil(0.6 * length[long]))).all()
    assert (new_len[~long] == length[~long]).all()
    # a crop is a contiguous window of the original, in order
    for i in np.flatnonzero(long)[:300]:
        orig, got = seq[i][seq.shape[1] - length[i]:].tolist(), crop[i][seq.shape[1] - new_len[i]:].tolist()
        assert any(orig[s:s + len(got)] == got for s in range(len(orig) - len(got) + 1))
    masked = plan(world, sequence__mask=0.25).apply(batch, 0)["hist_items"]
    inside = np.arange(seq.shape[1])[None, :] >= (seq.shape[1] - length)[:, None]
    share = ((masked == 0) & inside).sum() / inside.sum()
    assert share == pytest.approx(0.25, abs=0.01)
    shuffled = plan(world, sequence__reorder=0.5).apply(batch, 0)["hist_items"]
    assert (np.sort(shuffled, axis=1) == np.sort(seq, axis=1)).all()  # same items
    changed = (shuffled != seq).any(axis=1)
    assert changed[length >= 6].mean() > 0.5


def test_neighbor_graph_substitutes_real_neighbours(world, batch):
    rel = world.relations().to_pandas()
    edges = set(zip(rel.head_item_id, rel.tail_item_id))
    out = plan(world, neighbor__rate=0.2).apply(batch, 0)
    changed = out["item_id"] != batch["item_id"]
    assert changed.mean() == pytest.approx(0.2, abs=0.02)
    assert all((h, t) in edges for h, t in zip(batch["item_id"][changed], out["item_id"][changed]))
    items = world.items().to_pandas().set_index("item_id")
    for col in ("brand", "category", "price_band", "price"):  # attributes follow the substitute
        assert np.allclose(out[col][changed], items.loc[out["item_id"][changed], col].to_numpy())
    assert (out["click"] == batch["click"]).all()
    only_brand = plan(world, neighbor__rate=1.0, neighbor__relations=["same_brand"]).apply(batch, 0)
    ch = only_brand["item_id"] != batch["item_id"]
    assert (out_brand := items.loc[only_brand["item_id"][ch], "brand"].to_numpy()).size
    assert (out_brand == items.loc[batch["item_id"][ch], "brand"].to_numpy()).all()


def test_neighbor_on_benchmark_items(tmp_path):
    ds = open_dataset(shared_path("bench", "ml100k-mtl"))
    b = table_to_batch(pq.read_table(ds.split_path("valid")).slice(0, 5000), ds.schema)
    out = AugmentPlan(AugmentConfig({"augment.neighbor.rate": 0.5, "augment.neighbor.relations": ["film.film.directed_by"]}),
                      ds).apply(b, 0)
    changed = out["item_id"] != b["item_id"]
    assert changed.any()
    items = ds.items().to_pandas().set_index("item_id")
    assert (out["genre"][changed] == items.loc[out["item_id"][changed], "genre_code"].to_numpy()).all()


@pytest.mark.parametrize("values, message", [
    ({"augment.mask.prob": 1.5}, "augment.mask.prob: 1.5 is out of range; expected a value in [0.0, 1.0]"),
    ({"augment.noise.std": -0.1}, "augment.noise.std: -0.1 is out of range"),
    ({"augment.mask.prb": 0.1}, "unknown config key 'augment.mask.prb' (did you mean 'augment.mask.prob'?)"),
    ({"augment.blur.prob": 0.1}, "unknown config key 'augment.blur.prob'"),
    ({"augment.mask.groups": ["items"]}, "augment.mask.groups: 'items' is not one of"),
    ({"augment.neighbor.source": "kg"}, "augment.neighbor.source: 'kg' is not one of ['graph', 'text']"),
    ({"augment.mask.prob": "lots"}, "augment.mask.prob: expected a number"),
])
def test_bad_config(values, message):
    with pytest.raises(ConfigError) as err:
        AugmentConfig(values)
    assert message in str(err.value)


def test_dataset_dependent_errors(world, tmp_path):
    with pytest.raises(ConfigError, match=r"augment.neighbor.source: 'text' needs item-text embeddings; run"):
        plan(world, neighbor__rate=0.1, neighbor__source="text")
    with pytest.raises(ConfigError, match="augment.neighbor.relations: unknown relation 'sibling'"):
        plan(world, neighbor__rate=0.1, neighbor__relations=["sibling"])
    with pytest.raises(ConfigError, match="augment.noise.fields: 'brand' is not a dense field"):
        plan(world, noise__std=0.1, noise__fields=["brand"])
    ali = shared_path("bench", "grocery-kg")
    with pytest.raises(ConfigError, match="augment.noise.std: the dataset 'grocery-kg' has no dense field"):
        AugmentPlan(AugmentConfig({"augment.noise.std": 0.1}), open_dataset(ali))


def test_neighbor_without_relations(world, tmp_path):
    import shutil

    dst = tmp_path / "norel"
    shutil.copytree(world.path, dst)
    (dst / "relations.parquet").unlink()
    with pytest.raises(ConfigError, match="augment.neighbor.source: 'graph' needs relations.parquet"):
        AugmentPlan(AugmentConfig({"augment.neighbor.rate": 0.1}), open_dataset(dst))


def test_a_masked_item_keeps_its_own_id_for_its_side_data(world, batch):
    out = plan(world, mask__prob=0.4, mask__groups=["item"]).apply(batch, 0)
    masked = (out["item_id"] == 0) & (batch["item_id"] != 0)
    assert 0.35 < masked.mean() < 0.45
    assert (out[ITEM_KEY] == batch["item_id"]).all()
    # masking runs after the other stream augmenters, whatever the order they are named in: the
    # key is the row's final item (a substituted neighbour, a synthetic row's item), never a stale one
    out = plan(world, synthetic__ratio=0.3, neighbor__rate=0.5, mask__prob=0.3, mask__groups=["item"]).apply(batch, 0)
    assert all(len(v) == len(out[ROW_ID]) for v in out.values())
    kept = out["item_id"] != 0
    assert (out[ITEM_KEY][kept] == out["item_id"][kept]).all()
    assert (out[ITEM_KEY][~kept] != 0).all() and (out[ROW_ID] < 0).any()
    # a mask that leaves the item field alone adds no key
    assert ITEM_KEY not in plan(world, mask__prob=0.3, mask__groups=["user"]).apply(batch, 0)


def test_row_ids_are_kept(world, batch):
    out = plan(world, mask__prob=0.5, neighbor__rate=0.5, sequence__crop=0.3).apply(batch, 0)
    assert (out[ROW_ID] == batch[ROW_ID]).all()


def test_neighbor_text_uses_nearest_embeddings(world, tmp_path):
    import shutil

    import pyarrow as pa

    from rectune.data.prepared import replace_files

    dst = tmp_path / "emb"
    shutil.copytree(world.path, dst)
    ds = open_dataset(dst)
    items = ds.items()
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(items.num_rows, 8)).astype(np.float32)
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 8)
    ds = replace_files(ds, ds.schema, {"items.parquet": items.append_column("text_emb", col)})
    b = table_to_batch(ds.read_split("train").slice(0, 4000), ds.schema)
    out = AugmentPlan(AugmentConfig({"augment.neighbor.rate": 1.0, "augment.neighbor.source": "text",
                                     "augment.neighbor.k": 3}), ds).apply(b, 0)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    top3 = np.argsort(-sim, axis=1)[:, :3] + 1  # item codes are row index + 1
    assert (out["item_id"] != b["item_id"]).all()
    assert all(t in top3[h - 1] for h, t in zip(b["item_id"], out["item_id"]))


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_synthetic_interpolation(world, batch, ratio):
    out = plan(world, synthetic__ratio=ratio).apply(batch, 0)
    n = len(batch[ROW_ID])
    synth = out[ROW_ID] < 0
    assert (out[ROW_ID][~synth] == batch[ROW_ID]).all()
    assert synth.sum() == pytest.approx(ratio * n, rel=0.05)
    assert ((out["conversion"] == 1) & (out["click"] == 0)).sum() == 0  # the funnel holds
    # every discrete value of a synthetic row comes from a real row with the same labels
    for col in ("item_id", "brand", "user_id"):
        for lab in (0, 1):
            real = set(batch[col][batch["click"] == lab])
            assert set(out[col][synth & (out["click"] == lab)]) <= real
    lo, hi = batch["price"].min(), batch["price"].max()
    assert (out["price"][synth] >= lo - 1e-5).all() and (out["price"][synth] <= hi + 1e-5).all()
    assert all(len(v) == len(out[ROW_ID]) for v in out.values())


def test_synthetic_positives_only(world, batch):
    out = plan(world, synthetic__ratio=0.2, synthetic__only="positives:conversion").apply(batch, 0)
    synth = out[ROW_ID] < 0
    assert synth.sum() > 0 and (out["conversion"][synth] == 1).all() and (out["click"][synth] == 1).all()
    with pytest.raises(ConfigError, match="augment.synthetic.only: 'positives:like' is not one of"):
        plan(world, synthetic__ratio=0.2, synthetic__only="positives:like")
