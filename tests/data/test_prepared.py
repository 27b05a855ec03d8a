"""The prepared-dataset format: atomic writes, the benchmark tables as they are, bad input."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rectune.data import open_dataset
from rectune.data.prepared import write_dataset
from rectune.data.schema import Field, Schema
from rectune.errors import DataError
from tests.conftest import shared_path


def tiny(**over):
    schema = Schema(
        name="tiny", tasks=["click", "buy"], task_parents={"buy": "click"}, meta_columns=["ts"],
        fields=[
            Field("user_id", "sparse", side="user", vocab_size=4),
            Field("item_id", "sparse", side="item", vocab_size=5),
            Field("price", "dense", side="item"),
            Field("hist_items", "sequence", side="user", vocab_size=5, max_len=3, shares_vocab_with="item_id"),
        ],
    )
    rows = {
        "user_id": pa.array([1, 2, 3, 1], pa.int32()),
        "item_id": pa.array([1, 2, 3, 4], pa.int32()),
        "price": pa.array([1.0, 2.0, 3.0, 4.0], pa.float32()),
        "hist_items": pa.array([[], [1], [1, 2], [4, 3, 2]], pa.list_(pa.int32())),
        "click": pa.array([1, 0, 1, 1], pa.int8()),
        "buy": pa.array([1, 0, 0, 1], pa.int8()),
        "ts": pa.array([1, 2, 3, 4], pa.int64()),
    }
    rows.update(over)
    t = pa.table(rows)
    items = pa.table({"item_id": pa.array([1, 2, 3, 4], pa.int32())})
    return schema, {"train": t, "valid": t, "test": t}, items


def test_write_then_read_roundtrip(tmp_path):
    schema, splits, items = tiny()
    write_dataset(tmp_path / "d", schema, splits, items)
    ds = open_dataset(tmp_path / "d", validate=True)
    assert ds.schema.rows == {"train": 4, "valid": 4, "test": 4}
    assert ds.schema.field("price").stats["mean"] == pytest.approx(2.5)
    assert ds.schema.task_parents == {"buy": "click"}
    assert ds.read_split("train").column("hist_items").to_pylist()[3] == [4, 3, 2]
    assert ds.schema.split_stats["train"]["buy_rate"] == 0.5
    # nothing but the dataset beside it: the temporary folder is gone
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_refuses_to_overwrite_without_flag(tmp_path):
    schema, splits, items = tiny()
    write_dataset(tmp_path / "d", schema, splits, items)
    with pytest.raises(DataError, match="already exists"):
        write_dataset(tmp_path / "d", *tiny())
    schema, splits, items = tiny()
    write_dataset(tmp_path / "d", schema, splits, items, overwrite=True)
    assert open_dataset(tmp_path / "d").schema.rows["train"] == 4


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    schema, splits, items = tiny()
    calls = []

    def boom(table, where, **kw):
        calls.append(where)
        if len(calls) == 3:
            raise KeyboardInterrupt  # an interrupt in the middle of the writing
        return real(table, where, **kw)

    real = pq.write_table
    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "d", schema, splits, items)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_dataset(tmp_path, monkeypatch):
    schema, splits, items = tiny()
    write_dataset(tmp_path / "d", schema, splits, items)
    before = (tmp_path / "d" / "schema.json").read_text()

    def boom(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        write_dataset(tmp_path / "d", *tiny(), overwrite=True)
    assert (tmp_path / "d" / "schema.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


@pytest.mark.parametrize(
    "over, column, expected",
    [
        ({"click": pa.array([1, 0, 2, 1], pa.int8())}, "click", "expected labels in {0, 1}"),
        ({"item_id": pa.array([1, 2, 3, 5], pa.int32())}, "item_id", "out of vocabulary range"),
        ({"user_id": pa.array([1, -1, 3, 1], pa.int32())}, "user_id", "out of vocabulary range"),
        ({"hist_items": pa.array([[], [9], [], []], pa.list_(pa.int32()))}, "hist_items", "out of vocabulary"),
        ({"hist_items": pa.array([[], [1, 1, 1, 1], [], []], pa.list_(pa.int32()))}, "hist_items", "max_len 3"),
        ({"price": pa.array([1.0, float("nan"), 1.0, 1.0], pa.float32())}, "price", "finite"),
        ({"buy": pa.array([0, 1, 0, 0], pa.int8())}, "buy", "only after click"),
        ({"item_id": pa.array(["a", "b", "c", "d"])}, "item_id", "expected integer ids"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(tmp_path, over, column, expected):
    schema, splits, items = tiny(**over)
    with pytest.raises(DataError) as err:
        write_dataset(tmp_path / "d", schema, splits, items)
    msg = str(err.value)
    assert f"column '{column}'" in msg and expected in msg and "train.parquet" in msg
    assert "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_empty_split_is_refused(tmp_path):
    schema, splits, items = tiny()
    splits["valid"] = splits["valid"].slice(0, 0)
    with pytest.raises(DataError, match=r"valid\.parquet: empty split"):
        write_dataset(tmp_path / "d", schema, splits, items)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def written(tmp_path):
    schema, splits, items = tiny()
    write_dataset(tmp_path / "d", schema, splits, items)
    return tmp_path / "d"


def test_missing_file(written):
    (written / "valid.parquet").unlink()
    with pytest.raises(DataError, match=r"valid\.parquet: missing file"):
        open_dataset(written)


def test_misspelt_column_is_named_with_a_hint(written):
    t = pq.read_table(written / "test.parquet").rename_columns(
        ["user_id", "itme_id", "price", "hist_items", "click", "buy", "ts"])
    pq.write_table(t, written / "test.parquet")
    with pytest.raises(DataError) as err:
        open_dataset(written, validate=True)
    assert "test.parquet: column 'item_id': missing sparse field (found 'itme_id': misspelt?)" in str(err.value)


def test_corrupt_parquet_is_one_line(written):
    (written / "train.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"train\.parquet: unreadable Parquet file"):
        open_dataset(written, validate=True)


def test_schema_errors(written):
    data = json.loads((written / "schema.json").read_text())
    data["fields"][0]["kind"] = "categorical"
    (written / "schema.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"schema\.json: field 'user_id': kind 'categorical', expected one of"):
        open_dataset(written)
    (written / "schema.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        open_dataset(written)


def test_row_count_mismatch(written):
    data = json.loads((written / "schema.json").read_text())
    data["rows"]["train"] = 5
    (written / "schema.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"rows\.train is 5 but train\.parquet has 4 rows"):
        open_dataset(written, validate=True)


def test_unknown_schema_keys_survive_a_rewrite(written):
    data = json.loads((written / "schema.json").read_text())
    data["owner_note"] = "kept"
    (written / "schema.json").write_text(json.dumps(data))
    ds = open_dataset(written)
    assert json.loads(ds.schema.dumps())["owner_note"] == "kept"


@pytest.mark.parametrize("name", ["ml100k-mtl", "grocery-kg"])
def test_benchmark_tables_read_as_they_are(name):
    path = shared_path("bench", name)
    ds = open_dataset(path, validate=True)
    assert ds.schema.item_field == "item_id" and ds.schema.user_field == "user_id"
    assert ds.schema.field("hist_items").shares_vocab_with == "item_id"
    assert ds.relations().num_rows == ds.schema.relations["rows"]
    items = ds.items()
    col = ds.item_attribute_column("category" if name == "grocery-kg" else "genre", items)
    assert col in ("category", "genre_code")


def test_bench_table_copy_is_validated_like_ours(tmp_path):
    src = shared_path("bench", "grocery-kg")
    dst = tmp_path / "g"
    shutil.copytree(src, dst)
    t = pq.read_table(dst / "valid.parquet")
    t = t.set_column(t.column_names.index("click"), "click", pa.array([2] * t.num_rows, pa.int8()))
    pq.write_table(t, dst / "valid.parquet")
    with pytest.raises(DataError, match=r"valid\.parquet: column 'click': label 2; expected labels in \{0, 1\}"):
        open_dataset(dst, validate=True)
