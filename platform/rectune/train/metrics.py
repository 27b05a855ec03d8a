"""Metrics per task, as the keys that reports, search spaces and results use.

For a split ``s`` and a task ``t``:

- ``s/t_auc``, ``s/t_logloss``;
- ``s/t_gauc``: per-user AUC averaged with each user's impressions as weight, over users with both
  a positive and a negative (needs the dataset's user field);
- ``s/t_cold_auc``: AUC on the rows whose item is cold: fewer than 5 positives of the first task
  in the training split (``data.describe.COLD_THRESHOLD``, the rule of ``rectune data describe``);
- ``s/t_new_auc``: AUC on the rows whose item has no training row at all (new items, a part of
  the cold ones);
- ``s/t_cvr_auc`` for a task with a parent in the funnel: AUC on the rows where the parent is 1
  (the funnel, ``esmm`` or ``model.mtl.funnel``, scores them with its conditional pCVR tower);
- ``s/ctcvr_auc`` with the funnel: AUC of pCTR · pCVR against the child label on all impressions
  (this is the funnel's ``s/<child>_auc``, reported under its usual name too);
- ``s/mean_auc``: the mean of the tasks' AUCs (the default objective).

A metric that cannot be computed (one class only, no cold rows) is left out, never reported as 0.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    y = np.asarray(y) > 0.5
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    r = rankdata(p)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def gauc(users: np.ndarray, y: np.ndarray, p: np.ndarray) -> float | None:
    """Impression-weighted mean of per-user AUCs (users with both classes), vectorised."""
    users = np.asarray(users)
    y = np.asarray(y) > 0.5
    order = np.lexsort((p, users))
    u, yy, pp = users[order], y[order], np.asarray(p)[order]
    n = len(u)
    if n == 0:
        return None
    # ranks within each user, ties averaged: runs of equal (user, score)
    new_run = np.ones(n, bool)
    new_run[1:] = (u[1:] != u[:-1]) | (pp[1:] != pp[:-1])
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], n)
    new_user = np.ones(n, bool)
    new_user[1:] = u[1:] != u[:-1]
    user_id = np.cumsum(new_user) - 1
    user_start = np.flatnonzero(new_user)
    avg_rank = (run_start + run_end - 1) / 2.0 + 1.0  # global 1-based average position of the run
    rank = avg_rank[run_id] - user_start[user_id]
    k = len(user_start)
    n_pos = np.bincount(user_id, weights=yy, minlength=k)
    size = np.bincount(user_id, minlength=k).astype(np.float64)
    n_neg = size - n_pos
    r_pos = np.bincount(user_id, weights=rank * yy, minlength=k)
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return None
    a = (r_pos[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2) / (n_pos[ok] * n_neg[ok])
    return float((a * size[ok]).sum() / size[ok].sum())


def task_metrics(split: str, tasks: list[str], labels: np.ndarray, probs: np.ndarray, users: np.ndarray | None = None,
                 cold: np.ndarray | None = None, parents: dict[str, str] | None = None,
                 conditional: np.ndarray | None = None, funnel: bool = False,
                 new: np.ndarray | None = None) -> dict[str, float]:
    """``labels``/``probs`` ``[N, T]``; ``cold``, ``new``: bool masks of rows with a cold item and
    with an item no training row has;
    ``conditional``: the funnel's per-tower probabilities (pCVR for a child task)."""
    out: dict[str, float] = {}
    aucs = []
    for i, t in enumerate(tasks):
        y, p = labels[:, i], probs[:, i]
        a = auc(y, p)
        if a is not None:
            out[f"{split}/{t}_auc"] = a
            aucs.append(a)
        out[f"{split}/{t}_logloss"] = logloss(y, p)
        if users is not None:
            g = gauc(users, y, p)
            if g is not None:
                out[f"{split}/{t}_gauc"] = g
        for name, rows in (("cold", cold), ("new", new)):
            if rows is not None and rows.any():
                c = auc(y[rows], p[rows])
                if c is not None:
                    out[f"{split}/{t}_{name}_auc"] = c
        parent = (parents or {}).get(t)
        if parent is not None:
            clicked = labels[:, tasks.index(parent)] > 0.5
            src = conditional[:, i] if conditional is not None else p
            c = auc(y[clicked], src[clicked])
            if c is not None:
                out[f"{split}/{t}_cvr_auc"] = c
            if funnel and a is not None:
                out[f"{split}/ctcvr_auc"] = a
    if aucs:
        out[f"{split}/mean_auc"] = float(np.mean(aucs))
    return out


SUFFIXES = ("auc", "gauc", "logloss", "cold_auc", "new_auc", "cvr_auc")
WEIGHTED = "valid/weighted"
"""A weighted sum of valid metrics (``train.metric_weights``); ``valid/weighted_loss`` when they are losses."""


def parse_weights(key: str, items: list[str], tasks: list[str]) -> dict[str, float]:
    """``["valid/click_auc:0.7", ...]`` -> ``{"valid/click_auc": 0.7, ...}``, every name and weight checked."""
    from rectune.errors import ConfigError

    out: dict[str, float] = {}
    for item in items:
        name, sep, w = str(item).rpartition(":")
        try:
            weight = float(w) if sep else float("nan")
        except ValueError:
            weight = float("nan")
        if not (weight >= 0 and math.isfinite(weight)):
            raise ConfigError(f"{key}: '{item}': expected metric:weight with a finite weight >= 0, e.g. valid/click_auc:0.7")
        check_metric(key, name, tasks)
        if name.startswith(WEIGHTED):
            raise ConfigError(f"{key}: '{item}': a weighted metric cannot weigh itself")
        out[name] = weight
    if out and len({better(m, 1.0, 0.0) for m in out}) > 1:
        raise ConfigError(f"{key}: mixes metrics to maximise and to minimise; use one direction")
    return out


def metric_weights(config, tasks: list[str]) -> dict[str, float]:
    """A run configuration's ``train.metric_weights``, parsed and checked."""
    return parse_weights("train.metric_weights", config["train.metric_weights"], tasks)


def weighted(split: str, metrics: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """``<split>/weighted`` (or ``_loss``): the weighted sum of the split's metrics named in ``weights``
    (given as valid metrics); left out when one of them is missing."""
    if not weights:
        return {}
    total = 0.0
    for name, w in weights.items():
        value = metrics.get(split + name[len("valid"):])
        if value is None:
            return {}
        total += w * value
    losses = not better(next(iter(weights)), 1.0, 0.0)
    return {f"{split}/weighted{'_loss' if losses else ''}": total / sum(weights.values())}


def check_metric(key: str, metric: str, tasks: list[str]) -> None:
    """``metric`` must be a valid-split metric these tasks can produce (``valid/click_auc`` ...)."""
    valid = ["valid/mean_auc", "valid/ctcvr_auc", WEIGHTED, WEIGHTED + "_loss"] + [
        f"valid/{t}_{s}" for t in tasks for s in SUFFIXES]
    if metric not in valid:
        from rectune.errors import ConfigError, closest

        close = closest(metric, valid)
        hint = f" (did you mean '{close}'?)" if close else ""
        raise ConfigError(f"{key}: '{metric}' is not a metric of this dataset{hint}; expected one of {', '.join(valid)}")


def better(metric: str, new: float, old: float | None) -> bool:
    """Whether ``new`` improves on ``old`` for ``metric`` (losses go down, the rest go up)."""
    if old is None:
        return True
    return new < old if metric.endswith("logloss") or metric.endswith("loss") else new > old
