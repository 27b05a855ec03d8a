"""A peer's own hyperparameter search: torch-rechub's models tuned with the effort a campaign gets.

The mission's comparison asks for peers "with comparable tuning effort". Each peer gets
``trials`` runs drawn by Optuna's TPE sampler (fixed seed) over its own hyperparameters,
``PEER_SPACE``: the learning rate and its schedule over the epochs, the weight decay, the dropout
of its MLPs and the embedding size, the knobs rectune's campaigns search beside their components. The first trial is the
peer's defaults (``PEER_START``: torch-rechub's examples), so the search keeps the untuned peer
among its candidates. Every trial trains on the first seed; the trial with the best mean valid
AUC (at its best epoch) is then trained on the other seeds, and those runs are the peer's figures.

Runs go ``jobs`` at a time (one torch thread each, at Ray's worker niceness); each is kept as
JSON under ``out`` and reused when the search runs again. The sampler is told the trials in the order it asked for them, so a
rerun draws the same trials and reuses every finished one.
"""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from rectune.bench.train import peer_problem, run_peer
from rectune.errors import ConfigError
from rectune.results.evaluate import cell, mean_std
from rectune.results.export import write_atomic

MULTI_TASK_PEERS = ("mmoe", "ple", "esmm")
SINGLE_TASK_PEERS = ("deepfm", "dcn")

PEER_SPACE: dict[str, tuple] = {
    "lr": ("log", 3e-4, 1e-2),
    "weight_decay": ("log", 1e-7, 1e-4),
    "dropout": ("float", 0.0, 0.3),
    "emb": ("choice", 8, 16, 32),
    "schedule": ("choice", "constant", "cosine", "linear"),
}
"""name: (kind, ...): "log" / "float" (low, high), "choice" (values)"""
PEER_START = {"lr": 1e-3, "weight_decay": 1e-5, "dropout": 0.0, "emb": 16, "schedule": "constant"}
"""torch-rechub's example settings: the search's first trial"""
SAMPLER_SEED = 0
PEER_NICE = 15
"""Added to each peer run's niceness: Ray's default for its workers, so that peers beside a campaign or an
evaluation (``bench mission`` runs them side by side) share the CPU with its trials instead of starving them."""
STARTUP_TRIALS = 4


def peer_models(tasks: list[str]) -> tuple[str, ...]:
    return MULTI_TASK_PEERS if len(tasks) > 1 else SINGLE_TASK_PEERS


def run_name(model: str, params: dict[str, Any], seed: int, fields: list[str] | None = None) -> str:
    """The file name of one run: the model, its parameters (rounded as stored; the schedule when it is
    not constant, so that the runs kept before it was searched keep their names), the fields it reads
    (a digest, when not all) and the seed."""
    digest = f"-f{hashlib.sha1(','.join(sorted(fields)).encode()).hexdigest()[:8]}" if fields else ""
    schedule = params.get("schedule", "constant")
    decay = f"-{schedule}" if schedule != "constant" else ""
    return (f"{model}-lr{params['lr']:.3g}{decay}-wd{params['weight_decay']:.3g}-do{params['dropout']:.3g}"
            f"-emb{params['emb']}{digest}-seed{seed}")


def _rounded(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as the runs use them: three significant digits (the file name says the same)."""
    return {k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in params.items()}


def _suggest(trial) -> dict[str, Any]:
    out = {}
    for name, (kind, *args) in PEER_SPACE.items():
        if kind == "choice":
            out[name] = trial.suggest_categorical(name, list(args))
        else:
            out[name] = trial.suggest_float(name, args[0], args[1], log=kind == "log")
    return _rounded(out)


def peer_run(peer_python, data: Path, out: Path, model: str, params: dict[str, Any], seed: int, epochs: int,
             console: Console, fields: list[str] | None = None) -> dict:
    """One training of ``model`` with ``params`` on ``seed``, reading ``fields`` only (default:
    all); reused from ``out`` when it is there."""
    f = out / f"{run_name(model, params, seed, fields)}.json"
    if f.is_file():
        return json.loads(f.read_text())
    extra = ["--weight-decay", params["weight_decay"], "--dropout", params["dropout"],
             "--schedule", params.get("schedule", "constant")]
    if fields:
        extra += ["--fields", ",".join(fields)]
    r = run_peer(peer_python, data, seed, epochs, 1024, int(params["emb"]), params["lr"], history=True, threads=1,
                 model=model, extra=extra, nice=PEER_NICE)
    label = f"peer {run_name(model, params, seed, fields)}"
    if "error" in r:
        console.print(f"[red]{label}: {r['error']}[/red]")
        return r
    r["hparams"] = params
    f.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(f, lambda p: p.write_text(json.dumps(r, default=float)))
    console.print(f"{label}: valid {r['valid_mean_auc']:.4f}, test " +
                  ", ".join(f"{t} {v:.4f}" for t, v in r["test_auc"].items()))
    return r


def search_peer(peer_python, data: Path, out: Path, model: str, seeds: list[int], trials: int, epochs: int,
                jobs: int = 1, console: Console | None = None, runner: Callable[..., dict] = peer_run,
                fields: list[str] | None = None) -> dict:
    """``trials`` TPE trials of ``model`` on ``seeds[0]``, then the best one on the other seeds;
    ``fields``: the only fields the peer reads (default: all of the schema's).

    The result: the chosen parameters, every trial's parameters and valid mean AUC, and the test
    AUC (all rows and cold items) per task as mean, std and values over the seeds."""
    import optuna

    if trials < 1:
        raise ValueError(f"trials {trials}: expected at least 1")
    console = console or Console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=SAMPLER_SEED, n_startup_trials=STARTUP_TRIALS)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(dict(PEER_START))
    done: list[tuple[dict, dict]] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while len(done) < trials:
            asked = [study.ask() for _ in range(min(jobs, trials - len(done)))]
            params = [_suggest(t) for t in asked]
            runs = list(pool.map(lambda p: runner(peer_python, data, out, model, p, seeds[0], epochs, console,
                                                  fields), params))
            for t, p, r in zip(asked, params, runs):
                v = _valid_auc(r)
                study.tell(t, v, state=None if v is not None else optuna.trial.TrialState.FAIL)
                done.append((p, r))
        ok = [(p, r) for p, r in done if _valid_auc(r) is not None]
        if not ok:
            return {"model": model, "error": next(r["error"] for _, r in done if "error" in r)}
        best_params, best_run = max(ok, key=lambda pr: pr[1]["valid_mean_auc"])
        rest = list(pool.map(lambda s: runner(peer_python, data, out, model, best_params, s, epochs, console,
                                              fields), seeds[1:]))
    runs = [r for r in [best_run, *rest] if "error" not in r]
    return {"model": model, "hparams": best_params, "lr": best_params["lr"], "seeds": len(runs), "fields": fields,
            "trials": [{"hparams": p, "valid_mean_auc": r.get("valid_mean_auc"), "error": r.get("error")}
                       for p, r in done],
            "test_auc": stats(runs, "test_auc"), "test_cold_auc": stats(runs, "test_cold_auc")}


def _valid_auc(run: dict) -> float | None:
    """A run's mean valid AUC, None when it failed or the AUC is not finite."""
    v = run.get("valid_mean_auc")
    return v if "error" not in run and v is not None and math.isfinite(v) else None


def stats(runs: list[dict], key: str) -> dict[str, dict[str, float]]:
    """Per task: mean, std and the values over the runs."""
    tasks = {t for r in runs for t in r.get(key, {})}
    out = {}
    for t in sorted(tasks):
        xs = [r[key][t] for r in runs if t in r.get(key, {})]
        m, sd = mean_std(xs)
        out[t] = {"mean": m, "std": sd, "values": xs}
    return out


def describe_search() -> str:
    """The search in one line, for reports."""
    parts = []
    for name, (kind, *args) in PEER_SPACE.items():
        parts.append(f"{name} {{{', '.join(map(str, args))}}}" if kind == "choice"
                     else f"{name} [{args[0]:g}, {args[1]:g}]{' log' if kind == 'log' else ''}")
    return "TPE over " + ", ".join(parts) + " (first trial: torch-rechub's defaults)"


def run_peers(data: str | Path, peer_python: str | Path, out: str | Path, trials: int, seeds: list[int],
              jobs: int = 1, epochs: int = 5, models: list[str] | None = None,
              console: Console | None = None, without: list[str] | None = None) -> dict[str, Any]:
    """Every peer of the dataset's tasks (or ``models``) through ``search_peer``; ``OUT/peers.json``.
    ``without``: fields the peers do not read (they read every row field of the schema otherwise)."""
    from rectune.data.prepared import open_dataset

    console = console or Console(width=160)
    data, out = Path(data).resolve(), Path(out)
    schema = open_dataset(data).schema
    tasks = list(schema.tasks)
    allowed = peer_models(tasks)
    for m in models or []:
        if m not in allowed:
            raise ConfigError(f"--model {m}: expected one of {', '.join(allowed)} for tasks {', '.join(tasks)}")
    names = [f.name for f in schema.row_fields]
    for w in without or []:
        if w not in names:
            raise ConfigError(f"--without {w}: not a field of dataset '{schema.name}'; fields: {', '.join(names)}")
    fields = [n for n in names if n not in without] if without else None
    problem = peer_problem(peer_python)
    if problem:
        raise ConfigError(f"--peer-python: {problem}")
    peers = [search_peer(peer_python, data, out, m, seeds, trials, epochs, jobs, console, fields=fields)
             for m in models or allowed]
    report = {"data": str(data), "tasks": tasks, "seeds": seeds, "trials": trials, "epochs": epochs,
              "search": describe_search(), "fields": fields, "peers": peers}
    write_atomic(out / "peers.json", lambda p: p.write_text(json.dumps(report, indent=1, default=float)))
    console.print(table(report))
    return report


def table(report: dict) -> Table:
    """Each peer's chosen settings and its test AUC (all rows, cold items) per task over the seeds."""
    tasks = report["tasks"]
    t = Table(title=f"torch-rechub peers, each the best of {report['trials']} trials on seed {report['seeds'][0]} "
                    f"({describe_search()}), test AUC mean ± std over seeds {', '.join(map(str, report['seeds']))}",
              title_justify="left")
    for c in ("peer", "settings", *[f"{x} AUC" for x in tasks], *[f"{x} cold AUC" for x in tasks]):
        t.add_column(c, justify="left" if c in ("peer", "settings") else "right")
    for p in report["peers"]:
        if "error" in p:
            t.add_row(p["model"], p["error"], *["-"] * (2 * len(tasks)))
            continue
        t.add_row(p["model"], hparams(p), *peer_cells(p, tasks))
    return t


def peer_cells(peer: dict, tasks: list[str]) -> list[str]:
    """A searched peer's test AUC per task, then its cold-item AUC per task."""
    return [cell(peer[k].get(x)) for k in ("test_auc", "test_cold_auc") for x in tasks]


def hparams(peer: dict) -> str:
    """A peer's chosen settings, short."""
    h = peer.get("hparams") or {"lr": peer.get("lr")}
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in h.items())

