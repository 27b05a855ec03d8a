"""``rectune bench mission``: a campaign's best against the baseline, its ablations and tuned peers.

After a campaign (``rectune tune``) on a benchmark table, on the same rows and the same seeds:

- rectune: ``rectune results evaluate NAME --top K --ablate`` — the baseline, the campaign's ``K``
  best configurations and the pick among them (the best mean valid objective over the seeds; with
  ``K`` = 1 the campaign's best) with each component off (augmentation, KG + text fusion,
  multi-task weighting), each retrained with ``seeds`` seeds (the campaign's seed + 1 ...), test
  AUC per task and cold-item AUC per task at the best valid epoch;
- peers: torch-rechub's models (``peer_rechub.py`` in the peer environment, ``make bench-peers``):
  MMoE, PLE and ESMM on a multi-task table, DeepFM and DCN on a single-task one, with the behaviour
  history mean-pooled. Each peer gets its own search (``peer_search.py``): ``peer_trials`` TPE
  trials over its learning rate, weight decay, dropout and embedding size on the first seed
  (default: as many trials as the campaign completed), then its best on the other seeds.

The goal: the pick at least ``GOAL`` AUC above the best peer on every task
(means over the seeds). Peer runs go beside the rectune runs (a second thread, one torch thread
each) since only quality is compared here; they are kept as JSON under ``OUT/peers`` and reused
when the bench runs again, as the rectune runs are.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rectune.bench.peer_search import describe_search, hparams, peer_cells, peer_models, search_peer
from rectune.bench.train import peer_status
from rectune.data.prepared import open_dataset
from rectune.errors import ConfigError
from rectune.results.evaluate import candidates, cell, evaluate, evaluation_out, evaluation_seeds, pick_row
from rectune.results.evaluate import table as evaluate_table
from rectune.results.export import write_atomic
from rectune.results.store import Campaign

GOAL = 0.01


def run(c: Campaign, peer_python: str | Path | None, seeds: int = 3, out: str | Path | None = None,
        data: str | Path | None = None, peer_trials: int | None = None, peer_jobs: int = 1, peer_epochs: int = 5,
        top: int = 1, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    data = Path(data or c.meta.get("data") or "").resolve()
    ds = open_dataset(data)
    # a campaign with nothing to evaluate is refused before anything runs or is written
    features = {tuple(cand.config["model.features"]) for cand in candidates(c, top)[1:]}
    if len(features) > 1:
        raise ConfigError(f"--top {top}: the candidates read different columns (model.features "
                          f"{sorted(list(f) for f in features)}); the peers read one set: use --top 1")
    fields = list(features.pop()) or None  # the peers read the columns the candidates read
    peer_trials = peer_trials or len(c.completed())
    tasks = list(ds.schema.tasks)
    out = evaluation_out(c, out)
    seed_list = evaluation_seeds(c, seeds)
    skip = peer_status(peer_python)
    if skip:
        console.print(f"[yellow]{skip}[/yellow]")
    peers_out = out / "peers"
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = [] if skip else [
            pool.submit(search_peer, peer_python, data, peers_out, m, seed_list, peer_trials, peer_epochs,
                        peer_jobs, console, fields=fields) for m in peer_models(tasks)]
        report = evaluate(c, top=top, seeds=seeds, out=out, data=data, ablate=True, console=console)
        peers = [f.result() for f in futures]
    mission = {"campaign": c.name, "data": str(data), "tasks": tasks, "seeds": seed_list, "evaluate": report,
               "peers": peers, "peer_trials": peer_trials, "peer_fields": fields, "peer_search": describe_search(),
               "peer_epochs": peer_epochs,
               "versus_best_peer": versus(report, peers, tasks), "goal": GOAL}
    write_atomic(out / "mission.json", lambda p: p.write_text(json.dumps(mission, indent=1, default=float)))
    console.print(evaluate_table(report))
    console.print(table(mission))
    return mission


def versus(report: dict, peers: list[dict], tasks: list[str]) -> dict[str, dict[str, Any]]:
    """Per task: the pick minus the best peer (means over the seeds), and the goal."""
    best = pick_row(report)["metrics"]
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


def table(mission: dict) -> Table:
    tasks = mission["tasks"]
    peers = (f"peers (torch-rechub, history mean-pooled, each the best of {mission['peer_trials']} trials on seed "
             f"{mission['seeds'][0]})" if mission["peers"] else "no peers run")
    t = Table(title=f"{peers} against the pick, test AUC mean ± std over seeds "
                    f"{', '.join(map(str, mission['seeds']))}", title_justify="left")
    t.add_column("side", no_wrap=True)
    for task in tasks:
        t.add_column(f"{task} AUC", justify="right")
    for task in tasks:
        t.add_column(f"{task} cold AUC", justify="right")
    best = pick_row(mission["evaluate"])
    t.add_row(f"rectune {best['label']}", *[cell(best["metrics"].get(f"test/{x}_auc")) for x in tasks],
              *[cell(best["metrics"].get(f"test/{x}_cold_auc")) for x in tasks])
    for p in mission["peers"]:
        if "error" in p:
            t.add_row(f"{p['model']}: {p['error']}", *["-"] * (2 * len(tasks)))
            continue
        t.add_row(f"{p['model']} ({hparams(p)})", *peer_cells(p, tasks))
    vs = mission["versus_best_peer"]
    t.add_row(f"pick − best peer (goal ≥ +{mission['goal']})",
              *[f"{vs[x]['difference']:+.4f} vs {vs[x]['best_peer']}: " + ("met" if vs[x]["met"] else "NOT met")
                if x in vs else "-" for x in tasks], *[""] * len(tasks))
    return t
