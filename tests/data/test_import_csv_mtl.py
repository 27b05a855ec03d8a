"""The Ali-CCP and AliExpress importers on the real samples in ../shared/data, and on broken copies."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rectune.data.importers import run_import
from rectune.data.prepared import open_dataset
from rectune.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
ALICCP = SHARED / "data" / "ali-ccp-sample"
ALIEXPRESS = SHARED / "data" / "aliexpress-sample"
ALICCP_FILES = {"train": "ali_ccp_train_sample.csv", "valid": "ali_ccp_val_sample.csv", "test": "ali_ccp_test_sample.csv"}
AX_FILES = {"train": "aliexpress_train_sample.csv", "test": "aliexpress_test_sample.csv"}


def _need(folder: Path) -> Path:
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (real data lives in ../shared)")
    return folder


@pytest.fixture
def aliccp_src() -> Path:
    return _need(ALICCP)


@pytest.fixture
def aliexpress_src() -> Path:
    return _need(ALIEXPRESS)


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)  # the shared copies are read-only
    return dst


def _edit(path: Path, fn) -> None:
    """Rewrite a CSV through ``fn(rows)``, rows being lists of strings (header first)."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    rows = fn(rows)
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _set(column: str, value: str, row: int = 3):
    def fn(rows):
        rows[row][rows[0].index(column)] = value
        return rows
    return fn


def _child_without_parent(child: str, parent: str = "click"):
    """Set ``child`` to 1 on the first data row whose ``parent`` is 0."""
    def fn(rows):
        head = rows[0]
        row = next(i for i, r in enumerate(rows) if i and r[head.index(parent)] == "0")
        rows[row][head.index(child)] = "1"
        return rows
    return fn


def _assert_refused(name: str, src: Path, out: Path, *needles: str) -> str:
    with pytest.raises(DataError) as info:
        run_import(name, src, out)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no partial folder
    return msg


# ---------------------------------------------------------------------------------------------
# Ali-CCP
# ---------------------------------------------------------------------------------------------
@pytest.mark.shared
def test_aliccp_sample(aliccp_src: Path, tmp_path: Path) -> None:
    ds = run_import("aliccp", aliccp_src, tmp_path / "out")
    ds = open_dataset(tmp_path / "out", validate=True)  # ids in range, labels 0/1, funnel, row counts
    schema = ds.schema
    src = {s: _csv(aliccp_src / f) for s, f in ALICCP_FILES.items()}
    union = pd.concat(src.values(), ignore_index=True)

    assert schema.tasks == ["click", "purchase"]
    assert schema.task_parents == {"purchase": "click"}
    assert schema.user_field == "101" and schema.item_field == "205"
    assert schema.meta_columns == []
    sparse = schema.field_names(kind="sparse")
    dense = schema.field_names(kind="dense")
    assert len(sparse) == 23 and len(dense) == 8
    assert set(sparse) | set(dense) | {"click", "purchase"} == set(union.columns)
    assert schema.field("121").side == "user" and schema.field("109_14").side == "user"
    assert schema.field("D109_14").side == "user"
    assert schema.field("205").side == "item" and schema.field("216").side == "item"
    assert schema.field("508").side == "context" and schema.field("301").side == "context"
    assert schema.field("D508").side == "context"
    assert schema.n_items == union["205"].nunique() and schema.n_users == union["101"].nunique()

    for c in sparse:  # vocabulary over the union of the files
        assert schema.field(c).vocab_size == union[c].nunique() + 1, c
    for split, frame in src.items():
        table = ds.read_split(split).to_pandas()
        assert schema.rows[split] == len(frame) == len(table)
        for t in ("click", "purchase"):
            np.testing.assert_array_equal(table[t].to_numpy(), frame[t].to_numpy())
        for c in dense:
            np.testing.assert_array_equal(table[c].to_numpy(), frame[c].to_numpy(np.float32))
        for c in sparse:
            codes = table[c].to_numpy()
            assert codes.min() >= 1, c  # a raw 0 is a real value, not padding
            order = np.sort(union[c].unique())
            np.testing.assert_array_equal(order[codes - 1], frame[c].to_numpy(), err_msg=c)
            if schema.field(c).values is not None:
                np.testing.assert_array_equal(np.asarray(schema.field(c).values)[codes - 1], frame[c].to_numpy())

    items = ds.items().to_pandas()
    assert list(items["item_id"]) == list(range(1, schema.n_items + 1))
    assert list(items["raw_205"]) == sorted(union["205"].unique())
    for attr in ("206", "207", "210", "216"):
        codes = items[attr].to_numpy()
        raw = np.sort(union[attr].unique())[codes - 1]
        for item_raw, attr_raw in zip(items["raw_205"], raw):
            seen = union.loc[union["205"] == item_raw, attr]
            assert (seen == attr_raw).sum() == seen.value_counts().max(), (attr, item_raw)  # the most frequent
        several = int((union.groupby("205")[attr].nunique() > 1).sum())
        assert schema.items["items_with_several_values"][attr] == several
    assert "ali_ccp_train_sample.csv" in schema.source and schema.provenance["importer"] == "aliccp"


@pytest.mark.shared
def test_aliccp_cli_names_the_options(aliccp_src: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rectune.cli import main

    out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["data", "import", "aliccp", str(aliccp_src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "train 100, valid 50, test 50" in res.output
    res = CliRunner().invoke(main, ["data", "import", "aliccp", str(aliccp_src), "--out", str(out)])
    assert res.exit_code == 2 and "already exists" in res.output


@pytest.mark.shared
@pytest.mark.parametrize(
    "edit, file, needles",
    [
        (_set("206", "abc"), "train", ["column '206'", "unparsable value 'abc'"]),
        (_set("D508", "x1"), "valid", ["column 'D508'", "unparsable value 'x1'"]),
        (_set("207", "1.5"), "test", ["column '207'", "non-integer"]),
        (_set("205", ""), "train", ["column '205'", "unparsable"]),
        (_set("click", "2"), "test", ["column 'click'", "label 2"]),
        (_set("purchase", "-1"), "train", ["column 'purchase'", "label -1"]),
        (_child_without_parent("purchase"), "valid", ["column 'purchase'", "purchase=1 but click=0"]),
        (lambda rows: [[c.replace("205", "2O5") for c in r] if i == 0 else r for i, r in enumerate(rows)],
         "test", ["column '205'", "misspelt"]),
        (lambda rows: [r[:-1] for r in rows], "valid", ["column 'D853'", "missing column"]),
        (lambda rows: rows[:1], "train", ["no rows"]),
    ],
    ids=["sparse-text", "dense-text", "sparse-float", "sparse-empty", "label-2", "label-neg",
         "purchase-no-click", "misspelt", "missing-column", "header-only"],
)
def test_aliccp_bad_input(aliccp_src: Path, tmp_path: Path, edit, file: str, needles: list[str]) -> None:
    src = _copy(aliccp_src, tmp_path)
    path = src / ALICCP_FILES[file]
    _edit(path, edit)
    _assert_refused("aliccp", src, tmp_path / "out", str(path), *needles)


@pytest.mark.shared
def test_aliccp_empty_file(aliccp_src: Path, tmp_path: Path) -> None:
    src = _copy(aliccp_src, tmp_path)
    path = src / ALICCP_FILES["test"]
    path.write_text("")
    _assert_refused("aliccp", src, tmp_path / "out", str(path), "empty file")


@pytest.mark.shared
@pytest.mark.parametrize("split, pattern", [("train", "'train'"), ("valid", "'val'"), ("test", "'test'")])
def test_aliccp_missing_file(aliccp_src: Path, tmp_path: Path, split: str, pattern: str) -> None:
    src = _copy(aliccp_src, tmp_path)
    (src / ALICCP_FILES[split]).unlink()
    msg = _assert_refused("aliccp", src, tmp_path / "out", str(src), "missing file", pattern, split)
    assert msg.startswith(f"{src}:")


@pytest.mark.shared
def test_aliccp_ambiguous_or_not_a_folder(aliccp_src: Path, tmp_path: Path) -> None:
    src = _copy(aliccp_src, tmp_path)
    shutil.copy(src / ALICCP_FILES["train"], src / "train_copy.csv")
    _assert_refused("aliccp", src, tmp_path / "out", str(src), "several files", "train_copy.csv")
    _assert_refused("aliccp", src / "train_copy.csv", tmp_path / "out2", "not a folder")
    _assert_refused("aliccp", tmp_path / "nowhere", tmp_path / "out3", "nowhere", "not a folder")


# ---------------------------------------------------------------------------------------------
# AliExpress
# ---------------------------------------------------------------------------------------------
@pytest.mark.shared
def test_aliexpress_sample(aliexpress_src: Path, tmp_path: Path) -> None:
    run_import("aliexpress", aliexpress_src, tmp_path / "out", valid_fraction=0.25, seed=7)
    ds = open_dataset(tmp_path / "out", validate=True)
    schema = ds.schema
    train_src, test_src = (_csv(aliexpress_src / AX_FILES[s]) for s in ("train", "test"))
    union = pd.concat([train_src, test_src], ignore_index=True)

    assert schema.tasks == ["click", "conversion"]
    assert schema.task_parents == {"conversion": "click"}
    assert schema.user_field is None and schema.item_field is None
    assert schema.meta_columns == ["search_id"]
    sparse = schema.field_names(kind="sparse")
    dense = schema.field_names(kind="dense")
    assert sparse == [f"categorical_{i}" for i in range(1, 17)]
    assert dense == [f"numerical_{i}" for i in range(1, 64)]
    for c in sparse:
        assert schema.field(c).vocab_size == union[c].nunique() + 1, c

    tables = {s: ds.read_split(s).to_pandas() for s in ("train", "valid", "test")}
    assert schema.rows["train"] + schema.rows["valid"] == len(train_src)
    assert schema.rows["test"] == len(test_src)
    assert tables["train"]["search_id"].dtype == np.int64
    tr_ids, va_ids = set(tables["train"]["search_id"]), set(tables["valid"]["search_id"])
    assert not tr_ids & va_ids and tr_ids | va_ids == set(train_src["search_id"])
    assert len(va_ids) == round(0.25 * train_src["search_id"].nunique())
    in_valid = train_src["search_id"].isin(va_ids).to_numpy()
    expected = {"train": train_src[~in_valid], "valid": train_src[in_valid], "test": test_src}
    for split, frame in expected.items():
        table = tables[split]
        assert len(table) == len(frame)
        for c in ("search_id", "click", "conversion"):
            np.testing.assert_array_equal(table[c].to_numpy(), frame[c].to_numpy(), err_msg=f"{split} {c}")
        for c in dense:
            np.testing.assert_array_equal(table[c].to_numpy(), frame[c].to_numpy(np.float32), err_msg=c)
        for c in sparse:
            codes = table[c].to_numpy()
            assert codes.min() >= 1
            np.testing.assert_array_equal(np.asarray(schema.field(c).values)[codes - 1], frame[c].to_numpy())

    items = ds.items()
    assert items.column_names == ["item_id"] and items.num_rows == 0
    assert schema.seed == 7 and schema.provenance["options"] == {"valid_fraction": 0.25, "seed": 7}


@pytest.mark.shared
def test_aliexpress_valid_split_is_seeded(aliexpress_src: Path, tmp_path: Path) -> None:
    def valid_ids(seed: int, name: str) -> set:
        run_import("aliexpress", aliexpress_src, tmp_path / name, seed=seed)
        return set(pq.read_table(tmp_path / name / "valid.parquet").column("search_id").to_pylist())

    a, b, c = valid_ids(1, "a"), valid_ids(1, "b"), valid_ids(2, "c")
    assert a == b
    assert a != c
    assert len(a) == round(0.1 * _csv(aliexpress_src / AX_FILES["train"])["search_id"].nunique())


@pytest.mark.shared
@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_aliexpress_bad_fraction(aliexpress_src: Path, tmp_path: Path, fraction: float) -> None:
    with pytest.raises(ConfigError, match="--valid-fraction"):
        run_import("aliexpress", aliexpress_src, tmp_path / "out", valid_fraction=fraction)
    assert not (tmp_path / "out").exists()


@pytest.mark.shared
@pytest.mark.parametrize(
    "edit, file, needles",
    [
        (_set("categorical_3", "zz"), "train", ["column 'categorical_3'", "unparsable value 'zz'"]),
        (_set("numerical_40", "n/a"), "test", ["column 'numerical_40'", "unparsable"]),
        (_set("search_id", "12.5"), "train", ["column 'search_id'", "non-integer"]),
        (_set("conversion", "2"), "test", ["column 'conversion'", "label 2"]),
        (lambda rows: [[c.replace("conversion", "convertion") for c in r] if i == 0 else r
                       for i, r in enumerate(rows)], "train", ["column 'conversion'", "misspelt"]),
        (lambda rows: [r[1:] for r in rows], "test", ["column 'search_id'", "missing column"]),
    ],
    ids=["sparse-text", "dense-text", "search-id-float", "label-2", "misspelt", "missing-column"],
)
def test_aliexpress_bad_input(aliexpress_src: Path, tmp_path: Path, edit, file: str, needles: list[str]) -> None:
    src = _copy(aliexpress_src, tmp_path)
    path = src / AX_FILES[file]
    _edit(path, edit)
    _assert_refused("aliexpress", src, tmp_path / "out", str(path), *needles)


@pytest.mark.shared
def test_aliexpress_conversion_without_click(aliexpress_src: Path, tmp_path: Path) -> None:
    src = _copy(aliexpress_src, tmp_path)
    path = src / AX_FILES["train"]
    row = int(np.flatnonzero(_csv(path)["click"].to_numpy() == 0)[0]) + 1
    _edit(path, _set("conversion", "1", row))
    _assert_refused("aliexpress", src, tmp_path / "out", str(path), "column 'conversion'",
                    "conversion=1 but click=0", f"data row {row}")


@pytest.mark.shared
def test_aliexpress_empty_and_missing_file(aliexpress_src: Path, tmp_path: Path) -> None:
    src = _copy(aliexpress_src, tmp_path)
    (src / AX_FILES["train"]).write_text("")
    _assert_refused("aliexpress", src, tmp_path / "out", str(src / AX_FILES["train"]), "empty file")
    (src / AX_FILES["test"]).unlink()
    _assert_refused("aliexpress", src, tmp_path / "out", str(src), "missing file", "'test'")


@pytest.mark.shared
def test_aliexpress_single_search_id_cannot_be_split(aliexpress_src: Path, tmp_path: Path) -> None:
    src = _copy(aliexpress_src, tmp_path)
    path = src / AX_FILES["train"]
    _edit(path, lambda rows: [rows[0]] + [["5"] + r[1:] for r in rows[1:]])
    _assert_refused("aliexpress", src, tmp_path / "out", str(path), "column 'search_id'", "at least 2")


def test_aliccp_item_attributes_most_frequent_then_first(tmp_path: Path) -> None:
    """Built here, no shared data: item raw 0 is a real item; ties go to the value seen first."""
    from rectune.data.importers.csv_mtl import ALICCP

    cols = [*ALICCP.tasks, *ALICCP.sparse, *ALICCP.dense]
    src = tmp_path / "ccp"
    src.mkdir()
    # (205, 206) per row; train, val, test in that order
    pairs = {"train": [(0, 5), (0, 7), (9, 3)], "val": [(0, 7), (9, 4)], "test": [(0, 5), (9, 4)]}
    for split, rows in pairs.items():
        frame = pd.DataFrame(0, index=range(len(rows)), columns=cols)
        frame["205"] = [r[0] for r in rows]
        frame["206"] = [r[1] for r in rows]
        frame["D508"] = 0.25
        frame.to_csv(src / f"ccp_{split}.csv", index=False)
    ds = run_import("aliccp", src, tmp_path / "out")
    items = ds.items().to_pandas()
    assert list(items["raw_205"]) == [0, 9] and list(items["item_id"]) == [1, 2]
    raw_206 = np.asarray(ds.schema.field("206").values)
    assert list(raw_206[items["206"].to_numpy() - 1]) == [5, 4]  # item 0: 5 and 7 tie -> 5 came first
    assert ds.schema.items["items_with_several_values"]["206"] == 2
    train = ds.read_split("train").to_pandas()
    assert list(train["205"]) == [1, 1, 2] and train["126"].min() == 1  # raw 0 -> code 1


def test_fast_encode_matches_vocab_encode() -> None:
    """Vocab.encode's numeric fast path gives the codes of its general (object) path."""
    from rectune.data.importers.common import Vocab

    raw = np.array([7, 0, -3, 7, 1_000_000_007, 0], dtype=np.int64)
    vocab = Vocab.fit(raw)
    np.testing.assert_array_equal(vocab.encode(raw), vocab.encode(raw.astype(object)))
    assert vocab.encode(np.array([5], np.int64)).tolist() == [0]  # unknown -> 0
