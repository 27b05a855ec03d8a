"""Training in this process, without Ray, over tensors already in memory.

The reference of the speed benchmark (a plain PyTorch loop: the limit on one machine), and the
fast path of tests that check what the model learns. It runs the same :class:`Trainer` step and
:class:`LoopState` as the Ray worker; data-stream augmentation is not applied here (that is the
Ray Data pipeline's job), in-model adversarial augmentation is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rectune.data.prepared import PreparedDataset
from rectune.models.model import FusedModel, build_model, schema_fingerprint, side_data
from rectune.train.core import LoopState, Trainer, epoch_seed, evaluate
from rectune.train.metrics import metric_weights
from rectune.train.tensors import TensorRows, train_item_status


@dataclass
class LocalRun:
    model: FusedModel
    trainer: Trainer
    state: LoopState
    best_weights: dict | None = None


def fit_local(ds: PreparedDataset, config, epochs: int | None = None, resume_from: str | Path | None = None,
              checkpoint_to: str | Path | None = None, splits: tuple[str, ...] = ("valid",),
              data: dict[str, TensorRows] | None = None) -> LocalRun:
    """Train for ``epochs`` (default ``train.epochs``) more epochs, scoring ``splits`` after each."""
    seed = config["train.seed"]
    side = side_data(ds, config, seed)
    model = build_model(ds, config, seed=seed, side=side)
    trainer = Trainer(model, config)
    state, best = LoopState(), None
    if resume_from is not None:
        state, best = trainer.restore(resume_from)
    data = data or {}
    for split in ("train",) + tuple(splits):
        if split not in data:
            data[split] = TensorRows.from_split(ds, split)
    item_status = train_item_status(ds)
    weights = metric_weights(config, ds.schema.tasks)
    stop_at = state.epoch + (epochs if epochs is not None else config["train.epochs"])
    while state.epoch < stop_at and not state.stopped_early:
        torch.manual_seed(epoch_seed(seed, state.epoch))
        lr = trainer.set_epoch(state.epoch)
        t0 = time.perf_counter()
        losses = trainer.train_epoch(data["train"].batches(config["train.batch_size"], seed=epoch_seed(seed, state.epoch)))
        metrics = {"train/time_s": time.perf_counter() - t0, "train/lr": lr}
        metrics.update({f"train/{t}_loss": v for t, v in zip(trainer.tasks, losses)})
        for split in splits:
            pred = trainer.predict(data[split].batches(config["train.eval_batch_size"]))
            metrics.update(evaluate(split, pred, model, item_status, weights))
        if state.update(config["train.metric"], metrics, config["train.patience"]):
            best = trainer.scored_state()
    if checkpoint_to is not None:
        trainer.save(checkpoint_to, state, config.to_dict(), schema_fingerprint(ds.schema), best)
    return LocalRun(model, trainer, state, best)
