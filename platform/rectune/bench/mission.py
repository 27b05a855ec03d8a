"""``rectune bench mission``: a campaign's best against the baseline, its ablations and tuned peers.

After a campaign (``rectune tune``) on a benchmark table, on the same rows and the same seeds:

- rectune: ``rectune results evaluate NAME --top 1 --ablate`` — the baseline, the campaign's best
  configuration and the best with each component off (augmentation, KG + text fusion, multi-task
  weighting), each retrained with ``seeds`` seeds (the campaign's seed + 1 ...), test AUC per task
  and cold-item AUC per task at the best valid epoch;
- peers: torch-rechub's models (``peer_rechub.py`` in the peer environment, ``make bench-peers``):
  MMoE, PLE and ESMM on a multi-task table, DeepFM and DCN on a single-task one, with the behaviour
  history mean-pooled. Each peer is tuned the same way every time: its learning rate is picked
  from ``peer_lrs`` on the first seed by the mean valid AUC at the best epoch, then that learning
  rate runs the other seeds. That is a small search next to the campaign's: the comparison favours
  rectune's tuning effort, and the report says so.

The goal (issue 7): the campaign's best at least ``GOAL`` AUC above the best peer on every task
(means over the seeds). Peer runs go beside the rectune runs (a second thread, one torch thread
each) since only quality is compared here; they are kept as JSON under ``OUT/peers`` and reused
when the bench runs again, as the rectune runs are.
"""

from __future__ import annotations

import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rectune.bench.train import peer_status, run_peer
from rectune.data.prepared import open_dataset
from rectune.results.evaluate import candidates, evaluate, evaluation_out, evaluation_seeds, mean_std
from rectune.results.evaluate import table as evaluate_table
from rectune.results.export import write_atomic
from rectune.results.store import Campaign

GOAL = 0.01
PEER_LRS = (1e-3, 3e-3)
"""the learning rates each peer picks from on the first seed"""
MULTI_TASK_PEERS = ("mmoe", "ple", "esmm")
SINGLE_TASK_PEERS = ("deepfm", "dcn")


def peer_models(tasks: list[str]) -> tuple[str, ...]:
    return MULTI_TASK_PEERS if len(tasks) > 1 else SINGLE_TASK_PEERS


def _peer_run(peer_python, data: Path, out: Path, model: str, lr: float, seed: int, epochs: int,
              console: Console) -> dict:
    f = out / f"{model}-lr{lr:g}-seed{seed}.json"
    if f.is_file():
        return json.loads(f.read_text())
    r = run_peer(peer_python, data, seed, epochs, 1024, 16, lr, history=True, threads=1, model=model)
    if "error" in r:
        console.print(f"[red]peer {model} lr {lr:g} seed {seed}: {r['error']}[/red]")
        return r
    f.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(f, lambda p: p.write_text(json.dumps(r, default=float)))
    console.print(f"peer {model} lr {lr:g} seed {seed}: valid {r['valid_mean_auc']:.4f}, test " +
                  ", ".join(f"{t} {v:.4f}" for t, v in r["test_auc"].items()))
    return r


def tune_peer(peer_python, data: Path, out: Path, model: str, seeds: list[int], lrs: list[float], epochs: int,
              console: Console) -> dict:
    """The learning rate with the best valid mean AUC on ``seeds[0]``, then the other seeds with it."""
    trials = {lr: _peer_run(peer_python, data, out, model, lr, seeds[0], epochs, console) for lr in lrs}
    ok = {lr: r for lr, r in trials.items() if "error" not in r}
    if not ok:
        return {"model": model, "error": next(iter(trials.values()))["error"]}
    lr = max(ok, key=lambda x: ok[x]["valid_mean_auc"])
    runs = [ok[lr]] + [_peer_run(peer_python, data, out, model, lr, s, epochs, console) for s in seeds[1:]]
    runs = [r for r in runs if "error" not in r]
    return {"model": model, "lr": lr, "lr_grid": {f"{k:g}": r.get("valid_mean_auc") for k, r in trials.items()},
            "seeds": len(runs), "test_auc": _stats(runs, "test_auc"), "test_cold_auc": _stats(runs, "test_cold_auc")}


def _stats(runs: list[dict], key: str) -> dict[str, dict[str, float]]:
    tasks = {t for r in runs for t in r.get(key, {})}
    out = {}
    for t in sorted(tasks):
        xs = [r[key][t] for r in runs if t in r.get(key, {})]
        m, sd = mean_std(xs)
        out[t] = {"mean": m, "std": sd, "values": xs}
    return out


def run(c: Campaign, peer_python: str | Path | None, seeds: int = 3, out: str | Path | None = None,
        data: str | Path | None = None, peer_lrs: tuple[float, ...] = PEER_LRS, peer_epochs: int = 5,
        console: Console | None = None) -> dict[str, Any]:
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    data = Path(data or c.meta.get("data") or "").resolve()
    ds = open_dataset(data)
    candidates(c, 1)  # a campaign with nothing to evaluate is refused before anything runs or is written
    tasks = list(ds.schema.tasks)
    out = evaluation_out(c, out)
    seed_list = evaluation_seeds(c, seeds)
    skip = peer_status(peer_python)
    if skip:
        console.print(f"[yellow]{skip}[/yellow]")
    peers_out = out / "peers"
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = [] if skip else [
            pool.submit(tune_peer, peer_python, data, peers_out, m, seed_list, list(peer_lrs), peer_epochs, console)
            for m in peer_models(tasks)]
        report = evaluate(c, top=1, seeds=seeds, out=out, data=data, ablate=True, console=console)
        peers = [f.result() for f in futures]
    mission = {"campaign": c.name, "data": str(data), "tasks": tasks, "seeds": seed_list, "evaluate": report,
               "peers": peers, "peer_lrs": list(peer_lrs), "peer_epochs": peer_epochs,
               "versus_best_peer": versus(report, peers, tasks), "goal": GOAL}
    write_atomic(out / "mission.json", lambda p: p.write_text(json.dumps(mission, indent=1, default=float)))
    console.print(evaluate_table(report))
    console.print(table(mission))
    return mission


def versus(report: dict, peers: list[dict], tasks: list[str]) -> dict[str, dict[str, Any]]:
    """Per task: the campaign's best minus the best peer (means over the seeds), and the goal."""
    best = report["rows"][1]["metrics"]
    out = {}
    for t in tasks:
        ok = [p for p in peers if t in p.get("test_auc", {})]
        m = f"test/{t}_auc"
        if not ok or m not in best:
            continue
        top = max(ok, key=lambda p: p["test_auc"][t]["mean"])
        diff = best[m]["mean"] - top["test_auc"][t]["mean"]
        out[t] = {"best_peer": top["model"], "difference": diff, "met": diff >= GOAL}
    return out


def _cell(e: dict | None) -> str:
    if not e:
        return "-"
    return f"{e['mean']:.4f} ± {e['std']:.4f}" if not math.isnan(e["std"]) else f"{e['mean']:.4f}"


def table(mission: dict) -> Table:
    tasks = mission["tasks"]
    t = Table(title=f"peers (torch-rechub, history mean-pooled, lr picked from "
                    f"{', '.join(f'{x:g}' for x in mission['peer_lrs'])} on seed {mission['seeds'][0]}) against "
                    f"the campaign's best, test AUC mean ± std over seeds {', '.join(map(str, mission['seeds']))}",
              title_justify="left")
    t.add_column("side", no_wrap=True)
    for task in tasks:
        t.add_column(f"{task} AUC", justify="right")
    for task in tasks:
        t.add_column(f"{task} cold AUC", justify="right")
    best = mission["evaluate"]["rows"][1]
    t.add_row(f"rectune {best['label']}", *[_cell(best["metrics"].get(f"test/{x}_auc")) for x in tasks],
              *[_cell(best["metrics"].get(f"test/{x}_cold_auc")) for x in tasks])
    for p in mission["peers"]:
        if "error" in p:
            t.add_row(f"{p['model']}: {p['error']}", *["-"] * (2 * len(tasks)))
            continue
        t.add_row(f"{p['model']} (lr {p['lr']:g})", *[_cell(p["test_auc"].get(x)) for x in tasks],
                  *[_cell(p["test_cold_auc"].get(x)) for x in tasks])
    vs = mission["versus_best_peer"]
    t.add_row(f"best − best peer (goal ≥ +{mission['goal']})",
              *[f"{vs[x]['difference']:+.4f} vs {vs[x]['best_peer']}: " + ("met" if vs[x]["met"] else "NOT met")
                if x in vs else "-" for x in tasks], *[""] * len(tasks))
    return t
