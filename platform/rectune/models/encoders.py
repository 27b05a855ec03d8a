"""Encoders per modality. Each turns part of a batch into tokens of width ``d`` (``[B, T, d]``).

- :class:`FieldEmbeddings` — every sparse and sequence field; fields that share a vocabulary
  (``hist_items`` shares ``item_id``'s) share one table. All tables live in one ``nn.Embedding``
  with an offset per vocabulary, so a batch needs one look-up. Code 0 (unknown/masked) has its
  own learned row; in sequences 0 is padding and is masked out. ``set_rare`` makes the sparse
  look-ups (not the sequences', nor the graph's) embed rare ids as the unknown id.
- :class:`HistoryPooling` — a behaviour history pooled into one token: masked mean, or DIN-style
  attention against the target item; optionally after a recency embedding and
  :class:`SelfAttentionLayer` s over the history (BST / SASRec-style).
- :class:`DenseTokens` — each standardised dense feature ``x`` becomes ``x · v + b``.
- :class:`TextProjection` — the item's frozen sentence embedding, projected to ``text_dim`` then to ``d``.
- :class:`GraphAggregation` — the item's neighbours in the knowledge graph, per relation, pooled by
  mean or by attention against the item, then over relations.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rectune.data.schema import Schema


class FieldEmbeddings(nn.Module):
    def __init__(self, schema: Schema, fields: list[str], dim: int):
        super().__init__()
        self.dim = dim
        self.fields = list(fields)
        offsets: dict[str, int] = {}
        total = 0
        for name in self.fields:
            f = schema.field(name)
            group = f.shares_vocab_with or name
            if group not in offsets:
                size = f.vocab_size if group == name else schema.field(group).vocab_size
                offsets[group] = total
                total += int(size)
            offsets[name] = offsets[group]
        self.offsets = offsets
        self.table = nn.Embedding(max(total, 1), dim)
        nn.init.normal_(self.table.weight, std=1e-2)
        self.register_buffer("sparse_rows", None)

    def set_rare(self, rare: dict[str, np.ndarray]) -> None:
        """``rare``: per field, codes that :meth:`lookup_many` embeds as 0 (a buffer ``sparse_rows``,
        saved with the checkpoint: row of the table per (offset + code))."""
        rows = torch.arange(self.table.num_embeddings)
        for name, codes in rare.items():
            off = self.offsets[name]
            rows[off + torch.as_tensor(codes, dtype=torch.long)] = off
        self.register_buffer("sparse_rows", rows)

    def lookup(self, name: str, codes: torch.Tensor) -> torch.Tensor:
        return self.table(codes.long() + self.offsets[name])

    def lookup_many(self, names: list[str], codes: torch.Tensor) -> torch.Tensor:
        """``codes`` ``[B, len(names)]`` -> ``[B, len(names), d]`` in one look-up."""
        off = torch.tensor([self.offsets[n] for n in names], device=codes.device)
        rows = codes.long() + off
        if self.sparse_rows is not None:
            rows = self.sparse_rows[rows]
        return self.table(rows)


class SelfAttentionLayer(nn.Module):
    """One pre-norm Transformer encoder layer over a padded sequence: every real item attends to the
    sequence's real items (padding gets a large negative score, not -inf, so a row with an empty
    history stays finite; its outputs are masked out by the pooling)."""

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        bias = torch.zeros(b, 1, 1, n, dtype=x.dtype, device=x.device).masked_fill(~mask[:, None, None, :], -1e4)
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ff(self.norm2(x)))


class HistoryPooling(nn.Module):
    def __init__(self, dim: int, mode: str, positions: int = 0, layers: int = 0, dropout: float = 0.0):
        """``positions`` > 0: a learned embedding per slot of a right-aligned history of that length
        (slot ``L-1`` is the most recent item), added to the items. ``layers`` self-attention layers
        then let each item see the rest of the history before the pooling."""
        super().__init__()
        self.mode = mode
        if mode == "attention":
            self.score = nn.Sequential(nn.Linear(4 * dim, 36), nn.PReLU(), nn.Linear(36, 1))
        self.position = nn.Parameter(torch.zeros(positions, dim)) if positions else None
        self.layers = nn.ModuleList(SelfAttentionLayer(dim, dropout=dropout) for _ in range(layers))

    def forward(self, seq_emb: torch.Tensor, mask: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """``seq_emb`` ``[B, L, d]``, ``mask`` ``[B, L]`` (True = real id), ``target`` ``[B, d]``."""
        if self.position is not None:
            seq_emb = seq_emb + self.position
        for layer in self.layers:
            seq_emb = layer(seq_emb, mask)
        m = mask.unsqueeze(-1).to(seq_emb.dtype)
        if self.mode == "mean" or target is None:
            return (seq_emb * m).sum(1) / m.sum(1).clamp_min(1.0)
        t = target.unsqueeze(1).expand_as(seq_emb)
        s = self.score(torch.cat([seq_emb, t, seq_emb * t, seq_emb - t], dim=-1)).squeeze(-1)
        s = s.masked_fill(~mask, -1e4)
        w = torch.softmax(s, dim=1) * mask.to(s.dtype)
        return (seq_emb * w.unsqueeze(-1)).sum(1)


class DenseTokens(nn.Module):
    def __init__(self, means: list[float], stds: list[float], dim: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(means, dtype=torch.float32))
        self.register_buffer("std", torch.tensor([s if s > 0 else 1.0 for s in stds], dtype=torch.float32))
        self.v = nn.Parameter(torch.randn(len(means), dim) * 0.1)
        self.b = nn.Parameter(torch.zeros(len(means), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x - self.mean) / self.std).clamp(-10, 10)
        return z.unsqueeze(-1) * self.v + self.b


class TextProjection(nn.Module):
    """Frozen item-text embeddings (a buffer: saved with the checkpoint, never trained)."""

    def __init__(self, vectors: np.ndarray, text_dim: int, dim: int):
        super().__init__()
        self.register_buffer("vectors", torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)))
        self.proj = nn.Sequential(nn.Linear(vectors.shape[1], text_dim), nn.ReLU(), nn.Linear(text_dim, dim))

    def many(self, *items: torch.Tensor) -> list[torch.Tensor]:
        """Each tensor of item ids (any shape) -> ``[*shape, d]``. Where they look up more items than
        the catalogue holds (a history), the catalogue is projected once and looked up; otherwise
        only the items asked for are projected."""
        if sum(i.numel() for i in items) > self.vectors.shape[0]:
            catalogue = self.proj(self.vectors)
            return [catalogue[i.long()] for i in items]
        return [self.proj(self.vectors[i.long()]) for i in items]

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.many(items)[0]


class GraphAggregation(nn.Module):
    """``neighbors`` ``int[R, n_items, K]`` (0 = none): the item's neighbours per relation."""

    def __init__(self, neighbors: np.ndarray, dim: int, mode: str):
        super().__init__()
        self.mode = mode
        self.register_buffer("neighbors", torch.from_numpy(np.ascontiguousarray(neighbors, dtype=np.int64)))
        r = neighbors.shape[0]
        self.relation = nn.Parameter(torch.randn(r, dim) * 0.1)
        self.out = nn.Linear(dim, dim)

    def forward(self, items: torch.Tensor, item_emb: torch.Tensor, embed) -> torch.Tensor:
        """``embed(codes)`` looks item codes up in the (shared) item table; -> ``[B, d]``."""
        nb = self.neighbors[:, items.long()].permute(1, 0, 2)  # [B, R, K]
        mask = nb > 0
        e = embed(nb)  # [B, R, K, d]
        m = mask.unsqueeze(-1).to(e.dtype)
        if self.mode == "attention":
            query = (item_emb.unsqueeze(1) + self.relation.unsqueeze(0)).unsqueeze(2)  # [B, R, 1, d]
            s = (e * query).sum(-1) / e.shape[-1] ** 0.5
            s = s.masked_fill(~mask, -1e4)
            w = torch.softmax(s.flatten(1), dim=1).view_as(s) * mask.to(s.dtype)
            pooled = (e * w.unsqueeze(-1)).sum((1, 2))
        else:
            per_rel = (e * m).sum(2) / m.sum(2).clamp_min(1.0)  # [B, R, d]
            has = mask.any(-1, keepdim=True).to(e.dtype)  # [B, R, 1]
            pooled = (per_rel * has).sum(1) / has.sum(1).clamp_min(1.0)
        return self.out(pooled)


def neighbor_table(relations, n_items: int, names: list[str], k: int) -> tuple[np.ndarray, list[str]]:
    """``int[R, n_items, k]`` from relations.parquet: the first ``k`` tails per (head, relation)
    in file order (the importers write them best first)."""
    import pyarrow.compute as pc

    available = sorted(set(pc.unique(relations.column("relation")).to_pylist()))
    names = names or available
    head = relations.column("head_item_id").to_numpy().astype(np.int64)
    tail = relations.column("tail_item_id").to_numpy().astype(np.int64)
    rel = relations.column("relation").to_numpy(zero_copy_only=False)
    out = np.zeros((len(names), n_items, k), np.int64)
    for r, name in enumerate(names):
        sel = rel == name
        h, t = head[sel], tail[sel]
        order = np.argsort(h, kind="stable")
        h, t = h[order], t[order]
        start = np.searchsorted(h, h, side="left")
        pos = np.arange(len(h)) - start
        keep = (pos < k) & (h < n_items) & (t < n_items)
        out[r, h[keep], pos[keep]] = t[keep]
    return out, names


def pretrain_transe(neighbors: np.ndarray, n_items: int, dim: int, epochs: int, seed: int,
                    margin: float = 1.0, batch: int = 4096) -> np.ndarray:
    """TransE over the item graph (``h + r ≈ t``, margin loss, one corrupted tail per triple);
    returns item vectors ``[n_items, dim]`` to initialise the item embedding table."""
    g = torch.Generator().manual_seed(seed)
    r_idx, h, slot = np.nonzero(neighbors)
    t = neighbors[r_idx, h, slot]
    triples = torch.from_numpy(np.stack([h, r_idx, t], 1).astype(np.int64))
    ent = nn.Embedding(n_items, dim)
    rel = nn.Embedding(neighbors.shape[0], dim)
    nn.init.uniform_(ent.weight, -6 / dim ** 0.5, 6 / dim ** 0.5, generator=g)
    nn.init.uniform_(rel.weight, -6 / dim ** 0.5, 6 / dim ** 0.5, generator=g)
    opt = torch.optim.Adam(list(ent.parameters()) + list(rel.parameters()), lr=1e-2)
    for _ in range(epochs):
        perm = torch.randperm(len(triples), generator=g)
        for s in range(0, len(triples), batch):
            b = triples[perm[s:s + batch]]
            corrupt = torch.randint(1, n_items, (len(b),), generator=g)
            with torch.no_grad():
                ent.weight.data = nn.functional.normalize(ent.weight.data, dim=1)
            hv, rv = ent(b[:, 0]), rel(b[:, 1])
            pos = (hv + rv - ent(b[:, 2])).norm(dim=1)
            neg = (hv + rv - ent(corrupt)).norm(dim=1)
            loss = torch.relu(margin + pos - neg).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return nn.functional.normalize(ent.weight.detach(), dim=1).numpy() * 1e-1
