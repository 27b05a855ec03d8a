"""``rectune train``: one training run by Ray Train, with a live per-epoch table, into a run folder.

Run folder (``--out``)::

    config.yaml      the resolved configuration (every key; `rectune train --config` takes it)
    metrics.json     per-epoch metrics, the best epoch and its metrics (valid and test)
    checkpoint/      the last checkpoint: best.pt (best epoch's weights), model.pt, optim.pt, ema.pt (optim.ema), state.json
    ray/             Ray Train's own storage (checkpoints as reported; a rerun with --resume uses it)

Ray: a local Ray is started (dashboard off, nothing bound beyond 127.0.0.1) unless ``address``
is given. The :class:`~rectune.pipeline.ResourcePlan` sizes the Train worker and the Data steps
from the cluster's CPUs so that an epoch also runs to its end on a 2-CPU machine.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from rectune.data.prepared import PreparedDataset, open_dataset
from rectune.errors import ConfigError
from rectune.models.model import build_model, schema_fingerprint, side_data
from rectune.runconfig import RunConfig
from rectune.train.progress import Progress
from rectune.train.tensors import train_item_status


@dataclass
class TrainResult:
    out: Path
    metrics: dict
    """``history`` (per epoch), ``best_epoch``, ``best`` (that epoch's metrics)."""


def start_ray(address: str | None, cpus: int | None = None) -> bool:
    """Connect to ``address`` or start a local Ray; True when this call started it."""
    import ray

    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return False
    # address="local": always a new private Ray, even when a `ray start --head` runs on this machine
    ray.init(address="local", num_cpus=cpus or os.cpu_count(), include_dashboard=False,
             dashboard_host="127.0.0.1", log_to_driver=False, configure_logging=False)
    return True


def trainer_inputs(ds: PreparedDataset, config: RunConfig) -> dict:
    """Everything checked on the driver before any Ray work starts, and handed to the workers."""
    seed = config["train.seed"]
    side = side_data(ds, config, seed)
    build_model(ds, config, seed=seed, side=side)  # every config error surfaces here, not in a worker
    return {"config": config.to_dict(), "data": str(Path(ds.path).resolve()), "side": side, "fingerprint": schema_fingerprint(ds.schema),
            "item_status": train_item_status(ds), "side_meta": {"relations": side.get("relations", [])},
            "augmenting": bool(config.augment().enabled() and any(
                not _in_model(n) for n in config.augment().enabled()))}


def _in_model(name: str) -> bool:
    from rectune.augment import AUGMENTERS

    return AUGMENTERS.get(name).in_model


def make_trainer(ds: PreparedDataset, config: RunConfig, inputs: dict, storage: Path, name: str, workers: int = 1,
                 use_gpu: bool = False, trials: int = 1, max_failures: int = 1, clock_id: str | None = None,
                 extra: dict | None = None, callbacks: list | None = None, gpus_per_worker: float | None = None):
    """A TorchTrainer for one run (also what a Tune trial driver builds, with Tune's report callback).

    ``gpus_per_worker``: the GPU share of each worker (a search space's ``resources``); by default
    the plan's share of the cluster's GPUs."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from rectune.pipeline import EpochClock, ResourcePlan, data_config, stream

    res = ray.cluster_resources()
    plan = ResourcePlan.for_cluster(res.get("CPU", 1), res.get("GPU", 0), trials=trials, workers=workers,
                                    use_gpu=use_gpu)
    clock = EpochClock(clock_id or uuid.uuid4().hex[:12])
    seed = config["train.seed"]
    batch = config["train.batch_size"]
    datasets = {"train": stream(ds, "train", plan, config.augment(), seed=seed, clock=clock, batch_size=batch)}
    for split in ("valid", "test"):
        datasets[split] = stream(ds, split, plan, batch_size=config["train.eval_batch_size"])
    loop_config = dict(inputs, clock=clock.name, use_gpu=use_gpu, **(extra or {}))
    resources = {"CPU": plan.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = gpus_per_worker or plan.gpus_per_worker or 1
    trainer = TorchTrainer(
        _loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        datasets=datasets,
        dataset_config=data_config(datasets_to_split=["train"]),
        run_config=ray.train.RunConfig(name=name, storage_path=str(storage), callbacks=callbacks,
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       failure_config=ray.train.FailureConfig(max_failures=max_failures)),
    )
    return trainer, clock, plan


def _loop(cfg):
    from rectune.train.worker import train_loop_per_worker

    train_loop_per_worker(cfg)


def _table(tasks: list[str], history: list[dict], metric: str) -> Table:
    table = Table(title="epochs", title_justify="left")
    table.add_column("epoch", justify="right")
    table.add_column("train s", justify="right")
    for t in tasks:
        table.add_column(f"{t} loss", justify="right")
    for t in tasks:
        table.add_column(f"valid {t} auc", justify="right")
    table.add_column(metric, justify="right")
    for m in history:
        best = " *" if m.get("best_epoch") == m.get("epoch") else ""
        table.add_row(str(m.get("epoch")), f"{m.get('train/time_s', 0):.1f}",
                      *[f"{m.get(f'train/{t}_loss', float('nan')):.4f}" for t in tasks],
                      *[f"{m.get(f'valid/{t}_auc', float('nan')):.4f}" for t in tasks],
                      f"{m.get(metric, float('nan')):.4f}{best}")
    return table


def train(data: str | Path, config: RunConfig, out: str | Path, workers: int = 1, use_gpu: bool = False,
          address: str | None = None, resume: bool = False, console: Console | None = None,
          extra: dict | None = None) -> TrainResult:
    import ray

    console = console or Console()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(f"--out {out}: the folder exists; pass --resume to continue that run or choose another folder")
    if resume and not (out / "ray").is_dir():
        raise ConfigError(f"--resume: {out} holds no run to continue")
    ds = open_dataset(data)
    inputs = trainer_inputs(ds, config)  # before Ray starts: bad settings fail fast, nothing written
    out.mkdir(parents=True, exist_ok=True)
    started = start_ray(address)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        progress_name = f"rectune-progress-{uuid.uuid4().hex[:8]}"
        progress = ray.remote(num_cpus=0)(Progress).options(name=progress_name).remote()
        trainer, clock, plan = make_trainer(ds, config, inputs, (out / "ray").resolve(), "train", workers=workers,
                                            use_gpu=use_gpu, extra={"progress": progress_name, **(extra or {})})
        console.print(f"training on {ds.schema.name} ({ds.schema.rows.get('train', 0):,} rows) with {workers} worker(s)"
                      f"{' on GPU' if use_gpu else ''}; resources: {plan.to_dict()}")
        result_box: dict = {}

        def fit():
            try:
                result_box["result"] = trainer.fit()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                result_box["error"] = exc

        thread = threading.Thread(target=fit, daemon=True)
        thread.start()
        metric = config["train.metric"]
        rows = ds.schema.rows.get("train", 0)
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while thread.is_alive():
                thread.join(0.5)
                try:
                    st = ray.get(progress.get.remote(), timeout=2)
                except Exception:  # noqa: BLE001 - the display is best effort
                    continue
                done = min(1.0, st["rows"] / max(rows / max(workers, 1), 1))
                bar = "█" * int(30 * done) + "░" * (30 - int(30 * done))
                table = _table(ds.schema.tasks, st["history"], metric)
                table.caption = f"epoch {st['epoch']}  {bar} {done:4.0%}"
                live.update(table)
        clock.kill()
        if "error" in result_box:
            raise result_box["error"]
        result = result_box["result"]
        if result.error:
            raise result.error
    finally:
        if started:
            ray.shutdown()
    return _write_run(out, config, result)


def _write_run(out: Path, config: RunConfig, result) -> TrainResult:
    config.dump(out / "config.yaml")
    target = out / "checkpoint"
    if result.checkpoint is not None:
        tmp = out / ".checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with result.checkpoint.as_directory() as d:
            shutil.copytree(d, tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    from rectune.train import checkpoint as ckpt

    state = ckpt.read_state(target)["loop"]
    history = state["history"]
    best_epoch = state["best_epoch"]
    summary = {"history": history, "best_epoch": best_epoch,
               "best": history[best_epoch] if 0 <= best_epoch < len(history) else {},
               "stopped_early": state["stopped_early"], "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=float))
    return TrainResult(out, summary)
