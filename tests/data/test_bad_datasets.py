"""A damaged or hand-edited dataset is refused by every command that reads it, from the files'
footers alone, and --overwrite replaces nothing but a prepared dataset."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rectune.data import open_dataset
from rectune.data.prepared import write_dataset
from rectune.errors import DataError
from tests.conftest import run_cli
from tests.data.test_prepared import tiny


@pytest.fixture
def written(tmp_path):
    schema, splits, items = tiny()
    write_dataset(tmp_path / "d", schema, splits, items)
    return tmp_path / "d"


def _put(dataset, split: str, column: str, values: pa.Array, **write) -> None:
    """Replace one column of a split's file behind the dataset's back (its row count kept)."""
    path = dataset / f"{split}.parquet"
    t = pq.read_table(path)
    pq.write_table(t.set_column(t.column_names.index(column), column, values), path, **write)


def _one_line_exit_2(r, *parts: str) -> None:
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("rectune: error: ") and r.stderr.count("\n") == 1, r.stderr
    for p in parts:
        assert p in r.stderr, r.stderr


OUT_OF_RANGE = pa.array([1, 2, 3, 30], pa.int32())  # vocab_size 5


@pytest.mark.parametrize("command", [
    ("train", "--data", "{d}", "--out", "{tmp}/run"),
    ("predict", "--run", "{tmp}/run", "--data", "{d}"),
    ("augment", "preview", "{d}"),
    ("data", "describe", "{d}"),
], ids=["train", "predict", "preview", "describe"])
def test_every_command_refuses_ids_outside_the_vocabulary(written, tmp_path, command):
    # one sparse table with offsets holds every field: an id past its vocabulary would silently
    # read another field's rows
    _put(written, "train", "item_id", OUT_OF_RANGE)
    import ray

    r = run_cli(*(a.format(d=written, tmp=tmp_path) for a in command))
    _one_line_exit_2(r, "train.parquet: column 'item_id': id 30 out of vocabulary range", "(vocab_size 5)")
    assert not (tmp_path / "run").exists() and not ray.is_initialized()


@pytest.mark.parametrize("column, values, expected", [
    ("hist_items", pa.array([[], [1], [9, 1], []], pa.list_(pa.int32())), "id 9 out of vocabulary range"),
    ("user_id", pa.array([1, -1, 3, 1], pa.int32()), "id -1 out of vocabulary range"),
    ("user_id", pa.array([1, None, 3, 1], pa.int32()), "1 null id(s)"),
    ("click", pa.array([1, 0, 2, 1], pa.int8()), "label 2; expected labels in {0, 1}"),
    ("item_id", pa.array(["a", "b", "c", "d"]), "type string; expected integer ids"),
])
@pytest.mark.parametrize("statistics", [True, False], ids=["statistics", "no-statistics"])
def test_the_check_on_open_reads_footers_only(written, monkeypatch, column, values, expected, statistics):
    _put(written, "valid", column, values, write_statistics=statistics)

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setattr(pq, "read_table", no_data)
    if statistics:  # then not even a row group is read
        monkeypatch.setattr(pq.ParquetFile, "read_row_group", no_data)
    with pytest.raises(DataError) as err:
        open_dataset(written)
    assert "valid.parquet" in str(err.value) and f"column '{column}'" in str(err.value)
    assert expected in str(err.value)


def test_ids_in_the_item_table_and_the_graph_are_checked_on_open(written):
    pq.write_table(pa.table({"item_id": pa.array([1, 2, 3, 7], pa.int32())}), written / "items.parquet")
    with pytest.raises(DataError, match=r"items\.parquet: column 'item_id': id 7 out of vocabulary range"):
        open_dataset(written)
    pq.write_table(pa.table({"item_id": pa.array([1, 2, 3, 4], pa.int32())}), written / "items.parquet")
    pq.write_table(pa.table({"head_item_id": pa.array([1], pa.int32()), "relation": ["r"],
                             "tail_item_id": pa.array([5], pa.int32())}), written / "relations.parquet")
    with pytest.raises(DataError, match=r"relations\.parquet: column 'tail_item_id': id 5 out of vocabulary range"):
        open_dataset(written)


@pytest.mark.parametrize("where, value, expected", [
    ("rows", "abc", "key 'rows': \"abc\"; expected an object of row counts"),
    ("rows", {"train": True, "valid": 4, "test": 4}, "key 'rows'"),
    ("name", ["a"], "key 'name': [\"a\"]; expected non-empty text"),
    ("fields/0/name", ["user_id"], "fields[0]: key 'name': [\"user_id\"]; expected non-empty text"),
    ("fields/1/vocab_size", True, "field 'item_id': key 'vocab_size': true; expected a whole number in [1, "),
    ("fields/1/vocab_size", 4_000_000_000, "key 'vocab_size': 4000000000; expected a whole number in [1, 2147483647]"),
    ("fields/1/vocab_size", 5.0, "key 'vocab_size': 5.0"),
    ("fields/3/max_len", "3", "field 'hist_items': key 'max_len': \"3\"; expected a whole number >= 1"),
    ("fields/2/stats", {"mean": "x", "std": 1}, "field 'price': key 'stats'"),
    ("task_parents", {"buy": 1}, "key 'task_parents'"),
    ("meta_columns", "ts", "key 'meta_columns'"),
    ("format_version", 99, "key 'format_version': 99; expected a whole number up to 1"),
])
def test_schema_values_of_the_wrong_type_are_refused_by_every_command(written, tmp_path, where, value, expected):
    data = json.loads((written / "schema.json").read_text())
    node = data
    *parents, last = where.split("/")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[last] = value
    (written / "schema.json").write_text(json.dumps(data))
    for command in (("data", "validate"), ("data", "describe"), ("augment", "preview")):
        _one_line_exit_2(run_cli(*command, written), "schema.json: ", expected)


# ---- --overwrite -----------------------------------------------------------------------------
def _synth(out, *extra):
    return run_cli("data", "synth", "--out", out, "--users", 20, "--items", 20, "--rows", 300, *extra)


def test_overwrite_replaces_a_prepared_dataset(tmp_path):
    out = tmp_path / "w"
    assert _synth(out).exit_code == 0
    assert _synth(out, "--seed", "3", "--overwrite").exit_code == 0
    assert open_dataset(out).schema.seed == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # nothing left beside it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _synth(empty, "--overwrite").exit_code == 0


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    out = tmp_path / "notes"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    r = _synth(out, "--overwrite")
    _one_line_exit_2(r, f"{out}: holds notes.txt, sub/: not a prepared dataset")
    assert (out / "notes.txt").read_text() == "mine" and (out / "sub").is_dir()
    # a dataset with a file of the user's beside its own files is not replaced either
    ds = tmp_path / "ds"
    assert _synth(ds).exit_code == 0
    (ds / "README.txt").write_text("mine")
    _one_line_exit_2(_synth(ds, "--overwrite"), "holds README.txt")
    assert (ds / "README.txt").is_file()
    # a folder of Parquet files without a schema is not a dataset
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "train.parquet").write_bytes(b"x")
    _one_line_exit_2(_synth(bare, "--overwrite"), "has no schema.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare", "ds", "notes"]


def test_overwrite_refuses_a_file_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "data.csv"
    target.write_text("a,b\n")
    _one_line_exit_2(_synth(target, "--overwrite"), "data.csv: is not a folder")
    assert target.read_text() == "a,b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_an_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    _one_line_exit_2(_synth(blocker / "w"), "is not a folder; expected a folder to write the dataset in")

    import rectune.data.synth as synth

    def never(*args, **kwargs):
        raise AssertionError("the world was generated before --out was found unwritable")

    monkeypatch.setattr(synth, "generate", never)
    _one_line_exit_2(_synth("/proc/rectune-out"), "/proc/rectune-out: cannot be written in /proc")
