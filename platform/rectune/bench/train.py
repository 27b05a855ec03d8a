"""``rectune bench train``: training speed and quality of rectune's MMoE, side by side.

For each seed, on the same rows and the same settings (``model.mtl=mmoe``, embedding width,
batch size, Adam learning rate, epochs, best epoch by the mean valid AUC, no augmentation):

- **plain**: :func:`rectune.train.local.fit_local` — a plain PyTorch loop in this process over
  tensors already in memory (the limit of one machine; loading the tensors is not timed);
- **ray**: what ``rectune train`` does (:func:`rectune.train.run.train`): Ray Train with one
  worker fed by the Ray Data stream; Ray is started once for all seeds with the machine's CPUs;
- **torch-rechub**: its MMoE (``peer_rechub.py``) in a subprocess of the peer environment's
  python (``make bench-peers``), with the behaviour history mean-pooled (the same features as
  rectune) and, unless turned off, without it (the published setting).

Epoch time is the training part of an epoch (scoring valid/test excluded on every side). The
steady-state figure is the median over epochs after the first (and, as a figure that a busy
machine disturbs less, the fastest of those epochs over all seeds): Ray's first epoch also pulls the
worker's shard out of the Ray Data stream, and Ray's start-up and each run's set-up are reported
apart (the run's wall time less its epochs). Samples/s = training rows / steady epoch time. Test
AUC is taken at each run's best valid epoch, mean ± std over the seeds. Peak memory is the
maximum RSS: of this process after its first plain run (data + training, before Ray starts), of
the Ray Train worker (its ``train/max_rss_mb`` metric) and of the peer process.

``variants`` runs extra rectune configurations (plain loop only, for quality): e.g.
``{"optim.lr=0.003": {"optim.lr": 0.003}}``.
"""

from __future__ import annotations

import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rectune.data.prepared import open_dataset

PEER_SCRIPT = Path(__file__).with_name("peer_rechub.py")
GOALS = {"ray_vs_plain_epoch": 1.25, "rectune_vs_rechub_samples": 2.0}


def bench_config(seed: int, epochs: int, batch_size: int, emb: int, lr: float, sets: dict | None = None):
    from rectune.runconfig import RunConfig

    cfg = RunConfig({"model.mtl": "mmoe", "model.emb_dim": emb, "train.epochs": epochs, "train.batch_size": batch_size,
                     "optim.lr": lr, "train.seed": seed, "train.patience": 0, "train.metric": "valid/mean_auc"})
    cfg.update(sets or {})
    if cfg.augment().enabled():
        from rectune.errors import ConfigError

        raise ConfigError(f"bench train compares training without augmentation; these sets enable "
                          f"{', '.join(cfg.augment().enabled())}")
    return cfg


def steady_epoch(times: list[float]) -> float:
    """Median epoch time after the first (the first alone when there is one epoch)."""
    return statistics.median(times[1:]) if len(times) > 1 else times[0]


def _best(history: list[dict], best_epoch: int, tasks: list[str]) -> dict[str, float]:
    at = history[best_epoch]
    return {t: float(at[f"test/{t}_auc"]) for t in tasks}


def run_plain(ds, cfg, data: dict) -> dict:
    from rectune.train.local import fit_local

    t0 = time.perf_counter()
    r = fit_local(ds, cfg, splits=("valid", "test"), data=dict(data))
    wall = time.perf_counter() - t0
    times = [m["train/time_s"] for m in r.state.history]
    return {"epoch_s": times, "wall_s": wall, "best_epoch": r.state.best_epoch,
            "test_auc": _best(r.state.history, r.state.best_epoch, ds.schema.tasks)}


def run_ray(path, ds, cfg, out: Path) -> dict:
    from rectune.train.run import train

    t0 = time.perf_counter()
    result = train(path, cfg, out, console=Console(file=io.StringIO()))
    wall = time.perf_counter() - t0
    hist = result.metrics["history"]
    times = [m["train/time_s"] for m in hist]
    evals = [m.get("eval/time_s", 0.0) for m in hist]
    return {"epoch_s": times, "wall_s": wall, "setup_s": wall - sum(times) - sum(evals),
            "best_epoch": result.metrics["best_epoch"], "test_auc": _best(hist, result.metrics["best_epoch"],
                                                                          ds.schema.tasks),
            "worker_peak_rss_mb": max(m.get("train/max_rss_mb", float("nan")) for m in hist)}


def peer_problem(peer_python: str | Path | None) -> str | None:
    """None when the peer environment can run, else what is wrong with it."""
    if peer_python is None:
        return "no peer python given (make bench-peers, then --peer-python .venv-peers/bin/python)"
    if not Path(peer_python).exists():
        return f"peer python {peer_python} not found (make bench-peers makes .venv-peers)"
    return None


def peer_status(peer_python: str | Path | None) -> str | None:
    """None when the peer side can run, else the reason it is skipped."""
    problem = peer_problem(peer_python)
    return None if problem is None else f"torch-rechub side skipped: {problem}"


def run_peer(peer_python, path, seed: int, epochs: int, batch_size: int, emb: int, lr: float, history: bool,
             threads: int, timeout: float | None = None, model: str = "mmoe", extra: list[str] | None = None,
             nice: int = 0) -> dict:
    """One run of ``peer_rechub.py`` (torch-rechub's ``model``; ``extra``: more of its options, e.g.
    ``["--dropout", "0.1"]``; ``nice``: added to the peer process's niceness); its figures, or
    ``{"error": ...}``. The AUCs are per task name, at the best valid epoch (by the mean valid AUC)."""
    cmd = [str(peer_python), str(PEER_SCRIPT), str(path), "--seed", str(seed), "--epochs", str(epochs),
           "--batch-size", str(batch_size), "--emb", str(emb), "--lr", str(lr), "--threads", str(threads),
           "--model", model]
    if history:
        cmd.append("--history")
    cmd += [str(x) for x in extra or []]
    if nice:  # nice(1), not preexec_fn: runs start from several threads (peer_search), where preexec_fn is unsafe
        cmd = ["nice", "-n", str(nice), *cmd]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    wall = time.perf_counter() - t0
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    r = json.loads(lines[-1])

    def per_task(d: dict) -> dict[str, float]:
        return {k[: -len("_auc")]: v for k, v in d.items() if k.endswith("_auc")}

    return {"epoch_s": [e["train_s"] for e in r["epochs"]], "epoch_lr": [e.get("lr") for e in r["epochs"]],
            "wall_s": wall, "best_epoch": r["best_epoch"],
            "test_auc": per_task(r["test"]), "peak_rss_mb": r["peak_rss_mb"],
            "threads": r["threads"], "params": r["params"], "versions": r["versions"],
            "model": r.get("model", model), "test_cold_auc": per_task(r.get("test_cold", {})),
            "valid_auc": per_task(r.get("valid", {})), "valid_mean_auc": r.get("valid_mean_auc", float("nan"))}


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict], tasks: list[str], rows: int) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"runs": runs}
    steady = [steady_epoch(r["epoch_s"]) for r in ok]
    fastest = min(x for r in ok for x in (r["epoch_s"][1:] or r["epoch_s"]))
    out = {"runs": runs, "epoch_s": statistics.median(steady), "first_epoch_s": statistics.median(
        r["epoch_s"][0] for r in ok), "samples_per_s": rows / statistics.median(steady),
           "fastest_epoch_s": fastest, "fastest_samples_per_s": rows / fastest,
           "test_auc": {t: _mean_std([r["test_auc"][t] for r in ok]) for t in tasks}}
    if "setup_s" in ok[0]:
        out["setup_s"] = statistics.median(r["setup_s"] for r in ok)
    for k in ("worker_peak_rss_mb", "peak_rss_mb"):
        if k in ok[0]:
            out[k] = max(r[k] for r in ok)
    return out


def run(path: str | Path, seeds: int = 3, epochs: int = 5, batch_size: int = 1024, emb: int = 16, lr: float = 1e-3,
        peer_python: str | Path | None = None, sets: dict | None = None, variants: dict[str, dict] | None = None,
        peer_without_history: bool = True, ray_side: bool = True, console: Console | None = None) -> dict:
    """Every side for seeds ``0 .. seeds-1``, printed side by side; returns the figures."""
    import torch

    from rectune.train.tensors import TensorRows

    # every configuration is checked (a bad key refused) before the first run
    arch = [bench_config(0, epochs, batch_size, emb, lr, {**(sets or {}), **v})
            for v in [{}, *(variants or {}).values()]][0]["model.mtl"]
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    started = time.perf_counter()
    path = Path(path).resolve()  # the Ray worker opens it by this name, from another working directory
    ds = open_dataset(path)
    tasks = list(ds.schema.tasks)
    rows = ds.schema.rows["train"]
    threads = torch.get_num_threads()
    data = {s: TensorRows.from_split(ds, s) for s in ("train", "valid", "test")}
    skip = peer_status(peer_python)
    if skip:
        console.print(f"[yellow]{skip}[/yellow]")
    sides: dict[str, list[dict]] = {"plain": []}
    if ray_side:
        sides["ray"] = []
    if not skip:
        sides["rechub_hist"] = []
        if peer_without_history:
            sides["rechub_nohist"] = []
    for name in variants or {}:
        sides[f"variant:{name}"] = []
    console.print(f"bench train: {ds.schema.name} ({rows:,} train rows), {arch}, emb {emb}, batch {batch_size}, "
                  f"Adam lr {lr}, {epochs} epoch(s), seeds 0..{seeds - 1}, no augmentation; torch threads in this "
                  f"process: {threads}" + (f"; extra sets: {sets}" if sets else ""))
    plain_rss = None
    ray_started = False
    ray_start_s = None
    with tempfile.TemporaryDirectory(prefix="rectune-bench-train-") as tmp:
        try:
            for seed in range(seeds):
                cfg = bench_config(seed, epochs, batch_size, emb, lr, sets)
                r = run_plain(ds, cfg, data)
                sides["plain"].append(r)
                if plain_rss is None:
                    plain_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                _say(console, "plain", seed, r)
                if ray_side:
                    if not ray_started:
                        import ray

                        from rectune.train.run import start_ray

                        t0 = time.perf_counter()
                        ray_started = start_ray(None, cpus=os.cpu_count())
                        ray_start_s = time.perf_counter() - t0
                        ray.data.DataContext.get_current().enable_progress_bars = False
                    r = run_ray(path, ds, cfg, Path(tmp) / f"ray-{seed}")
                    sides["ray"].append(r)
                    _say(console, "ray", seed, r)
                if not skip:
                    for key, hist in (("rechub_hist", True), ("rechub_nohist", False)):
                        if key not in sides:
                            continue
                        r = run_peer(peer_python, path, seed, epochs, batch_size, emb, lr, hist, threads)
                        sides[key].append(r)
                        _say(console, key, seed, r)
                for name, vsets in (variants or {}).items():
                    r = run_plain(ds, bench_config(seed, epochs, batch_size, emb, lr, {**(sets or {}), **vsets}), data)
                    sides[f"variant:{name}"].append(r)
                    _say(console, f"variant:{name}", seed, r)
        finally:
            if ray_started:
                import ray

                ray.shutdown()
    summary = {k: summarise(v, tasks, rows) for k, v in sides.items()}
    figures = {"dataset": ds.schema.name, "train_rows": rows, "seeds": seeds, "epochs": epochs,
               "batch_size": batch_size, "emb": emb, "lr": lr, "sets": sets or {}, "threads": threads,
               "plain_peak_rss_mb": plain_rss, "ray_start_s": ray_start_s, "peer_skipped": skip,
               "sides": summary, "total_s": time.perf_counter() - started}
    figures["goals"] = goals(figures, tasks)
    _print(console, figures, tasks)
    return figures


def _say(console: Console, side: str, seed: int, r: dict) -> None:
    side = escape(f"{side:>15}")  # a variant's value may hold [list] brackets, which rich reads as markup
    if "error" in r:
        console.print(f"  seed {seed} {side}: [red]failed[/red] {escape(r['error'])}")
        return
    auc = " ".join(f"{t} {v:.4f}" for t, v in r["test_auc"].items())
    console.print(f"  seed {seed} {side}: epochs {', '.join(f'{x:.1f}' for x in r['epoch_s'])} s; "
                  f"best epoch {r['best_epoch']}; test AUC {auc}; wall {r['wall_s']:.0f} s")


def goals(fig: dict, tasks: list[str]) -> dict:
    s = fig["sides"]
    out: dict = {}
    plain, ray, peer = s.get("plain", {}), s.get("ray", {}), s.get("rechub_hist", {})
    if "epoch_s" in plain and "epoch_s" in ray:
        ratio = ray["epoch_s"] / plain["epoch_s"]
        out["ray_vs_plain_epoch"] = {"ratio": ratio, "goal": f"<= {GOALS['ray_vs_plain_epoch']}x",
                                     "met": ratio <= GOALS["ray_vs_plain_epoch"],
                                     "fastest_ratio": ray["fastest_epoch_s"] / plain["fastest_epoch_s"]}
    rectune = ray if "samples_per_s" in ray else plain
    if "samples_per_s" in rectune and "samples_per_s" in peer:
        ratio = rectune["samples_per_s"] / peer["samples_per_s"]
        out["rectune_vs_rechub_samples"] = {"ratio": ratio, "goal": f">= {GOALS['rectune_vs_rechub_samples']}x",
                                            "met": ratio >= GOALS["rectune_vs_rechub_samples"],
                                            "fastest_ratio": rectune["fastest_samples_per_s"]
                                            / peer["fastest_samples_per_s"],
                                            "rectune_side": "ray" if rectune is ray else "plain"}
    if "test_auc" in rectune and "test_auc" in peer:
        diff = {t: rectune["test_auc"][t][0] - peer["test_auc"][t][0] for t in tasks}
        out["auc_at_least_rechub"] = {"diff": diff, "goal": "rectune mean >= torch-rechub mean on every task",
                                      "met": all(d >= 0 for d in diff.values()),
                                      "rectune_side": "ray" if rectune is ray else "plain"}
    return out


NAMES = {"plain": "rectune, plain loop (in process)", "ray": "rectune, Ray Train (1 worker)",
         "rechub_hist": "torch-rechub MMOE, hist mean-pooled", "rechub_nohist": "torch-rechub MMOE, no history"}


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _print(console: Console, fig: dict, tasks: list[str]) -> None:
    s = fig["sides"]
    rows = fig["train_rows"]
    plain = s.get("plain", {})
    table = Table(title=f"training speed: {fig['dataset']}, {rows:,} rows per epoch, batch {fig['batch_size']}, "
                        f"emb {fig['emb']}; median over {fig['seeds']} seed(s)", title_justify="left")
    for col in ("side", "steady epoch s", "first epoch s", "samples/s", "vs plain (time)", "fastest epoch s",
                "samples/s (fastest)", "run set-up s", "peak RSS MB"):
        table.add_column(col, justify="left" if col == "side" else "right")
    for key, v in s.items():
        if "epoch_s" not in v:
            continue
        rss = v.get("worker_peak_rss_mb", v.get("peak_rss_mb", fig["plain_peak_rss_mb"] if key == "plain" else None))
        table.add_row(escape(NAMES.get(key, key)), _fmt(v["epoch_s"], ".2f"), _fmt(v["first_epoch_s"], ".2f"),
                      _fmt(v["samples_per_s"], ",.0f"),
                      f"{v['epoch_s'] / plain['epoch_s']:.2f}x" if "epoch_s" in plain else "–",
                      _fmt(v["fastest_epoch_s"], ".2f"), _fmt(v["fastest_samples_per_s"], ",.0f"),
                      _fmt(v.get("setup_s"), ".1f"), _fmt(rss, ",.0f"))
    console.print(table)
    if fig.get("ray_start_s") is not None:
        console.print(f"Ray start-up (once): {fig['ray_start_s']:.1f} s. Peak RSS: plain = this process after its "
                      f"first run (data + training); Ray = the Train worker; torch-rechub = its process.")
    q = Table(title=f"test AUC at the best valid epoch (of up to {fig['epochs']}), mean ± std over {fig['seeds']} "
                    f"seed(s)", title_justify="left")
    q.add_column("side")
    for t in tasks:
        q.add_column(f"{t} AUC", justify="right")
    q.add_column("best epochs", justify="right")
    for key, v in s.items():
        if "test_auc" not in v:
            continue
        q.add_row(escape(NAMES.get(key, key)), *[f"{v['test_auc'][t][0]:.4f} ± {v['test_auc'][t][1]:.4f}" for t in tasks],
                  ",".join(str(r["best_epoch"]) for r in v["runs"] if "error" not in r))
    console.print(q)
    if fig.get("peer_skipped"):
        console.print(f"[yellow]{fig['peer_skipped']}[/yellow]")
    g = fig["goals"]
    lines = []
    if "ray_vs_plain_epoch" in g:
        x = g["ray_vs_plain_epoch"]
        lines.append(f"epoch time Ray/plain {x['ratio']:.3f}x (goal {x['goal']}): {_met(x['met'])}; "
                     f"fastest epochs: {x['fastest_ratio']:.3f}x")
    if "rectune_vs_rechub_samples" in g:
        x = g["rectune_vs_rechub_samples"]
        lines.append(f"samples/s rectune ({x['rectune_side']})/torch-rechub (hist) {x['ratio']:.2f}x "
                     f"(goal {x['goal']}): {_met(x['met'])}; fastest epochs: {x['fastest_ratio']:.2f}x")
    if "auc_at_least_rechub" in g:
        x = g["auc_at_least_rechub"]
        diffs = ", ".join(f"{t} {d:+.4f}" for t, d in x["diff"].items())
        lines.append(f"test AUC rectune ({x['rectune_side']}) − torch-rechub (hist): {diffs} "
                     f"(goal ≥ 0 on every task): {_met(x['met'])}")
    for line in lines:
        console.print(line)
    console.print(f"total {fig['total_s'] / 60:.1f} min")


def _met(ok: bool) -> str:
    return "[green]met[/green]" if ok else "[red]not met[/red]"


if __name__ == "__main__":  # pragma: no cover - `rectune bench train` is the entry point
    run(sys.argv[1])
