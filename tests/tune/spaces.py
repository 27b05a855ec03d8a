"""The tiny search space the campaign tests run (2 epochs, emb 8, hidden [32]: seconds per trial)."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY = {
    "objective": "valid/mean_auc",
    "budget": {"trials": 4, "concurrency": 2},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "sampler": {"name": "tpe", "seed": 0, "startup_trials": 2},
    "fixed": {"train.epochs": 2, "train.patience": 0, "model.emb_dim": 8, "model.hidden": [32],
              "train.batch_size": 2048},
    "search": {"optim.lr": {"float": [3e-4, 1e-2], "log": True},
               "augment.mask.prob": {"float": [0.0, 0.3]},
               "model.mtl": {"categorical": ["shared_bottom", "mmoe"]},
               "model.mtl.experts": {"int": [2, 3]}},
}


def write_space(path: Path, **changes) -> Path:
    """TINY with top-level sections replaced by ``changes``, written to ``path``."""
    tree = yaml.safe_load(yaml.safe_dump(TINY))
    tree.update(changes)
    path.write_text(yaml.safe_dump(tree))
    return path
