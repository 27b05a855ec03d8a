"""Importers on malformed input: one short line naming file and column, exit 2, nothing written.

Every source here is a tiny folder written into tmp_path, so these tests need no shared data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rectune.data.importers.common import TaskRule, history
from rectune.data.importers.csv_mtl import ALICCP, ALIEXPRESS
from rectune.errors import ConfigError
from tests.conftest import run_cli

BIG = "99999999999999999999999"  # beyond int64
HUGE = 2_000_000  # characters: a broken line, far beyond any real cell


# ---------------------------------------------------------------------------------------------
# tiny sources
# ---------------------------------------------------------------------------------------------
def _inter_rows(n_users: int = 6) -> list[list[str]]:
    """Five interactions per user over 20 items, ratings 1..5, distinct times."""
    return [[str(u), str((u * 3 + i) % 20 + 1), str((u + i) % 5 + 1), str(100 + u * 10 + i)]
            for u in range(1, n_users + 1) for i in range(1, 6)]


def _write(path: Path, header: list[str], rows: list[list[str]], sep: str = "\t") -> Path:
    path.write_text("\n".join(sep.join(r) for r in [header, *rows]) + "\n")
    return path


def _recbole(tmp_path: Path, inter: list[list[str]] | None = None, users: list[list[str]] | None = None,
             items: list[list[str]] | None = None, links: list[list[str]] | None = None,
             inter_header: list[str] | None = None) -> Path:
    """A RecBole folder: .inter (user, item, rating, time) and .user (age); .item, .kg, .link if given."""
    src = tmp_path / "rb"
    src.mkdir()
    _write(src / "x.inter", inter_header or ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
           inter if inter is not None else _inter_rows())
    _write(src / "x.user", ["user_id:token", "age:token"],
           users if users is not None else [[str(u), str(20 + u)] for u in range(1, 7)])
    if items is not None:
        _write(src / "x.item", ["item_id:token", "title:token_seq"], items)
    if links is not None:
        _write(src / "x.kg", ["head_id:token", "relation_id:token", "tail_id:token"],
               [[e, "r", "t"] for _, e in links])
        _write(src / "x.link", ["item_id:token", "entity_id:token"], links)
    return src


def _rechorus(tmp_path: Path, train: list[list[str]] | None = None, header: list[str] | None = None,
              meta: list[list[str]] | None = None) -> Path:
    src = tmp_path / "rc"
    src.mkdir()
    _write(src / "train.csv", header or ["user_id", "item_id", "time"],
           train if train is not None else [[r[0], r[1], r[3]] for r in _inter_rows()])
    _write(src / "item_meta.csv", ["item_id", "i_category", "r_complement"],
           meta if meta is not None else [[str(i), str(i % 3), f"[{i % 20 + 1}, {(i + 3) % 20 + 1}]"]
                                          for i in range(1, 21)])
    return src


def _csv_mtl(tmp_path: Path, spec, edit=None) -> tuple[Path, Path]:
    """A valid Ali-CCP or AliExpress folder of 8-row files; ``edit(lines)`` rewrites train's lines."""
    src = tmp_path / "mtl"
    src.mkdir()
    cols = list(dict.fromkeys([*spec.meta, *spec.tasks, *spec.sparse, *spec.dense]))
    for split in spec.file_patterns.values():
        frame = pd.DataFrame(0, index=range(8), columns=cols)
        for c in spec.sparse:
            frame[c] = np.arange(8) % 3
        for c in spec.dense:
            frame[c] = 0.5
        frame["click"] = [1, 0] * 4
        if spec.meta:
            frame["search_id"] = np.arange(8) // 2
        frame.to_csv(src / f"s_{split}.csv", index=False)
    train = src / f"s_{spec.file_patterns['train']}.csv"
    if edit is not None:
        train.write_text("\n".join(edit(train.read_text().splitlines())) + "\n")
    return src, train


def _set_cell(column: str, value: str, row: int = 2):
    """Edit of CSV lines: set ``column`` of line ``row`` (the header is line 0)."""
    def edit(lines: list[str]) -> list[str]:
        head = lines[0].split(",")
        cells = lines[row].split(",")
        cells[head.index(column)] = value
        lines[row] = ",".join(cells)
        return lines
    return edit


# ---------------------------------------------------------------------------------------------
# running the CLI
# ---------------------------------------------------------------------------------------------
def _import(fmt: str, src: Path, tmp_path: Path, *options: str):
    out = tmp_path / "out"
    extra = ("--neg-ratio", "1") if fmt in ("recbole", "rechorus") else ()
    return run_cli("data", "import", fmt, src, "--out", out, *extra, *options), out


def _refused(fmt: str, src: Path, tmp_path: Path, *options: str, needles: tuple[str, ...]) -> str:
    """Import through the CLI and check the refusal: exit 2, one short line with ``needles``, no output."""
    res, out = _import(fmt, src, tmp_path, *options)
    err = res.stderr
    assert res.exit_code == 2, (res.exit_code, err[:500])
    assert err.startswith("rectune: error: ") and err.count("\n") == 1 and err.endswith("\n"), err[:500]
    assert len(err) < 300, err[:500]
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no partial folder
    return err


def _imported(fmt: str, src: Path, tmp_path: Path, *options: str) -> Path:
    res, out = _import(fmt, src, tmp_path, *options)
    assert res.exit_code == 0, res.stderr[:500]
    return out


# ---------------------------------------------------------------------------------------------
# ids mixing numbers and text: one id space, read as text wherever one id is not a plain integer
# ---------------------------------------------------------------------------------------------
def test_user_ids_numeric_in_inter_and_text_in_user_file_are_one_id_space(tmp_path: Path) -> None:
    users = [[str(u), str(20 + u)] for u in range(1, 7)] + [["bob", "99"]]
    out = _imported("recbole", _recbole(tmp_path, users=users), tmp_path)
    table = pq.read_table(out / "users.parquet").to_pandas()
    ages = dict(zip(table.raw_user_id, table.age))
    values = next(f for f in json.loads((out / "schema.json").read_text())["fields"] if f["name"] == "age")["values"]
    assert {raw: values[code - 1] for raw, code in ages.items()} == {
        **{str(u): 20 + u for u in range(1, 7)}, "bob": 99}
    train = pq.read_table(out / "train.parquet").to_pandas()
    assert (train.age > 0).all()  # every interacting user found its .user row


def test_item_ids_numeric_in_inter_and_text_in_item_file_are_one_id_space(tmp_path: Path) -> None:
    items = [[str(i), f"movie {i}"] for i in range(1, 21)] + [["x7", "extra"]]
    out = _imported("recbole", _recbole(tmp_path, items=items), tmp_path)
    table = pq.read_table(out / "items.parquet").to_pandas()
    titles = dict(zip(table.raw_item_id, table.title))
    assert titles["7"] == "movie 7" and titles["x7"] == "extra" and len(titles) == 21


def test_item_ids_numeric_in_inter_and_text_in_link_file_keep_their_entities(tmp_path: Path) -> None:
    links = [[str(i), f"e{i}"] for i in range(1, 21)] + [["stray", "e99"]]
    out = _imported("recbole", _recbole(tmp_path, links=links), tmp_path)
    table = pq.read_table(out / "items.parquet").to_pandas()
    assert dict(zip(table.raw_item_id, table.entity_id)) == {str(i): f"e{i}" for i in range(1, 21)}


def test_text_and_number_ids_within_one_file_are_one_id_space(tmp_path: Path) -> None:
    inter = _inter_rows() + [["bob", "3", "5", "400"], ["bob", "4", "5", "401"]]
    out = _imported("recbole", _recbole(tmp_path, inter=inter), tmp_path)  # .user: numbers only
    table = pq.read_table(out / "users.parquet").to_pandas().set_index("raw_user_id")
    assert sorted(table.index) == sorted([*map(str, range(1, 7)), "bob"])
    assert table.loc["bob", "age"] == 0 and (table.drop(index="bob").age > 0).all()


# ---------------------------------------------------------------------------------------------
# numbers int64 cannot hold
# ---------------------------------------------------------------------------------------------
def test_timestamp_beyond_int64_is_refused_in_recbole(tmp_path: Path) -> None:
    inter = _inter_rows()
    inter[3][3] = BIG
    _refused("recbole", _recbole(tmp_path, inter=inter), tmp_path,
             needles=("x.inter: column 'timestamp'", f"'{BIG}' at data row 4", "beyond the int64 range"))


def test_timestamp_beyond_int64_is_refused_in_rechorus(tmp_path: Path) -> None:
    train = [[r[0], r[1], r[3]] for r in _inter_rows()]
    train[5][2] = BIG
    _refused("rechorus", _rechorus(tmp_path, train=train), tmp_path,
             needles=("train.csv: column 'time'", "beyond the int64 range"))


def test_times_spread_over_the_whole_int64_range_keep_their_history() -> None:
    users = np.array([1, 1, 1, 2, 2])
    ts = np.array([-9_000_000_000_000_000_000, 0, 9_000_000_000_000_000_000, 5, 9_000_000_000_000_000_000])
    items = np.array([7, 8, 9, 6, 5])
    assert history(users, ts, np.arange(5), items, max_len=5).to_pylist() == [[], [7], [7, 8], [], [6]]


def test_user_ids_beyond_int64_stay_distinct_in_recbole(tmp_path: Path) -> None:
    big = [BIG, "99999999999999999999998"]
    inter = _inter_rows() + [[big[0], "3", "5", "400"], [big[1], "4", "5", "401"]]
    users = [[str(u), str(20 + u)] for u in range(1, 7)] + [[big[0], "70"], [big[1], "80"]]
    out = _imported("recbole", _recbole(tmp_path, inter=inter, users=users), tmp_path)
    table = pq.read_table(out / "users.parquet").to_pandas()
    assert sorted(table.raw_user_id) == sorted([*map(str, range(1, 7)), *big])  # exact, not collided
    assert table.age.nunique() == 8


@pytest.mark.parametrize("value", [BIG, "18446744073709551615", "-9223372036854775809"])
@pytest.mark.parametrize("spec, column", [(ALICCP, "205"), (ALICCP, "206"), (ALIEXPRESS, "search_id"),
                                          (ALIEXPRESS, "categorical_3")], ids=["ccp-item", "ccp-attr",
                                                                                "ax-search", "ax-sparse"])
def test_ids_beyond_int64_are_refused_in_csv_mtl(tmp_path: Path, spec, column: str, value: str) -> None:
    src, train = _csv_mtl(tmp_path, spec, _set_cell(column, value))
    fmt = "aliccp" if spec is ALICCP else "aliexpress"
    _refused(fmt, src, tmp_path, needles=(f"{train}: column '{column}'", f"'{value}' at data row 2",
                                          "beyond the int64 range"))


def test_ids_beyond_int64_are_refused_in_rechorus(tmp_path: Path) -> None:
    train = [[r[0], r[1], r[3]] for r in _inter_rows()] + [[BIG, "3", "500"], ["99999999999999999999998", "4", "501"]]
    _refused("rechorus", _rechorus(tmp_path, train=train), tmp_path,
             needles=("train.csv: column 'user_id'", "beyond the int64 range"))


def test_relation_id_beyond_int64_is_refused_in_rechorus(tmp_path: Path) -> None:
    meta = [[str(i), "0", f"[{i % 20 + 1}, {BIG}]" if i == 4 else "[1]"] for i in range(1, 21)]
    _refused("rechorus", _rechorus(tmp_path, meta=meta), tmp_path,
             needles=("item_meta.csv: column 'r_complement'", f"item '{BIG}' at data row 4"))


@pytest.mark.parametrize("cell", ["[1-2]", "[1, -]", "[" + "9" * 5000 + "]"])
def test_malformed_relation_list_is_refused_in_rechorus(tmp_path: Path, cell: str) -> None:
    meta = [[str(i), "0", cell if i == 2 else "[1]"] for i in range(1, 21)]
    _refused("rechorus", _rechorus(tmp_path, meta=meta), tmp_path,
             needles=("item_meta.csv: column 'r_complement'", "at data row 2"))


# ---------------------------------------------------------------------------------------------
# huge lines and values: short messages
# ---------------------------------------------------------------------------------------------
def test_huge_cell_in_recbole_is_a_short_error(tmp_path: Path) -> None:
    inter = _inter_rows()
    inter[2][1] = "9" * HUGE
    _refused("recbole", _recbole(tmp_path, inter=inter), tmp_path,
             needles=("x.inter: column 'item_id:token'", f"value of {HUGE:,} characters at data row 3"))


@pytest.mark.parametrize("column", ["206", "D508", "click"])
def test_huge_cell_in_aliccp_is_a_short_error(tmp_path: Path, column: str) -> None:
    src, train = _csv_mtl(tmp_path, ALICCP, _set_cell(column, "x" * HUGE))
    _refused("aliccp", src, tmp_path, needles=(f"{train}: column '{column}'", "characters at data row 2"))


@pytest.mark.parametrize("column", ["206", "D508"])
def test_long_unparsable_value_is_quoted_short(tmp_path: Path, column: str) -> None:
    src, train = _csv_mtl(tmp_path, ALICCP, _set_cell(column, "x" * 50_000))
    _refused("aliccp", src, tmp_path, needles=(f"{train}: column '{column}'", "unparsable value 'xxx",
                                               "(50,000 characters)"))


def test_line_with_a_huge_number_of_cells_is_a_short_error(tmp_path: Path) -> None:
    src, train = _csv_mtl(tmp_path, ALICCP, lambda lines: [*lines[:2], lines[2] + ",1" * 200_000, *lines[3:]])
    _refused("aliccp", src, tmp_path, needles=(str(train), "unparsable"))


def test_huge_header_cell_is_a_short_error(tmp_path: Path) -> None:
    header = ["user_id:token", "item_id:token", "rating:float", "y" * 5000 + ":token"]
    _refused("recbole", _recbole(tmp_path, inter_header=header), tmp_path, needles=("x.inter: header cell 'yyy", "(5,006 characters)"))


# ---------------------------------------------------------------------------------------------
# duplicate columns
# ---------------------------------------------------------------------------------------------
def test_duplicate_column_in_aliccp_is_refused(tmp_path: Path) -> None:
    src, train = _csv_mtl(tmp_path, ALICCP, lambda lines: [lines[0] + ",click", *[x + ",1" for x in lines[1:]]])
    _refused("aliccp", src, tmp_path, needles=(f"{train}: column 'click'", "named twice in the header"))


def test_duplicate_column_in_recbole_is_refused(tmp_path: Path) -> None:
    header = ["user_id:token", "item_id:token", "rating:float", "item_id:token"]
    _refused("recbole", _recbole(tmp_path, inter_header=header), tmp_path,
             needles=("x.inter: column 'item_id:token'", "named twice in the header"))


def test_same_name_with_two_types_in_recbole_is_refused(tmp_path: Path) -> None:
    header = ["user_id:token", "item_id:token", "timestamp:float", "timestamp:token"]
    _refused("recbole", _recbole(tmp_path, inter_header=header), tmp_path,
             needles=("x.inter: column 'timestamp'", "named twice in the header"))


def test_duplicate_column_in_rechorus_is_refused(tmp_path: Path) -> None:
    train = [[r[0], r[1], r[3], r[3]] for r in _inter_rows()]
    _refused("rechorus", _rechorus(tmp_path, train=train, header=["user_id", "item_id", "time", "time"]), tmp_path,
             needles=("train.csv: column 'time'", "named twice in the header"))


# ---------------------------------------------------------------------------------------------
# task rules
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["x=rating>=abc", "x=rating<abc", "x=rating>=nan"])
def test_task_rule_ordering_a_word_is_refused(tmp_path: Path, rule: str) -> None:
    _refused("recbole", _recbole(tmp_path), tmp_path, "--task", rule, needles=(f"--task '{rule}'", "number"))
    with pytest.raises(ConfigError):
        TaskRule.parse(rule)


def test_task_rule_comparing_numbers_with_a_word_is_refused(tmp_path: Path) -> None:
    _refused("recbole", _recbole(tmp_path), tmp_path, "--task", "x=rating==abc",
             needles=("x.inter: column 'rating'", "task rule 'x=rating==abc'", "numeric column"))


def test_task_rule_with_no_positive_in_train_is_refused(tmp_path: Path) -> None:
    _refused("recbole", _recbole(tmp_path), tmp_path, "--task", "x=rating>=40",
             needles=("x.inter: column 'rating'", "task rule 'x=rating>=40'", "no positive in the train split"))


def test_task_rule_comparing_words_still_works(tmp_path: Path) -> None:
    header = ["user_id:token", "item_id:token", "mood:token", "timestamp:float"]
    inter = [[u, i, "happy" if int(r) >= 3 else "sad", t] for u, i, r, t in _inter_rows()]
    out = _imported("recbole", _recbole(tmp_path, inter=inter, inter_header=header), tmp_path,
                    "--task", "glad=mood==happy")
    pos = pq.read_table(out / "train.parquet").to_pandas().query("click == 1")
    rows = pd.DataFrame(inter, columns=["u", "i", "mood", "t"]).astype({"u": int, "i": int, "t": int})
    merged = pos.merge(rows, left_on=["ts"], right_on=["t"])
    assert len(merged) == len(pos) and (merged.glad == (merged.mood == "happy")).all()


# ---------------------------------------------------------------------------------------------
# empty cells where an id or a side value belongs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("file", ["inter", "user"])
def test_empty_user_id_is_refused(tmp_path: Path, file: str) -> None:
    inter, users = _inter_rows(), [[str(u), str(20 + u)] for u in range(1, 7)]
    (inter if file == "inter" else users)[1][0] = ""
    _refused("recbole", _recbole(tmp_path, inter=inter, users=users), tmp_path,
             needles=(f"x.{file}: column 'user_id'", "empty id at data row 2"))


def test_empty_side_value_leaves_the_other_values_coded(tmp_path: Path) -> None:
    users = [[str(u), str(20 + u)] for u in range(1, 7)]
    users[2][1] = ""
    out = _imported("recbole", _recbole(tmp_path, users=users), tmp_path)
    table = pq.read_table(out / "users.parquet").to_pandas().set_index("raw_user_id")
    assert table.loc[3, "age"] == 0 and (table.drop(index=3).age > 0).all()
    assert table.drop(index=3).age.is_unique


# ---------------------------------------------------------------------------------------------
# an --out that cannot be written: refused before the sources are read
# ---------------------------------------------------------------------------------------------
def test_an_unwritable_out_is_refused_before_the_import(tmp_path: Path, monkeypatch) -> None:
    from rectune.data.importers.recbole import RecBoleImporter

    def never(self, src):
        raise AssertionError("the sources were read before --out was found unwritable")

    monkeypatch.setattr(RecBoleImporter, "build", never)
    src = _recbole(tmp_path)
    res = run_cli("data", "import", "recbole", src, "--out", "/proc/rectune-out")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "/proc/rectune-out: cannot be written in /proc" in res.stderr
    (tmp_path / "file").write_text("")
    res = run_cli("data", "import", "recbole", src, "--out", tmp_path / "file" / "out")
    assert res.exit_code == 2 and "is not a folder; expected a folder to write the dataset in" in res.stderr
