"""The fused multi-task model, assembled from a dataset's schema and a :class:`RunConfig`.

::

    batch ─▶ encoders (one per modality) ─▶ tokens [B, T, d] ─▶ fusion ─▶ [B, F]
          ─▶ multi-task architecture ─▶ one logit per task

``embed`` (batch -> tokens) and ``head`` (tokens -> logits) are separate so that the training
step can perturb the tokens (the embedding outputs) adversarially and take gradients at them.

Modalities: ``user`` / ``item`` / ``context`` (sparse ids and dense features by the schema's side),
``behaviour`` (each sequence field pooled), ``text`` (the item's sentence embedding, projected),
``kg`` (the item's neighbours in the knowledge graph).

Label columns never reach the features: the schema refuses a field named like a task, the
``model.features`` list refuses tasks and meta columns, and :func:`check_no_leak` refuses a
feature that reproduces a label on the training rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rectune.batches import ITEM_KEY
from rectune.config import Params, param
from rectune.data.prepared import PreparedDataset
from rectune.data.schema import TEXT_EMB_COLUMN, Schema
from rectune.errors import ConfigError
from rectune.models.encoders import (DenseTokens, FieldEmbeddings, GraphAggregation, HistoryPooling,
                                     TextProjection, neighbor_table, pretrain_transe)
from rectune.models.fusion import FUSIONS
from rectune.models.mtl import ARCHITECTURES, LayerSpec
from rectune.models.weighting import WEIGHTINGS


@dataclass
class ModelParams(Params):
    emb_dim: int = param(16, "width of every embedding and token", low=2, high=512)
    hidden: list[int] = param(None, "hidden layers of the shared bottom / each expert",
                              low=1, high=8192, default_factory=lambda: [128, 64])
    tower: list[int] = param(None, "hidden layers of each task tower", low=1, high=8192, default_factory=lambda: [32])
    dropout: float = param(0.0, "dropout after each hidden layer", low=0.0, high=0.9)
    norm: str = param("batch", "normalisation after each hidden linear layer: none, batch (BatchNorm, as "
                      "torch-rechub's MLPs) or layer (LayerNorm)", choices=("none", "batch", "layer"))
    history: str = param("mean", "pooling of the behaviour history: none, mean, or attention (DIN-style, "
                         "against the target item)", choices=("none", "mean", "attention"))
    text_dim: int = param(0, "projection width of the item-text embedding (0 = text not used)", low=0, high=1024)
    history_text: bool = param(False, "the behaviour history's items carry their text too, as the target item "
                               "does (needs model.text_dim > 0 and a history of item ids)")
    history_position: bool = param(False, "a learned embedding of each history slot's recency (most recent last) "
                                   "added to the history's items before pooling")
    history_layers: int = param(0, "self-attention layers over the behaviour history before pooling (BST / "
                                "SASRec-style; 0 = none)", low=0, high=8)
    history_attributes: bool = param(False, "the behaviour history's items carry their item-side attributes "
                                     "(genre, brand, category ... from items.parquet) embedded with the target's "
                                     "attribute tables, as DIN's category history (needs a history of item ids and "
                                     "an item-side sparse field among the features)")
    features: list[str] = param(None, "row fields used as features (empty = all)", default_factory=list)
    min_id_count: int = param(0, "a sparse id seen in fewer training rows than this is embedded as the unknown "
                              "id (0); the item's text and graph still use its own id (0 = off; 1 = ids never "
                              "seen in training; FuxiCTR's min_categr_count)", low=0, high=1_000_000_000)


@dataclass
class KGParams(Params):
    relations: list[str] = param(None, "relations of the item graph to aggregate (empty = all)", default_factory=list)
    neighbors: int = param(10, "neighbours per item and relation", low=1, high=200)
    pretrain: int = param(0, "epochs of TransE pretraining of the item embeddings on the graph (0 = none)",
                          low=0, high=100)


def feature_fields(schema: Schema, names: list[str]) -> list[str]:
    rows = [f.name for f in schema.row_fields]
    for n in names:
        if n in schema.tasks:
            raise ConfigError(f"model.features: '{n}' is a task label of dataset '{schema.name}' and can never be a "
                              f"feature")
        if n in schema.meta_columns:
            raise ConfigError(f"model.features: '{n}' is a meta column of dataset '{schema.name}', not a feature; "
                              f"fields: {', '.join(rows)}")
        if n not in rows:
            raise ConfigError(f"model.features: no field '{n}' in dataset '{schema.name}'; fields: {', '.join(rows)}")
    return list(names) or rows


def check_no_leak(ds: PreparedDataset, features: list[str], sample: int = 50_000) -> None:
    """Refuse a low-cardinality feature that reproduces a task label on (almost) every training row."""
    schema = ds.schema
    cols = [n for n in features if schema.field(n).kind in ("sparse", "dense")]
    table = ds.read_split("train", columns=cols + list(schema.tasks)).slice(0, sample)
    for task in schema.tasks:
        y = table.column(task).to_numpy().astype(np.int64)
        if y.min() == y.max():
            continue
        for name in cols:
            x = table.column(name).to_numpy()
            values, codes = np.unique(x, return_inverse=True)
            if len(values) > 16:
                continue
            pos = np.bincount(codes, weights=y, minlength=len(values))
            cnt = np.bincount(codes, minlength=len(values))
            purity = np.maximum(pos, cnt - pos).sum() / len(y)
            if purity >= 0.999:
                raise ConfigError(f"model.features: field '{name}' reproduces the label '{task}' on {purity:.1%} of "
                                  f"the training rows of '{schema.name}' (a leak); leave it out with model.features")


def item_histories(schema: Schema, names: list[str]) -> list[str]:
    """The sequence fields among ``names`` that hold item ids (they share the item field's vocabulary)."""
    return [n for n in names if schema.field(n).kind == "sequence" and schema.item_field is not None
            and schema.field(n).shares_vocab_with == schema.item_field]


def schema_fingerprint(schema: Schema) -> str:
    """What a checkpoint must match: tasks and the fields' names, kinds and vocabularies."""
    spec = {"tasks": schema.tasks, "fields": [[f.name, f.kind, f.vocab_size, f.max_len] for f in schema.row_fields]}
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


class FusedModel(nn.Module):
    def __init__(self, schema: Schema, config, side: dict):
        super().__init__()
        mp: ModelParams = config.params("model", ModelParams)
        d = mp.emb_dim
        self.tasks = list(schema.tasks)
        feats = side["features"]
        fields = {f.name: f for f in schema.row_fields if f.name in feats}
        self.sparse = [n for n, f in fields.items() if f.kind == "sparse"]
        self.sequences = [n for n, f in fields.items() if f.kind == "sequence"] if mp.history != "none" else []
        self.dense = [n for n, f in fields.items() if f.kind == "dense"]
        self.item = schema.item_field if schema.item_field in fields else None
        # columns the metrics need (GAUC per user, cold items), whether or not they are features
        self.user_column, self.item_column = schema.user_field, schema.item_field
        self.embeddings = FieldEmbeddings(schema, self.sparse + self.sequences, d)
        if side.get("rare_ids"):
            self.embeddings.set_rare(side["rare_ids"])
        if side.get("item_init") is not None and self.item:
            init = torch.from_numpy(side["item_init"])
            off = self.embeddings.offsets[self.item]
            with torch.no_grad():
                self.embeddings.table.weight[off:off + len(init)] = init
        modalities = [fields[n].side for n in self.sparse]
        self.pool = nn.ModuleDict({n: HistoryPooling(d, mp.history, fields[n].max_len if mp.history_position else 0,
                                                     mp.history_layers, mp.dropout)
                                   for n in self.sequences})
        modalities += ["behaviour"] * len(self.sequences)
        self.dense_tokens = None
        if self.dense:
            stats = [fields[n].stats or {} for n in self.dense]
            self.dense_tokens = DenseTokens([s.get("mean", 0.0) for s in stats], [s.get("std", 1.0) for s in stats], d)
            modalities += [fields[n].side for n in self.dense]
        self.text = None
        if side.get("text") is not None:
            self.text = TextProjection(side["text"], mp.text_dim, d)
            modalities.append("text")
        self.graph = None
        if side.get("neighbors") is not None:
            self.graph = GraphAggregation(side["neighbors"], d, config["model.kg"])
            modalities.append("kg")
        self.modalities = modalities
        # histories of item ids whose items also carry their text (model.history_text)
        self.text_sequences = (set(item_histories(schema, self.sequences))
                               if mp.history_text and self.text is not None else set())
        # histories of item ids whose items also carry their attributes (model.history_attributes):
        # attr_codes[item] holds each attribute's code, looked up in the attribute's own table
        attrs = side.get("history_attributes") or {}
        self.attr_names = [n for n in self.sparse if n in attrs]
        self.attr_sequences = set(item_histories(schema, self.sequences)) if self.attr_names else set()
        self.attr_index = [self.sparse.index(n) for n in self.attr_names]
        if self.attr_names:
            self.register_buffer("attr_codes", torch.from_numpy(
                np.stack([attrs[n] for n in self.attr_names], axis=1).astype(np.int64)))
        fusion_cls = FUSIONS.get(config["model.fusion"], "model.fusion")
        self.fusion = fusion_cls(config.params("model.fusion", fusion_cls.Params), len(modalities), d, modalities)
        arch_cls = ARCHITECTURES.get(config["model.mtl"], "model.mtl")
        self.mtl = arch_cls(config.params("model.mtl", arch_cls.Params), self.fusion.out_dim, self.tasks,
                            mp.hidden, mp.tower, LayerSpec(mp.dropout, mp.norm), dict(schema.task_parents))
        w_cls = WEIGHTINGS.get(config["loss.weighting"], "loss.weighting")
        weights = config.task_weights(self.tasks)
        self.weighting = w_cls(config.params("loss.weighting", w_cls.Params), [weights[t] for t in self.tasks])

    # ---- forward -----------------------------------------------------------------------------
    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        item_emb = None
        if self.sparse:
            codes = torch.stack([batch[n] for n in self.sparse], dim=1)
            sp = self.embeddings.lookup_many(self.sparse, codes)
            parts.append(sp)
            if self.item:
                item_emb = sp[:, self.sparse.index(self.item)]
        # the item's own id (a masked row keeps it in ITEM_KEY): its text and graph describe it
        key = batch.get(ITEM_KEY, batch[self.item]) if self.item else None
        # the item's text and, with model.history_text, its histories' texts: one look-up
        text, seq_text = None, {}
        if self.text is not None:
            names = sorted(self.text_sequences)
            text, *rest = self.text.many(key, *[batch[n] for n in names])
            seq_text = dict(zip(names, rest))
        for n in self.sequences:
            seq = batch[n]
            emb = self.embeddings.lookup(n, seq)
            target = item_emb
            if n in self.text_sequences:
                emb = emb + seq_text[n]
                target = target + text  # the item is a feature: side_data checks it for the text
            if n in self.attr_sequences:
                emb = emb + self._attributes(seq)
                if target is not None:  # the target item's own attributes, from the row
                    target = target + sp[:, self.attr_index].sum(1)
            parts.append(self.pool[n](emb, seq > 0, target).unsqueeze(1))
        if self.dense_tokens is not None:
            x = torch.stack([batch[n].float() for n in self.dense], dim=1)
            parts.append(self.dense_tokens(x))
        if text is not None:
            parts.append(text.unsqueeze(1))
        if self.graph is not None:
            parts.append(self.graph(key, item_emb,
                                    lambda c: self.embeddings.lookup(self.item, c)).unsqueeze(1))
        return torch.cat(parts, dim=1)

    def _attributes(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq`` ``[B, L]`` item codes -> the sum of their attributes' embeddings ``[B, L, d]``
        (padding, code 0, has the unknown attributes: the pooling never reads it)."""
        codes = self.attr_codes[seq.long()]
        b, length, a = codes.shape
        return self.embeddings.lookup_many(self.attr_names, codes.view(-1, a)).view(b, length, a, -1).sum(2)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mtl(self.fusion(tokens))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.embed(batch))

    def input_columns(self) -> list[str]:
        return self.sparse + self.sequences + self.dense


def side_data(ds: PreparedDataset, config, seed: int = 0) -> dict:
    """The dataset-side inputs the model needs (feature list, text vectors, neighbour tables,
    TransE initialisation), read once on the driver; checks every dataset-dependent setting."""
    schema = ds.schema
    mp: ModelParams = config.params("model", ModelParams)
    features = feature_fields(schema, mp.features)
    check_no_leak(ds, features)
    config.task_weights(schema.tasks)
    from rectune.errors import ConfigError
    from rectune.train.metrics import WEIGHTED, check_metric, metric_weights

    check_metric("train.metric", config["train.metric"], schema.tasks)
    weights = metric_weights(config, schema.tasks)
    if config["train.metric"].startswith(WEIGHTED) and not weights:
        raise ConfigError(f"train.metric: '{config['train.metric']}' needs train.metric_weights (metric:weight items)")
    out: dict = {"features": features}
    needs_item = mp.text_dim > 0 or config["model.kg"] != "none"
    if needs_item and (schema.item_field is None or schema.item_field not in features):
        key = "model.text_dim" if mp.text_dim > 0 else "model.kg"
        raise ConfigError(f"{key}: needs the item field among the features, and dataset '{schema.name}' "
                          f"{'has none' if schema.item_field is None else 'leaves it out'}")
    if mp.history_text and mp.text_dim == 0:
        raise ConfigError("model.history_text: needs the item text (model.text_dim > 0)")
    for key, on in (("model.history_text", mp.history_text), ("model.history_attributes", mp.history_attributes)):
        if on and not item_histories(schema, features):
            raise ConfigError(f"{key}: dataset '{schema.name}' has no history of item ids among the features")
    if mp.history_attributes:
        attrs = [n for n in features if schema.field(n).side == "item" and schema.field(n).kind == "sparse"
                 and n != schema.item_field]
        if not attrs:
            raise ConfigError(f"model.history_attributes: no item-side sparse field besides the item id among the "
                              f"features of dataset '{schema.name}'")
        table = ds.item_attributes()
        out["history_attributes"] = {n: table[n] for n in attrs}
    for key, on in (("model.history_text", mp.history_text), ("model.history_position", mp.history_position),
                    ("model.history_layers", mp.history_layers > 0),
                    ("model.history_attributes", mp.history_attributes)):
        if on and mp.history == "none":
            raise ConfigError(f"{key}: needs the history pooled (model.history mean or attention), not none")
    n_items = schema.field(schema.item_field).vocab_size if schema.item_field else 0
    if mp.min_id_count > 0:
        out["rare_ids"] = rare_ids(ds, [f for f in features if schema.field(f).kind == "sparse"], mp.min_id_count)
    if mp.text_dim > 0:
        items = ds.items()
        if TEXT_EMB_COLUMN not in items.column_names:
            raise ConfigError(f"model.text_dim: needs item-text embeddings; run `rectune data embed-text {ds.path}` "
                              f"first (or set model.text_dim=0)")
        ids = items.column("item_id").to_numpy().astype(np.int64)
        emb = np.stack(items.column(TEXT_EMB_COLUMN).to_numpy(zero_copy_only=False)).astype(np.float32)
        vectors = np.zeros((n_items, emb.shape[1]), np.float32)
        vectors[ids] = emb
        out["text"] = vectors
    if config["model.kg"] != "none":
        rel = ds.relations()
        if rel is None or rel.num_rows == 0:
            raise ConfigError(f"model.kg: dataset '{schema.name}' has no relations.parquet (set model.kg=none)")
        kg: KGParams = config.params("model.kg", KGParams)
        import pyarrow.compute as pc

        names = sorted(set(pc.unique(rel.column("relation")).to_pylist()))
        for r in kg.relations:
            if r not in names:
                raise ConfigError(f"model.kg.relations: unknown relation '{r}'; dataset '{schema.name}' has "
                                  f"{', '.join(names)}")
        out["neighbors"], out["relations"] = neighbor_table(rel, n_items, kg.relations, kg.neighbors)
        if kg.pretrain:
            out["item_init"] = pretrain_transe(out["neighbors"], n_items, mp.emb_dim, kg.pretrain, seed)
    return out


def rare_ids(ds: PreparedDataset, fields: list[str], min_count: int) -> dict[str, np.ndarray]:
    """Per sparse field, the codes seen in fewer than ``min_count`` training rows (0 excluded).
    Fields that share a vocabulary count together."""
    schema = ds.schema
    train = ds.read_split("train", columns=fields)
    counts: dict[str, np.ndarray] = {}
    for name in fields:
        f = schema.field(name)
        group = f.shares_vocab_with or name
        size = schema.field(group).vocab_size
        c = np.bincount(train.column(name).to_numpy().astype(np.int64), minlength=size)[:size]
        counts[group] = counts[group] + c if group in counts else c
    out = {}
    for name in fields:
        c = counts[schema.field(name).shares_vocab_with or name]
        rare = np.flatnonzero(c < min_count)
        out[name] = rare[rare > 0]
    return out


def build_model(ds: PreparedDataset, config, seed: int = 0, side: dict | None = None) -> FusedModel:
    torch.manual_seed(seed)
    side = side if side is not None else side_data(ds, config, seed)
    return FusedModel(ds.schema, config, side)
