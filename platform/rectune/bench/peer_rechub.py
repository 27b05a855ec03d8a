"""torch-rechub's models on a rectune prepared dataset: the peer side of ``rectune bench train``
and ``rectune bench mission``.

A standalone script, run by the peer environment's python (``make bench-peers`` makes
``.venv-peers``; torch-rechub is never a dependency of rectune). It imports torch, torch_rechub,
numpy, pandas, pyarrow and sklearn only, never rectune.

``--model`` picks one of torch-rechub 0.9.0's models, used as its own examples use them:

- multi-task, trained by ``MTLTrainer`` (one output per task, the mean of the tasks' BCE losses):
  ``mmoe`` (default: ``--experts`` experts of ``--expert-dims``, one softmax gate and one tower of
  ``--tower-dims`` per task), ``ple`` (``--levels`` CGC levels of ``--specific-experts`` experts
  per task and ``--shared-experts`` shared ones, each of ``--expert-dims``), ``shared_bottom``
  (a bottom MLP of ``--expert-dims``, one tower per task);
- ``esmm``: torch-rechub's ESMM for a two-task funnel (a child task, e.g. like or conversion,
  can only be 1 where its parent task, e.g. click, is 1). It embeds the user side (the fields with
  ``side`` user or context, and the history) and the item side (``side`` item) apart, concatenates
  them, and has two towers of ``--expert-dims`` + ``--tower-dims`` (no shared bottom: each tower
  gets the depth of an expert plus a tower elsewhere). Its outputs are pCVR, pCTR and
  pCTCVR = pCTR · pCVR; MTLTrainer trains pCTR on the parent label and pCTCVR on the child label,
  over all impressions (the pCVR output is not trained on its own, as in the paper). The parent
  task's AUC is pCTR's, the child task's pCTCVR's, both on all impressions (as rectune's esmm);
  ``test_cvr`` adds the pCVR AUC on the parent's positives. The funnel is the schema's
  ``task_parents``, else ``--parents child:parent``, else the second task after the first. Dense
  fields are left out (ESMM's embedding layer has no place for them); ``unused_fields`` says so;
- single-task ranking, trained by ``CTRTrainer`` (BCE on one label) on the dataset's only task
  (or ``--task``): ``deepfm`` (first order + FM over the sparse and history embeddings, a DNN of
  ``--mlp-dims`` over all fields, dense values included) and ``dcn`` (``--cross-layers`` cross
  layers beside a DNN of ``--mlp-dims`` over all fields).

Every torch-rechub MLP has BatchNorm1d after each hidden linear layer (gates included), then the
activation and dropout (``--dropout``). The optimiser is the trainers' Adam with ``--lr`` and
``--weight-decay`` on every parameter, embeddings included; ``--schedule`` decays its learning
rate over ``--epochs`` as rectune's ``optim.schedule`` does (constant, cosine or linear in the epoch
e of E, set at each epoch's start).

Features as torch-rechub's examples build them: one ``SparseFeature`` per categorical field, one
``DenseFeature`` per dense field (its raw value), the behaviour history (``--history``) as a
``SequenceFeature`` with mean pooling over its non-padding ids (``padding_idx=0``; it shares the
item table when the schema says ``shares_vocab_with``, as rectune does); ``DataGenerator`` /
``DataLoader`` batches. The epoch loop is the trainers' ``fit`` loop (their own
``train_one_epoch``), timed per epoch and keeping the best epoch by the mean valid AUC over the
tasks (fit itself stops on one task's AUC). Valid and test are scored here (sklearn's
``roc_auc_score`` on the model's predictions, as the trainers' ``evaluate`` does), so that the
cold-item AUC can be taken too: an item is cold when it has fewer than 5 positives of the first
task in train.parquet (all of it, whatever ``--train-rows``), as in rectune; ``test_cold`` is the
AUC per task over the test rows with a cold item, left out for a task whose cold rows hold one
class only.

``--fields`` keeps only the named fields of the schema (``bench mission`` passes a campaign's
``model.features``, so that the peers read the same columns as the campaign's best).

Prints one JSON line on stdout (everything else goes to stderr): per-epoch train seconds and
samples/s, valid AUC per task, the best epoch, valid and test AUC per task at the best epoch, the
cold-item test AUC, the peak RSS of this process.

    .venv-peers/bin/python platform/rectune/bench/peer_rechub.py DATA --seed 0 --epochs 5 --history
    .venv-peers/bin/python platform/rectune/bench/peer_rechub.py DATA --model esmm --history
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the trainers wrap their loaders in tqdm

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature  # noqa: E402
from torch_rechub.models.multi_task import ESMM, MMOE, PLE, SharedBottom  # noqa: E402
from torch_rechub.models.ranking import DCN, DeepFM  # noqa: E402
from torch_rechub.trainers import CTRTrainer, MTLTrainer  # noqa: E402
from torch_rechub.utils.data import DataGenerator  # noqa: E402

MULTI_TASK = ("mmoe", "ple", "esmm", "shared_bottom")
RANKING = ("deepfm", "dcn")
COLD_THRESHOLD = 5  # rectune.data.describe.COLD_THRESHOLD


def schedule_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The share of ``--lr`` that epoch ``epoch`` of ``epochs`` trains at (rectune.train.core.lr_factor's rule)."""
    t = min(epoch, epochs) / max(epochs, 1)
    return {"cosine": 0.5 * (1.0 + math.cos(math.pi * t)), "linear": 1.0 - t}.get(schedule, 1.0)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def read_split(path: Path, split: str, schema: dict, history: bool) -> tuple[dict, np.ndarray]:
    """The split as torch-rechub's input: ``{field: array}`` (sequences padded with 0 to max_len)
    and the labels ``[N, n_tasks]`` in the schema's task order."""
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


def features(schema: dict, emb: int, history: bool, side: str | None = None) -> list:
    """torch-rechub features of the schema's fields; ``side`` "item": the item-side fields only,
    "user": the others (user and context fields, and the history)."""
    out = []
    for f in schema["fields"]:
        if side is not None and (f.get("side") == "item" and f["kind"] != "sequence") != (side == "item"):
            continue
        if f["kind"] == "sparse":
            out.append(SparseFeature(f["name"], vocab_size=int(f["vocab_size"]), embed_dim=emb))
        elif f["kind"] == "dense":
            out.append(DenseFeature(f["name"]))
        elif f["kind"] == "sequence" and history:
            out.append(SequenceFeature(f["name"], vocab_size=int(f["vocab_size"]), embed_dim=emb, pooling="mean",
                                       shared_with=f.get("shares_vocab_with"), padding_idx=0))
    return out


def item_field(schema: dict) -> str | None:
    """The item id field: the schema's ``item_field``, else a sparse ``item_id`` (rectune's rule)."""
    name = schema.get("item_field")
    if name is None:
        name = next((f["name"] for f in schema["fields"] if f["name"] == "item_id" and f["kind"] == "sparse"), None)
    return name


def funnel(schema: dict, tasks: list[str], parents: list[str]) -> tuple[dict[str, str], bool]:
    """``{child: parent}`` from the schema's task_parents and ``--parents``; the flag says whether
    it was given (else, with two tasks, the second task's parent is the first)."""
    out = dict(schema.get("task_parents") or {})
    for item in parents:
        child, sep, parent = item.partition(":")
        if not sep or child not in tasks or parent not in tasks or child == parent:
            raise SystemExit(f"--parents: '{item}' is not child:parent with two different tasks of {tasks}")
        out[child] = parent
    if out:
        return out, True
    return ({tasks[1]: tasks[0]} if len(tasks) == 2 else {}), False


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC, None when the labels hold one class only (or there are none)."""
    if len(y) == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, p))


def predict(model, loader) -> np.ndarray:
    """The model's outputs over the loader, ``[N, n_outputs]``."""
    model.eval()
    out = []
    with torch.no_grad():
        for x_dict, y in loader:
            out.append(model(x_dict).reshape(len(y), -1).numpy())
    return np.concatenate(out)


def build(args, schema: dict, tasks: list[str], parents: dict[str, str]):
    """The model, the trainer class, its task types (None: single-task), the columns of its label
    matrix (indices into the schema's tasks) and the output column that scores each task."""
    all_tasks = list(schema["tasks"])
    def mlp(dims):
        return {"dims": list(dims), "dropout": args.dropout}

    towers = [mlp(args.tower_dims) for _ in tasks]
    if args.model in ("mmoe", "ple", "shared_bottom"):
        feats = features(schema, args.emb, args.history)
        types = ["classification"] * len(tasks)
        if args.model == "mmoe":
            model = MMOE(feats, types, args.experts, expert_params=mlp(args.expert_dims), tower_params_list=towers)
        elif args.model == "ple":
            # 2 task-specific + 2 shared experts per level: 4 experts feed each task's gate, as
            # MMoE's 4 experts do (torch-rechub's example uses 2 + 1; rectune's ple defaults to
            # 4 per task + 2 shared: --specific-experts 4 matches it).
            model = PLE(feats, types, n_level=args.levels, n_expert_specific=args.specific_experts,
                        n_expert_shared=args.shared_experts, expert_params=mlp(args.expert_dims),
                        tower_params_list=towers)
        else:
            model = SharedBottom(feats, types, bottom_params=mlp(args.expert_dims), tower_params_list=towers)
        return model, MTLTrainer, types, [all_tasks.index(t) for t in tasks], {t: i for i, t in enumerate(tasks)}
    if args.model == "esmm":
        if len(tasks) != 2 or len(parents) != 1:
            raise SystemExit(f"esmm needs two tasks in a funnel (child:parent); got tasks {tasks}, funnel {parents}")
        (child, parent), = parents.items()
        user = [f for f in features(schema, args.emb, args.history, "user") if not isinstance(f, DenseFeature)]
        item = [f for f in features(schema, args.emb, args.history, "item") if not isinstance(f, DenseFeature)]
        if not user or not item:
            raise SystemExit("esmm needs user-side and item-side fields (the schema's 'side' key)")
        tower = mlp(args.expert_dims + args.tower_dims)
        model = ESMM(user, item, cvr_params=tower, ctr_params=dict(tower))
        # outputs [pCVR, pCTR, pCTCVR]; MTLTrainer trains the last two only (on ESMM's labels
        # [cvr, ctr, ctcvr] = [child, parent, child]: the child is only 1 where the parent is)
        ci, pi = all_tasks.index(child), all_tasks.index(parent)
        return model, MTLTrainer, ["classification"] * 3, [ci, pi, ci], {parent: 1, child: 2, "_cvr": 0}
    feats = features(schema, args.emb, args.history)
    if args.model == "deepfm":
        fm = [f for f in feats if not isinstance(f, DenseFeature)]
        model = DeepFM(deep_features=feats, fm_features=fm, mlp_params=mlp(args.mlp_dims))
    else:
        model = DCN(feats, n_cross_layers=args.cross_layers, mlp_params=mlp(args.mlp_dims))
    return model, CTRTrainer, None, [all_tasks.index(tasks[0])], {tasks[0]: 0}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="a rectune prepared dataset (train/valid/test.parquet, schema.json)")
    ap.add_argument("--model", choices=MULTI_TASK + RANKING, default="mmoe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--emb", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-5, help="the trainers' default")
    ap.add_argument("--history", action="store_true", help="use the sequence fields, mean-pooled")
    ap.add_argument("--experts", type=int, default=4, help="mmoe: experts")
    ap.add_argument("--specific-experts", type=int, default=2, help="ple: experts per task and level")
    ap.add_argument("--shared-experts", type=int, default=2, help="ple: shared experts per level")
    ap.add_argument("--levels", type=int, default=1, help="ple: CGC levels")
    ap.add_argument("--expert-dims", type=_ints, default=[128, 64],
                    help="experts (mmoe, ple), the bottom (shared_bottom), the towers' first layers (esmm)")
    ap.add_argument("--tower-dims", type=_ints, default=[32], help="the task towers (multi-task models)")
    ap.add_argument("--mlp-dims", type=_ints, default=[128, 64], help="the DNN (deepfm, dcn)")
    ap.add_argument("--cross-layers", type=int, default=2, help="dcn: cross layers")
    ap.add_argument("--parents", action="append", default=[], metavar="CHILD:PARENT",
                    help="esmm's funnel when the schema has no task_parents (default: the second task after the first)")
    ap.add_argument("--task", default=None, help="deepfm, dcn: the task to train (default: the dataset's only task)")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--schedule", choices=("constant", "cosine", "linear"), default="constant",
                    help="the learning rate over the epochs, as rectune's optim.schedule")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--train-rows", type=int, default=0, help="use only the first N training rows (tests)")
    ap.add_argument("--fields", default="", help="comma-separated: only these fields of the schema (default: all), "
                                                 "e.g. the campaign's model.features")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    schema = json.loads((args.data / "schema.json").read_text())
    if args.fields:
        keep = [x.strip() for x in args.fields.split(",") if x.strip()]
        names = [f["name"] for f in schema["fields"]]
        unknown = [x for x in keep if x not in names]
        if unknown:
            ap.error(f"--fields: {', '.join(unknown)} not in the schema's fields ({', '.join(names)})")
        schema["fields"] = [f for f in schema["fields"] if f["name"] in keep]
    all_tasks = list(schema["tasks"])
    if args.model in RANKING:
        if args.task is None and len(all_tasks) > 1:
            ap.error(f"{args.model} is single-task and this dataset has tasks {all_tasks}: pick one with --task")
        if args.task is not None and args.task not in all_tasks:
            ap.error(f"--task {args.task}: not a task of this dataset ({all_tasks})")
        tasks = [args.task or all_tasks[0]]
    else:
        tasks = all_tasks
    parents, given = funnel(schema, all_tasks, args.parents)

    t0 = time.perf_counter()
    x_train, y_train = read_split(args.data, "train", schema, args.history)
    item = item_field(schema)
    warm = None
    if item is not None and item in x_train:  # item codes with enough positives of the first task
        vocab = next(int(f["vocab_size"]) for f in schema["fields"] if f["name"] == item)
        warm = np.bincount(x_train[item][y_train[:, 0] == 1], minlength=vocab) >= COLD_THRESHOLD
    if args.train_rows:
        x_train = {k: v[: args.train_rows] for k, v in x_train.items()}
        y_train = y_train[: args.train_rows]
    x_val, y_val = read_split(args.data, "valid", schema, args.history)
    x_test, y_test = read_split(args.data, "test", schema, args.history)
    load_s = time.perf_counter() - t0

    model, trainer_cls, task_types, label_cols, out_col = build(args, schema, tasks, parents)
    ranking = trainer_cls is CTRTrainer

    def target(y):
        return y[:, label_cols[0]].copy() if ranking else y[:, label_cols].copy()

    train_dl, val_dl, test_dl = DataGenerator(x_train, target(y_train)).generate_dataloader(
        x_val=x_val, y_val=target(y_val), x_test=x_test, y_test=target(y_test), batch_size=args.batch_size)

    def scores(pred: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
        out = {}
        for t in tasks:
            yt, pt = y[:, all_tasks.index(t)], pred[:, out_col[t]]
            a = auc(yt[mask], pt[mask]) if mask is not None else auc(yt, pt)
            if a is not None:
                out[t] = a
        return out

    opt = {"lr": args.lr, "weight_decay": args.weight_decay}
    history, best, best_state = [], None, None
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        if ranking:
            trainer = CTRTrainer(model, optimizer_params=opt, n_epoch=args.epochs, earlystop_patience=args.epochs,
                                 device="cpu", model_path=tmp)
        else:
            trainer = MTLTrainer(model, task_types=task_types, optimizer_params=opt, n_epoch=args.epochs,
                                 earlystop_patience=args.epochs, device="cpu", model_path=tmp)
        for epoch in range(args.epochs):
            for group in trainer.optimizer.param_groups:
                group["lr"] = args.lr * schedule_factor(args.schedule, epoch, args.epochs)
            t = time.perf_counter()
            losses = trainer.train_one_epoch(train_dl)
            train_s = time.perf_counter() - t
            losses = [losses] if ranking else list(losses)
            t = time.perf_counter()
            valid = scores(predict(trainer.model, val_dl), y_val)
            eval_s = time.perf_counter() - t
            mean = float(np.mean(list(valid.values()))) if valid else float("nan")
            lr = trainer.optimizer.param_groups[0]["lr"]
            history.append({"epoch": epoch, "lr": lr, "train_s": train_s, "samples_per_s": len(y_train) / train_s,
                            "eval_s": eval_s, **{f"train/{t}_loss": float(losses[out_col[t]]) for t in tasks},
                            **{f"valid/{t}_auc": v for t, v in valid.items()}, "valid/mean_auc": mean})
            if best is None or mean > history[best]["valid/mean_auc"]:
                best, best_state = epoch, copy.deepcopy(trainer.model.state_dict())
        trainer.model.load_state_dict(best_state)
        pred = predict(trainer.model, test_dl)
    test = scores(pred, y_test)
    cold = {}
    if warm is not None:
        items = x_test[item]
        mask = ~warm[np.clip(items, 0, len(warm) - 1)] | (items >= len(warm))
        cold = scores(pred, y_test, mask) if mask.any() else {}
    # the funnel reported (given, or esmm's own) and the child's AUC on its parent's positives
    # (ESMM: its pCVR tower)
    used = {c: p for c, p in parents.items() if c in tasks and p in tasks} if given or args.model == "esmm" else {}
    cvr = {}
    for child, parent in used.items():
        clicked = y_test[:, all_tasks.index(parent)] > 0.5
        col = out_col["_cvr"] if args.model == "esmm" else out_col[child]
        a = auc(y_test[clicked, all_tasks.index(child)], pred[clicked, col])
        if a is not None:
            cvr[f"{child}_cvr_auc"] = a
    at = history[best]
    result = {"library": "torch-rechub", "model": args.model, "history_pooled": args.history, "seed": args.seed,
              "tasks": tasks, "epochs": history, "best_epoch": best,
              "valid": {f"{t}_auc": at[f"valid/{t}_auc"] for t in tasks if f"valid/{t}_auc" in at},
              "valid_mean_auc": at["valid/mean_auc"],
              "test": {f"{t}_auc": v for t, v in test.items()},
              "test_cold": {f"{t}_auc": v for t, v in cold.items()},
              "test_cold_rows": int(mask.sum()) if warm is not None else 0,
              "test_cvr": cvr, "funnel": used,
              "unused_fields": [f["name"] for f in schema["fields"] if f["name"] not in _used(model)],
              "train_rows": int(len(y_train)), "batch_size": args.batch_size, "emb": args.emb,
              "lr": args.lr, "weight_decay": args.weight_decay, "dropout": args.dropout, "schedule": args.schedule,
              "params": sum(p.numel() for p in model.parameters()),
              "threads": torch.get_num_threads(), "load_s": load_s,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "versions": {"torch": torch.__version__, "torch_rechub": _version("torch_rechub")}}
    print(json.dumps(result), flush=True)
    return result


def _used(model) -> set[str]:
    """The names of the features the model reads."""
    names = set()
    for attr in ("features", "user_features", "item_features", "deep_features", "fm_features"):
        names.update(f.name for f in getattr(model, attr, None) or [])
    return names


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name.replace("_", "-"))
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
