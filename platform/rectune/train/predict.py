"""``rectune predict``: score a prepared split with a saved checkpoint (weights only), in this process.

The checkpoint's schema fingerprint (tasks, fields, vocabularies) must match the dataset's, or the
scores would be silently wrong: a mismatch is a one-line error. Writes one row per scored row
(``_row``, the user and item ids when the dataset has them, ``p_<task>`` per task) to Parquet,
atomically, and returns the metrics when the split has labels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rectune.data.prepared import open_dataset
from rectune.errors import DataError
from rectune.models.model import FusedModel, schema_fingerprint, side_data
from rectune.runconfig import RunConfig
from rectune.train import checkpoint as ckpt
from rectune.train.core import Trainer, evaluate
from rectune.train.metrics import metric_weights
from rectune.train.tensors import TensorRows, train_item_status


def checkpoint_dir(path: str | Path) -> Path:
    """A run folder or a checkpoint folder -> the checkpoint folder."""
    path = Path(path)
    if (path / "checkpoint" / ckpt.STATE).is_file():
        return path / "checkpoint"
    if (path / ckpt.STATE).is_file():
        return path
    raise DataError(f"{path}: neither a run folder (with checkpoint/) nor a checkpoint folder (with {ckpt.STATE})")


def predict(checkpoint: str | Path, data: str | Path, split: str = "test", out: str | Path | None = None) -> dict:
    ds = open_dataset(data)
    folder = checkpoint_dir(checkpoint)
    meta = ckpt.read_state(folder)
    if meta.get("schema_fingerprint") != schema_fingerprint(ds.schema):
        raise DataError(f"{data}: dataset '{ds.schema.name}' does not match the checkpoint {folder} (its tasks, "
                        f"fields or vocabulary sizes differ from those the model was trained on)")
    config = RunConfig(meta["config"])
    config.set("model.kg.pretrain", 0)  # the trained weights replace any initialisation
    model = FusedModel(ds.schema, config, side_data(ds, config))
    model.load_state_dict(ckpt.load_weights(folder, "best"))
    rows = TensorRows.from_split(ds, split)
    pred = Trainer(model, config).predict(rows.batches(config["train.eval_batch_size"]))
    metrics = evaluate(split, pred, model, train_item_status(ds),
                       metric_weights(config, ds.schema.tasks)) if "labels" in pred else {}
    if out is not None:
        cols = {"_row": pred["rows"]}
        if "users" in pred:
            cols[ds.schema.user_field] = pred["users"]
        if "items" in pred:
            cols[ds.schema.item_field] = pred["items"]
        for i, t in enumerate(model.tasks):
            cols[f"p_{t}"] = pred["probs"][:, i].astype(np.float32)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        pq.write_table(pa.table(cols), tmp)
        os.replace(tmp, out)
    return {"metrics": metrics, "rows": len(rows), "out": str(out) if out else None}
