"""RecBole atomic files: ``.inter``, ``.user``, ``.item``, ``.kg``, ``.link``.

Tab-separated with typed headers (``name:token``, ``name:token_seq``, ``name:float``,
``name:float_seq``). Interactions are implicit feedback; tasks beyond ``click`` come from rules over
``.inter`` columns (``--task like=rating>=4``). Columns of ``.inter`` other than user, item and time
never become features: they describe the interaction and would leak its labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from rectune.data.importers import IMPORTERS
from rectune.data.importers.common import (
    TaskRule, Vocab, id_values, names, quoted, read_delimited, require_columns, require_ids, time_column,
)
from rectune.data.importers.implicit import CLICK, ImplicitImporter, Interactions, SideFeatures
from rectune.data.prepared import DatasetTables
from rectune.data.schema import Field
from rectune.errors import ConfigError, DataError

TYPES = ("token", "token_seq", "float", "float_seq")
TEXT_HINTS = ("title", "name", "text", "desc")


def read_atomic(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A RecBole atomic file as strings, with the type of each column from its header."""
    frame = read_delimited(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    types: dict[str, str] = {}
    renamed = {}
    for col in frame.columns:
        name, sep, typ = str(col).rpartition(":")
        if not sep or typ not in TYPES:
            raise DataError.at(path, f"header {quoted(col)}: expected 'name:type' with type one of {list(TYPES)}")
        if name in types:
            raise DataError.at(path, f"named twice in the header ('{name}:{types[name]}' and {quoted(col)}); "
                                     f"expected each column once", name)
        types[name] = typ
        renamed[col] = name
    return frame.rename(columns=renamed), types


def _seq_codes(column: pd.Series, where: Path, name: str) -> tuple[Vocab, list[list[int]]]:
    lists = [s.split() if isinstance(s, str) else [] for s in column]
    vocab = Vocab.fit([t for lst in lists for t in lst])
    codes = vocab.encode([t for lst in lists for t in lst])
    out, k = [], 0
    for lst in lists:
        out.append(codes[k : k + len(lst)].tolist())
        k += len(lst)
    if vocab.size == 1:
        raise DataError.at(where, "no tokens; expected space-separated tokens", name)
    return vocab, out


def side_features(
    frame: pd.DataFrame, types: dict[str, str], key: str, codes: np.ndarray, n_codes: int,
    side: str, where: Path, skip: tuple[str, ...] = (),
) -> tuple[SideFeatures, dict[str, pa.Array]]:
    """Fields of a .user or .item file, each as an array indexed by code."""
    fields: list[Field] = []
    values: dict[str, pa.Array] = {}
    for name, typ in types.items():
        if name == key or name in skip:
            continue
        col = frame[name]
        if typ == "token":
            given = (col != "").to_numpy()
            (tokens,) = id_values(col[given])  # an empty cell is no value (code 0), not a text token
            vocab = Vocab.fit(tokens)
            arr = np.zeros(n_codes, dtype=np.int32)
            arr[codes[given]] = vocab.encode(tokens)
            fields.append(Field(name, "sparse", side=side, vocab_size=vocab.size, values=vocab.json_values()))
            values[name] = pa.array(arr)
        elif typ == "token_seq":
            vocab, lists = _seq_codes(col, where, name)
            full: list[list[int]] = [[] for _ in range(n_codes)]
            for c, lst in zip(codes, lists):
                full[c] = lst
            max_len = max(1, max(len(x) for x in lists))
            fields.append(Field(name, "sequence", side=side, vocab_size=vocab.size, max_len=max_len,
                                values=vocab.json_values()))
            values[name] = pa.array(full, pa.list_(pa.int32()))
        elif typ == "float":
            num = pd.to_numeric(col.replace("", np.nan), errors="coerce")
            bad = num.isna() & (col != "")
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError.at(where, f"unparsable value {quoted(col.iloc[row])} at data row {row + 1}; "
                                          f"expected a number", name)
            fill = float(num.mean()) if num.notna().any() else 0.0
            arr = np.full(n_codes, fill, dtype=np.float32)
            arr[codes] = num.fillna(fill).to_numpy(dtype=np.float32)
            fields.append(Field(name, "dense", side=side))
            values[name] = pa.array(arr)
        # float_seq side fields are rare; they are skipped rather than guessed at
    return SideFeatures(fields, values), values


def kg_relations(
    link: pd.DataFrame, kg: pd.DataFrame, n_codes: int, max_neighbors: int, rng: np.random.Generator
) -> pa.Table:
    """Item -> item edges from a knowledge graph.

    Items A != B are related by r when both have a triple (e, r, t) with the same tail t; at most
    ``max_neighbors`` per (item, r), those sharing most tails first (ties broken at random);
    ``n_shared`` counts the shared tails. Triples linking two items directly give ``direct:<r>``.
    """
    ent2item = dict(zip(link["entity"], link["item"]))
    kg = kg[kg["head"].isin(ent2item)]
    heads = kg["head"].map(ent2item).to_numpy(np.int64)
    parts: list[pd.DataFrame] = []
    for rel, idx in pd.Series(np.arange(len(kg))).groupby(kg["relation"].to_numpy()).groups.items():
        idx = np.asarray(idx)
        tails, _ = pd.factorize(kg["tail"].to_numpy()[idx])
        m = sp.csr_matrix((np.ones(len(idx), np.float32), (heads[idx], tails)), shape=(n_codes, tails.max() + 1))
        m.data[:] = 1.0
        m.sum_duplicates()
        m.data[:] = 1.0
        c = (m @ m.T).tocoo()
        keep = c.row != c.col
        r, t, cnt = c.row[keep], c.col[keep], c.data[keep].astype(np.int32)
        if len(r):
            o = np.lexsort((rng.random(len(r)), -cnt, r))
            r, t, cnt = r[o], t[o], cnt[o]
            start = np.searchsorted(r, r, side="left")
            rank = np.arange(len(r)) - start
            sel = rank < max_neighbors
            parts.append(pd.DataFrame({"head_item_id": r[sel], "relation": rel, "tail_item_id": t[sel], "n_shared": cnt[sel]}))
        direct = kg["tail"].to_numpy()[idx]
        is_item = pd.Series(direct).isin(ent2item).to_numpy()
        if is_item.any():
            d = pd.DataFrame({
                "head_item_id": heads[idx][is_item],
                "relation": f"direct:{rel}",
                "tail_item_id": pd.Series(direct[is_item]).map(ent2item).to_numpy(np.int64),
                "n_shared": 0,
            })
            d = d[d.head_item_id != d.tail_item_id].drop_duplicates(["head_item_id", "tail_item_id"])
            parts.append(d)
    if not parts:
        return pa.table({"head_item_id": pa.array([], pa.int32()), "relation": pa.array([], pa.string()),
                         "tail_item_id": pa.array([], pa.int32()), "n_shared": pa.array([], pa.int16())})
    out = pd.concat(parts, ignore_index=True)
    return pa.table({
        "head_item_id": pa.array(out.head_item_id.to_numpy(np.int32)),
        "relation": pa.array(out.relation.astype(str).to_numpy(), pa.string()),
        "tail_item_id": pa.array(out.tail_item_id.to_numpy(np.int32)),
        "n_shared": pa.array(np.minimum(out.n_shared.to_numpy(), 32767).astype(np.int16)),
    })


def _find(src: Path, ext: str, required: bool) -> Path | None:
    hits = sorted(src.glob(f"*.{ext}"))
    if len(hits) > 1:
        raise DataError.at(src, f"several .{ext} files ({', '.join(h.name for h in hits)}); expected one")
    if not hits:
        if required:
            raise DataError.at(src, f"missing file: expected a RecBole .{ext} file in this folder")
        return None
    return hits[0]


@IMPORTERS.register("recbole")
@dataclass
class RecBoleImporter(ImplicitImporter):
    """RecBole atomic files (.inter, .user, .item, .kg, .link) in a folder."""

    task: tuple[str, ...] = field(default=(), metadata={
        "help": "extra binary task from an .inter column, NAME=COLUMN<op>VALUE (e.g. like=rating>=4); repeatable"})
    text_field: str = field(default="", metadata={
        "help": "token_seq column of .item that is the item's text (default: one named like title/name)"})
    user_field: str = field(default="user_id", metadata={"help": "user id column"})
    item_field: str = field(default="item_id", metadata={"help": "item id column"})
    time_field: str = field(default="timestamp", metadata={"help": "time column of .inter"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rules = [TaskRule.parse(t) for t in self.task]
        names = [r.task for r in self.rules]
        if CLICK in names or len(set(names)) != len(names):
            raise ConfigError(f"--task: task names must be distinct and not '{CLICK}' (the implicit task)")

    def build(self, src: Path) -> DatasetTables:
        if not src.is_dir():
            raise DataError.at(src, "not a folder; expected a folder of RecBole atomic files")
        rng = np.random.default_rng(self.seed)
        inter_path = _find(src, "inter", required=True)
        inter, itypes = read_atomic(inter_path)
        require_columns(inter, [self.user_field, self.item_field, self.time_field], inter_path)
        require_ids(inter, self.user_field, inter_path)
        require_ids(inter, self.item_field, inter_path)
        ts = time_column(inter, self.time_field, inter_path)
        labels = {r.task: r.apply(inter, inter_path) for r in self.rules}

        user_path, item_path = _find(src, "user", False), _find(src, "item", False)
        users_f, utypes = read_atomic(user_path) if user_path else (None, {})
        items_f, ityp = read_atomic(item_path) if item_path else (None, {})
        if users_f is not None:
            require_columns(users_f, [self.user_field], user_path)
            require_ids(users_f, self.user_field, user_path)
        if items_f is not None:
            require_columns(items_f, [self.item_field], item_path)
            require_ids(items_f, self.item_field, item_path)
        kg_path, link_path = _find(src, "kg", False), _find(src, "link", False)
        kg = link = None
        if kg_path is not None and link_path is not None:
            kg, _ = read_atomic(kg_path)
            link, _ = read_atomic(link_path)
            require_columns(kg, ["head_id", "relation_id", "tail_id"], kg_path)
            require_columns(link, [self.item_field, "entity_id"], link_path)

        # every file naming users (items) reads their ids alike: '12' is one id in all of them
        inter_users, *user_ids = id_values(
            inter[self.user_field], *([users_f[self.user_field]] if users_f is not None else []))
        inter_items, *item_ids = id_values(
            inter[self.item_field], *([items_f[self.item_field]] if items_f is not None else []),
            *([link[self.item_field]] if link is not None else []))
        uvocab = Vocab.fit(inter_users, *user_ids)
        ivocab = Vocab.fit(inter_items, *item_ids[: 1 if items_f is not None else 0])
        n_user_codes, n_item_codes = uvocab.size, ivocab.size

        # side tables
        text_name = None
        if items_f is not None:
            text_name = self._text_column(ityp, item_path)
            icodes = ivocab.encode(item_ids[0])
            item_side, _ = side_features(items_f, ityp, self.item_field, icodes, n_item_codes, "item",
                                         item_path, skip=(text_name,) if text_name else ())
        else:
            icodes = np.zeros(0, np.int32)
            item_side = SideFeatures([], {})
        if users_f is not None:
            ucodes = uvocab.encode(user_ids[0])
            user_side, _ = side_features(users_f, utypes, self.user_field, ucodes, n_user_codes, "user", user_path)
        else:
            user_side = SideFeatures([], {})

        interactions = Interactions(
            users=uvocab.encode(inter_users), items=ivocab.encode(inter_items),
            ts=ts, labels=labels,
        )
        splits = self.rows(interactions, n_item_codes, user_side, item_side)
        for r in self.rules:
            if pc.sum(splits["train"][r.task]).as_py() in (0, None):
                raise DataError.at(
                    inter_path, f"task rule '{r.text}' gives no positive in the train split "
                    f"({int(labels[r.task].sum()):,} of {len(inter):,} interactions overall); expected some", r.column)

        # items.parquet / users.parquet
        all_items = np.arange(1, n_item_codes, dtype=np.int32)
        icols: dict[str, pa.Array] = {"item_id": pa.array(all_items),
                                      "raw_item_id": pa.array(ivocab.json_values())}
        for f in item_side.fields:
            icols[f.name] = item_side.values[f.name].take(pa.array(all_items))
        fields_text: list[Field] = []
        if text_name is not None:
            text = np.full(n_item_codes, "", dtype=object)
            text[icodes] = items_f[text_name].astype(str).to_numpy()
            icols["title"] = pa.array(text[1:].tolist(), pa.string())
            fields_text = [Field("title", "text", side="item")]
        all_users = np.arange(1, n_user_codes, dtype=np.int32)
        ucols: dict[str, pa.Array] = {"user_id": pa.array(all_users), "raw_user_id": pa.array(uvocab.json_values())}
        for f in user_side.fields:
            ucols[f.name] = user_side.values[f.name].take(pa.array(all_users))

        relations = None
        if kg is not None and link is not None:
            lk = pd.DataFrame({"item": ivocab.encode(item_ids[-1]), "entity": link["entity_id"]})
            lk = lk[lk.item > 0].drop_duplicates("entity")
            icols["entity_id"] = pa.array(
                pd.Series(lk.entity.to_numpy(), index=lk.item.to_numpy()).groupby(level=0).first()
                .reindex(all_items).fillna("").astype(str).tolist(), pa.string())
            relations = kg_relations(
                lk, kg.rename(columns={"head_id": "head", "relation_id": "relation", "tail_id": "tail"}),
                n_item_codes, self.max_neighbors, rng)

        rules = ", ".join(f"{r.task}=({r.column}{r.op}{r.value:g})" if isinstance(r.value, float)
                          else f"{r.task}=({r.column}{r.op}{r.value})" for r in self.rules)
        schema = self.schema(
            src, "RecBole", [CLICK, *labels], n_user_codes, n_item_codes,
            [*user_side.fields, *item_side.fields, *fields_text],
            tasks_text=f"tasks from .inter columns: {rules or 'click only'}",
            relations_text=(f"items sharing a KG tail entity through the same relation (at most "
                            f"{self.max_neighbors} per item and relation, most shared tails first), plus "
                            f"direct:<r> for triples linking two items."),
            options={"task": list(self.task), "text_field": self.text_field},
        )
        return DatasetTables(schema, splits, pa.table(icols), pa.table(ucols) if users_f is not None else None,
                             relations)

    def _text_column(self, types: dict[str, str], where: Path) -> str | None:
        if self.text_field:
            if self.text_field not in types:
                raise DataError.at(where, f"missing column for --text-field; columns are {names(types)}", self.text_field)
            return self.text_field
        for name, typ in types.items():
            if typ in ("token_seq", "token") and any(h in name.lower() for h in TEXT_HINTS) and name != self.item_field:
                return name
        return None
