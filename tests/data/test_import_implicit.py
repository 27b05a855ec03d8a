"""RecBole and ReChorus importers on the real data in ../shared, and their bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rectune.data import open_dataset
from rectune.data.importers import run_import
from rectune.data.importers.common import SplitSpec, TaskRule, history
from rectune.errors import ConfigError, DataError
from tests.conftest import shared_path

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    src = shared_path("data", "ml-100k")
    out = tmp_path_factory.mktemp("ml") / "ml100k"
    run_import("recbole", src, out, task=("like=rating>=4",))
    return out


@pytest.fixture(scope="module")
def grocery(tmp_path_factory):
    src = shared_path("data", "amazon-grocery")
    out = tmp_path_factory.mktemp("gr") / "grocery"
    run_import("rechorus", src, out)
    return out


def _positives(path, split):
    t = pq.read_table(path / f"{split}.parquet").to_pandas()
    return t[t.click == 1].reset_index(drop=True)


def test_recbole_ml100k_follows_the_benchmark_recipe(ml100k):
    ds = open_dataset(ml100k, validate=True)
    s = ds.schema
    assert s.tasks == ["click", "like"]
    assert s.rows == {"train": 400_000, "valid": 50_000, "test": 50_000}
    assert s.n_users == 943 and s.n_items == 1682
    kinds = {f.name: f.kind for f in s.fields}
    assert kinds["class"] == "sequence" and kinds["title"] == "text" and kinds["age"] == "sparse"
    # the .inter rating never becomes a feature (it would leak 'like')
    assert "rating" not in kinds
    bench = shared_path("bench", "ml100k-mtl")
    for split in ("train", "valid", "test"):
        ours, ref = _positives(ml100k, split), _positives(bench, split)
        assert (ours.user_id.values == ref.user_id.values).all()
        assert (ours.item_id.values == ref.item_id.values).all()
        assert (ours.like.values == ref.like.values).all()
        assert ours.hist_items.map(tuple).equals(ref.hist_items.map(tuple))
    # relations from shared KG tails: identical counts to the benchmark's derivation
    assert s.relations["per_relation"] == open_dataset(bench).schema.relations["per_relation"]


def test_recbole_labels_and_negatives_are_right(ml100k):
    src = shared_path("data", "ml-100k")
    inter = pd.read_csv(src / "ml-100k.inter", sep="\t")
    inter.columns = ["user", "item", "rating", "ts"]
    t = pq.read_table(ml100k / "train.parquet").to_pandas()
    # 1 positive + 4 negatives, in that order
    assert (t.click.values.reshape(-1, 5) == [1, 0, 0, 0, 0]).all()
    # like follows the rule on the positives (raw ids equal codes in ml-100k's contiguous ids)
    pos = t[t.click == 1].merge(inter, left_on=["user_id", "item_id", "ts"], right_on=["user", "item", "ts"])
    assert len(pos) == (t.click == 1).sum()
    assert (pos.like.values == (pos.rating.values >= 4)).all()
    # negatives: never an item the user interacted with, distinct per positive, like = 0
    seen = set(zip(inter.user, inter.item))
    neg = t[t.click == 0]
    assert not any((u, i) in seen for u, i in zip(neg.user_id.values[:20000], neg.item_id.values[:20000]))
    assert neg.like.sum() == 0
    groups = t.item_id.values.reshape(-1, 5)[:, 1:]
    assert (np.sort(groups, axis=1)[:, 1:] != np.sort(groups, axis=1)[:, :-1]).all()
    # negatives carry the positive's time and user features
    block = t.iloc[:5]
    assert block.ts.nunique() == 1 and block.user_id.nunique() == 1 and block.age.nunique() == 1


def test_recbole_items_carry_title_and_attributes(ml100k):
    items = pq.read_table(ml100k / "items.parquet").to_pandas()
    assert items.loc[items.raw_item_id == 1, "title"].item() == "Toy Story"
    assert len(items) == 1682 and items.item_id.tolist() == list(range(1, 1683))
    users = pq.read_table(ml100k / "users.parquet").to_pandas()
    assert len(users) == 943


def test_rechorus_grocery_follows_the_benchmark_recipe(grocery):
    ds = open_dataset(grocery, validate=True)
    assert ds.schema.rows == {"train": 462_650, "valid": 73_405, "test": 73_405}
    bench = shared_path("bench", "grocery-kg")
    for split in ("train", "valid", "test"):
        ours, ref = _positives(grocery, split), _positives(bench, split)
        assert (ours.user_id.values == ref.user_id.values).all()
        assert (ours.item_id.values == ref.item_id.values).all()
        assert (ours.category.values == ref.category.values).all()
        assert ours.hist_items.map(tuple).equals(ref.hist_items.map(tuple))
    rel = ds.relations().to_pandas()
    assert ds.schema.relations["per_relation"] == {"complement": 234_704, "substitute": 124_933}
    # item 1's first complements, in the order of item_meta.csv
    assert rel[(rel.head_item_id == 1) & (rel.relation == "complement")].tail_item_id.tolist()[:3] == [6285, 194, 6427]


def test_history_is_strictly_before_and_most_recent_last():
    users = np.array([1, 1, 1, 1, 2])
    ts = np.array([10, 20, 20, 30, 5])
    items = np.array([7, 8, 9, 6, 7])
    h = history(users, ts, np.arange(5), items, max_len=2).to_pylist()
    assert h == [[], [7], [7], [8, 9], []]


def test_leave_last_out_split():
    users = np.array([1, 1, 1, 2, 2, 3, 3, 3, 3])
    order = np.array([0, 3, 5, 1, 2, 4, 6, 7, 8])
    sp = SplitSpec.parse("loo").assign(users, order)
    assert sp.tolist() == [0, 1, 2, 0, 0, 0, 0, 1, 2]


@pytest.mark.parametrize("text", ["like", "like=rating>>4", "like=__import__('os')>1", "=rating>4"])
def test_bad_task_rules(text):
    with pytest.raises(ConfigError, match="expected NAME=COLUMN<op>VALUE"):
        TaskRule.parse(text)


@pytest.mark.parametrize("text", ["time:0.8,0.1", "time:0.5,0.5,0.5", "random", "time:a,b,c"])
def test_bad_splits(text):
    with pytest.raises(ConfigError, match="--split"):
        SplitSpec.parse(text)


# ---- bad input: one-line error naming file and column, exit 2 in the CLI, no output left ------
def _copy(src, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(src, dst)
    return dst


def _edit(path, fn):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(fn(lines)))


@pytest.mark.parametrize(
    "fmt, edit, file, expected",
    [
        ("recbole", lambda d: (d / "ml-100k.inter").unlink(), "src", "missing file: expected a RecBole .inter"),
        ("recbole", lambda d: _edit(d / "ml-100k.inter", lambda ls: [ls[0].replace("timestamp", "timestmp")] + ls[1:50]),
         "ml-100k.inter", "column 'timestamp': missing column (found 'timestmp': misspelt?)"),
        ("recbole", lambda d: _edit(d / "ml-100k.inter", lambda ls: ls[:5] + ["196\t242\t3\tyesterday\n"] + ls[5:50]),
         "ml-100k.inter", "column 'timestamp': unparsable value 'yesterday'"),
        ("recbole", lambda d: _edit(d / "ml-100k.inter", lambda ls: [ls[0].replace(":float", ":number", 1)] + ls[1:50]),
         "ml-100k.inter", "header 'rating:number'"),
        ("recbole", lambda d: (d / "ml-100k.inter").write_text(""), "ml-100k.inter", "empty file"),
        ("rechorus", lambda d: (d / "train.csv").unlink(), "train.csv", "missing file"),
        ("rechorus", lambda d: _edit(d / "train.csv", lambda ls: [ls[0].replace("item_id", "itemid")] + ls[1:50]),
         "train.csv", "column 'item_id': missing column (found 'itemid': misspelt?)"),
        ("rechorus", lambda d: _edit(d / "train.csv", lambda ls: ls[:3] + ["12\tabc\t965779200\n"] + ls[3:50]),
         "train.csv", "column 'item_id': unparsable value 'abc'"),
        ("rechorus", lambda d: _edit(d / "item_meta.csv", lambda ls: ls[:2] + ["3\t0\t[1, 2\t[]\n"] + ls[3:]),
         "item_meta.csv", "column 'r_complement': unparsable value '[1, 2'"),
        ("rechorus", lambda d: _edit(d / "train.csv", lambda ls: ls[:1]), "train.csv", "no rows"),
    ],
)
def test_bad_source_files(tmp_path, fmt, edit, file, expected):
    src = _copy(shared_path("data", "ml-100k" if fmt == "recbole" else "amazon-grocery"), tmp_path)
    edit(src)
    out = tmp_path / "out"
    opts = {"task": ("like=rating>=4",)} if fmt == "recbole" else {}
    with pytest.raises(DataError) as err:
        run_import(fmt, src, out, **opts)
    msg = str(err.value)
    assert file in msg and expected in msg, msg
    assert "\n" not in msg
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no hidden partial folder


def test_task_rule_on_a_missing_column(tmp_path):
    src = shared_path("data", "ml-100k")
    with pytest.raises(DataError, match=r"ml-100k\.inter: column 'score': missing column for task rule"):
        run_import("recbole", src, tmp_path / "out", task=("like=score>=4",))
    assert not (tmp_path / "out").exists()
