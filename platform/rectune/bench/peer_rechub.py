"""torch-rechub's MMoE on a rectune prepared dataset: the peer side of ``rectune bench train``.

A standalone script, run by the peer environment's python (``make bench-peers`` makes
``.venv-peers``; torch-rechub is never a dependency of rectune). It imports torch, torch_rechub,
numpy, pandas, pyarrow and sklearn only, never rectune.

It follows torch-rechub's own MMoE examples: one ``SparseFeature`` per categorical field, the
behaviour history (``--history``) as a ``SequenceFeature`` with mean pooling over its non-padding
ids (``padding_idx=0``; it shares the item table when the schema says ``shares_vocab_with``, as
rectune does), ``DataGenerator`` / ``DataLoader`` batches, ``MMOE`` and ``MTLTrainer`` (its own
``train_one_epoch`` and ``evaluate``). The epoch loop is MTLTrainer.fit's, timed per epoch and
keeping the best epoch by the mean valid AUC over the tasks (fit itself stops on one task's AUC).

Prints one JSON line on stdout (everything else goes to stderr): per-epoch train seconds and
samples/s, valid AUC per task, the best epoch and the test AUC per task with its weights, the
peak RSS of this process.

    .venv-peers/bin/python platform/rectune/bench/peer_rechub.py DATA --seed 0 --epochs 5 --history
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # MTLTrainer wraps its loaders in tqdm

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature  # noqa: E402
from torch_rechub.models.multi_task import MMOE  # noqa: E402
from torch_rechub.trainers import MTLTrainer  # noqa: E402
from torch_rechub.utils.data import DataGenerator  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def read_split(path: Path, split: str, schema: dict, history: bool) -> tuple[dict, np.ndarray]:
    """The split as torch-rechub's input: ``{field: array}`` (sequences padded with 0 to max_len)
    and the labels ``[N, n_tasks]``."""
    df: pd.DataFrame = pq.read_table(path / f"{split}.parquet").to_pandas()
    x = {}
    for f in schema["fields"]:
        if f["kind"] == "sparse":
            x[f["name"]] = df[f["name"]].to_numpy().astype(np.int64)
        elif f["kind"] == "dense":
            x[f["name"]] = df[f["name"]].to_numpy().astype(np.float32)
        elif f["kind"] == "sequence" and history:
            n = int(f["max_len"])
            out = np.zeros((len(df), n), np.int64)
            for i, seq in enumerate(df[f["name"]].to_numpy()):
                seq = np.asarray(seq, dtype=np.int64)[-n:]
                out[i, : len(seq)] = seq
            x[f["name"]] = out
    y = np.stack([df[t].to_numpy() for t in schema["tasks"]], axis=1).astype(np.float32)
    return x, y


def features(schema: dict, emb: int, history: bool) -> list:
    out = []
    for f in schema["fields"]:
        if f["kind"] == "sparse":
            out.append(SparseFeature(f["name"], vocab_size=int(f["vocab_size"]), embed_dim=emb))
        elif f["kind"] == "dense":
            out.append(DenseFeature(f["name"]))
        elif f["kind"] == "sequence" and history:
            out.append(SequenceFeature(f["name"], vocab_size=int(f["vocab_size"]), embed_dim=emb, pooling="mean",
                                       shared_with=f.get("shares_vocab_with"), padding_idx=0))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="a rectune prepared dataset (train/valid/test.parquet, schema.json)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--emb", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-5, help="MTLTrainer's default")
    ap.add_argument("--history", action="store_true", help="use the sequence fields, mean-pooled")
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--expert-dims", type=_ints, default=[128, 64])
    ap.add_argument("--tower-dims", type=_ints, default=[32])
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--train-rows", type=int, default=0, help="use only the first N training rows (tests)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    schema = json.loads((args.data / "schema.json").read_text())
    tasks = list(schema["tasks"])
    t0 = time.perf_counter()
    x_train, y_train = read_split(args.data, "train", schema, args.history)
    if args.train_rows:
        x_train = {k: v[: args.train_rows] for k, v in x_train.items()}
        y_train = y_train[: args.train_rows]
    x_val, y_val = read_split(args.data, "valid", schema, args.history)
    x_test, y_test = read_split(args.data, "test", schema, args.history)
    load_s = time.perf_counter() - t0
    train_dl, val_dl, test_dl = DataGenerator(x_train, y_train).generate_dataloader(
        x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test, batch_size=args.batch_size)
    task_types = ["classification"] * len(tasks)
    model = MMOE(features(schema, args.emb, args.history), task_types, args.experts,
                 expert_params={"dims": args.expert_dims, "dropout": args.dropout},
                 tower_params_list=[{"dims": args.tower_dims, "dropout": args.dropout} for _ in tasks])
    history, best, best_state = [], None, None
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        trainer = MTLTrainer(model, task_types=task_types, optimizer_params={"lr": args.lr, "weight_decay": args.weight_decay},
                             n_epoch=args.epochs, earlystop_patience=args.epochs, device="cpu", model_path=tmp)
        for epoch in range(args.epochs):
            t = time.perf_counter()
            losses = trainer.train_one_epoch(train_dl)
            train_s = time.perf_counter() - t
            t = time.perf_counter()
            valid = trainer.evaluate(trainer.model, val_dl)
            eval_s = time.perf_counter() - t
            mean = float(np.mean(valid))
            history.append({"epoch": epoch, "train_s": train_s, "samples_per_s": len(y_train) / train_s,
                            "eval_s": eval_s, **{f"train/{t}_loss": float(v) for t, v in zip(tasks, losses)},
                            **{f"valid/{t}_auc": float(v) for t, v in zip(tasks, valid)}, "valid/mean_auc": mean})
            if best is None or mean > history[best]["valid/mean_auc"]:
                best, best_state = epoch, copy.deepcopy(trainer.model.state_dict())
        trainer.model.load_state_dict(best_state)
        test = trainer.evaluate(trainer.model, test_dl)
    params = sum(p.numel() for p in model.parameters())
    result = {"library": "torch-rechub", "model": "MMOE", "history_pooled": args.history, "seed": args.seed,
              "epochs": history, "best_epoch": best, "test": {f"{t}_auc": float(v) for t, v in zip(tasks, test)},
              "train_rows": int(len(y_train)), "batch_size": args.batch_size, "emb": args.emb, "params": params,
              "threads": torch.get_num_threads(), "load_s": load_s,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "versions": {"torch": torch.__version__, "torch_rechub": _version("torch_rechub")}}
    print(json.dumps(result), flush=True)
    return result


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name.replace("_", "-"))
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
