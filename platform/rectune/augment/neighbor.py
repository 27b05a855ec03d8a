"""``neighbor``: substitute a sample's item by one of its neighbours, labels kept.

Neighbours come from the item graph (``relations.parquet``, optionally some relations only) or
from the nearest items in item-text embedding space (``text_emb``, cosine, top ``k``). The item's
attribute fields in the row (brand, category, price ...) follow the substitute, from items.parquet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rectune.augment import Augmenter, register
from rectune.batches import Batch
from rectune.config import Params as ParamsBase
from rectune.config import param
from rectune.data.schema import TEXT_EMB_COLUMN
from rectune.errors import ConfigError


@register
class Neighbor(Augmenter):
    name = "neighbor"

    @dataclass
    class Params(ParamsBase):
        rate: float = param(0.0, "share of samples whose item is substituted (0 = off)", low=0.0, high=1.0)
        source: str = param("graph", "graph (relations.parquet) or text (nearest text embeddings)",
                            choices=("graph", "text"))
        relations: list[str] = param(None, "graph relations to use (empty = all)", default_factory=list)
        k: int = param(10, "text neighbours per item", low=1, high=1000)

    @classmethod
    def enabled(cls, params) -> bool:
        return params.rate > 0

    def __init__(self, params, context):
        super().__init__(params, context)
        schema = context.schema
        if schema.item_field is None:
            raise ConfigError(f"{self.key('rate')}: the dataset '{schema.name}' has no item field to substitute")
        self.item = schema.item_field
        self.n_codes = schema.field(self.item).vocab_size
        if params.source == "graph":
            self.indptr, self.indices = context.cached(
                f"graph:{sorted(params.relations)}", lambda: self._graph(context, params.relations))
        else:
            self.indptr, self.indices = context.cached(f"text:{params.k}", lambda: self._text(context, params.k))
        self.attributes = context.cached("item_attributes", context.dataset.item_attributes)

    def _graph(self, context, relations):
        rel = context.dataset.relations()
        if rel is None or rel.num_rows == 0:
            raise ConfigError(f"{self.key('source')}: 'graph' needs relations.parquet, and dataset "
                              f"'{context.schema.name}' has none (use source=text or another dataset)")
        names = pc.unique(rel.column("relation")).to_pylist()
        if relations:
            for r in relations:
                if r not in names:
                    raise ConfigError(f"{self.key('relations')}: unknown relation '{r}'; the dataset has {sorted(names)}")
            rel = rel.filter(pc.is_in(rel.column("relation"), value_set=pa.array(relations)))
        head = rel.column("head_item_id").to_numpy().astype(np.int64)
        tail = rel.column("tail_item_id").to_numpy().astype(np.int32)
        return _csr(head, tail, self.n_codes)

    def _text(self, context, k):
        items = context.dataset.items()
        if TEXT_EMB_COLUMN not in items.column_names:
            raise ConfigError(f"{self.key('source')}: 'text' needs item-text embeddings; run "
                              f"`rectune data embed-text {context.dataset.path}` first")
        ids = items.column("item_id").to_numpy().astype(np.int64)
        emb = np.stack(items.column(TEXT_EMB_COLUMN).to_numpy(zero_copy_only=False)).astype(np.float32)
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb / np.where(norm > 0, norm, 1)
        k = min(k, len(ids) - 1)
        heads, tails = [], []
        for s in range(0, len(ids), 2048):  # chunks keep the similarity matrix small
            sim = emb[s:s + 2048] @ emb.T
            sim[np.arange(sim.shape[0]), np.arange(s, s + sim.shape[0])] = -np.inf  # not itself
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            ok = np.isfinite(np.take_along_axis(sim, top, axis=1)) & (norm[s:s + 2048] > 0)
            heads.append(np.repeat(ids[s:s + sim.shape[0]], k)[ok.ravel()])
            tails.append(ids[top.ravel()][ok.ravel()])
        return _csr(np.concatenate(heads), np.concatenate(tails).astype(np.int32), self.n_codes)

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        items = batch[self.item]
        n = len(items)
        degree = self.indptr[items + 1] - self.indptr[items]
        chosen = (rng.random(n) < self.params.rate) & (degree > 0)
        if not chosen.any():
            return batch
        out = dict(batch)
        pick = self.indptr[items[chosen]] + (rng.random(int(chosen.sum())) * degree[chosen]).astype(np.int64)
        new_items = items.copy()
        new_items[chosen] = self.indices[pick]
        out[self.item] = new_items
        for name, table in self.attributes.items():
            if name in batch:
                col = batch[name].copy()
                col[chosen] = table[new_items[chosen]]
                out[name] = col
        return out


def _csr(head: np.ndarray, tail: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((tail, head))
    head, tail = head[order], tail[order]
    indptr = np.zeros(n_codes + 1, np.int64)
    np.add.at(indptr, head + 1, 1)
    return np.cumsum(indptr), tail
