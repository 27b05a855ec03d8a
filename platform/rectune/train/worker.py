"""``train_loop_per_worker``: what each Ray Train worker runs.

Per epoch: set the epoch clock (the Data step's augmentation draws from (seed, epoch)), train on
this worker's shard of the train stream, let rank 0 score valid and test, share its metrics and
the stop decision with the other ranks, checkpoint (rank 0) and ``ray.train.report`` (every rank:
the call is a barrier). A restarted worker group resumes from the last reported checkpoint.

When no augmenter changes the rows from one epoch to the next, the worker pulls its shard once
and re-shuffles it in memory each epoch by a permutation drawn from (seed, epoch, rank); with
augmentation it iterates the stream every epoch. Evaluation splits are pulled once and kept.
"""

from __future__ import annotations

import os
import resource
import signal
import tempfile
import time
from pathlib import Path

import torch

from rectune.pipeline import torch_batches
from rectune.train.core import LoopState, Trainer, epoch_seed, evaluate
from rectune.train.metrics import metric_weights
from rectune.train.tensors import TensorRows


def train_loop_per_worker(cfg: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch

    from rectune.data.prepared import open_dataset
    from rectune.models.model import build_model
    from rectune.runconfig import RunConfig

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    config = RunConfig(cfg["config"])
    seed = config["train.seed"]
    ds = open_dataset(cfg["data"])
    model = build_model(ds, config, seed=seed, side=cfg["side"])
    device = ray.train.torch.get_device() if cfg.get("use_gpu") else torch.device("cpu")
    model.to(device)
    trainer = Trainer(model, config, device, amp=config["train.amp"], distributed=world > 1)
    state = LoopState()
    best_weights = None
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            state, best_weights = trainer.restore(d)
    elif world > 1:
        import torch.distributed as dist

        for p in model.state_dict().values():
            dist.broadcast(p, 0)

    progress = ray.get_actor(cfg["progress"]) if cfg.get("progress") and rank == 0 else None
    clock = ray.get_actor(cfg["clock"]) if cfg.get("clock") else None
    shard = ray.train.get_dataset_shard("train")
    batch_size = config["train.batch_size"]
    eval_bs = config["train.eval_batch_size"]
    cache: TensorRows | None = None
    evals: dict[str, TensorRows] = {}
    metric, patience = config["train.metric"], config["train.patience"]
    weights = metric_weights(config, ds.schema.tasks)
    item_status = cfg.get("item_status")
    rows_done = 0

    last_tick = 0.0

    def tick(n: int) -> None:  # the live progress bar: at most two actor calls a second
        nonlocal rows_done, last_tick
        rows_done += n
        now = time.monotonic()
        if progress is not None and now - last_tick >= 0.5:
            last_tick = now
            progress.update.remote(rows=rows_done)

    while state.epoch < config["train.epochs"] and not state.stopped_early:
        epoch = state.epoch
        torch.manual_seed(epoch_seed(seed, epoch))
        lr = trainer.set_epoch(epoch)
        if clock is not None:
            ray.get(clock.set.remote(epoch))
        t0 = time.perf_counter()
        rows_done = 0
        if progress is not None:
            progress.update.remote(epoch=epoch, rows=0)
        if cfg["augmenting"]:
            batches = torch_batches(shard, batch_size, drop_last=world > 1, prefetch_batches=2)
        else:
            if cache is None:
                cache = TensorRows.from_batches(torch_batches(shard, eval_bs, prefetch_batches=2))
                if world > 1:  # every rank must take the same number of steps (one all-reduce each)
                    import torch.distributed as dist

                    n = torch.tensor(len(cache))
                    dist.all_reduce(n, op=dist.ReduceOp.MIN)
                    cache = TensorRows({k: v[: int(n)] for k, v in cache.columns.items()})
            batches = cache.batches(batch_size, seed=epoch_seed(seed, epoch) + rank)
        _poison(model, config, cfg, epoch)
        try:
            losses = trainer.train_epoch(batches, progress=tick)
        except FloatingPointError as exc:
            if not cfg.get("errors_as_results"):
                raise
            # a Tune trial: retrying cannot help; report the reason and end the run, so that Tune
            # does not retry it and the study records the trial as failed (its objective is NaN)
            reason = f"FloatingPointError: {exc}"
            report = {"epoch": epoch, "trial/error": reason, "stopped_early": True,
                      **{f"best/{k}": float("nan") for k in cfg.get("report_best", ())}}
            ray.train.report(report)
            if progress is not None:
                progress.update.remote(metrics=report)
            break
        train_time = time.perf_counter() - t0
        metrics: dict = {"epoch": epoch, "train/time_s": train_time, "train/lr": lr,
                         "train/max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        metrics.update({f"train/{t}_loss": v for t, v in zip(trainer.tasks, losses)})
        metrics.update({f"loss_weights/{t}": v for t, v in zip(trainer.tasks, model.weighting.current())})
        payload = [None]
        if rank == 0:
            for split in cfg.get("eval_splits", ("valid", "test")):
                if split not in evals:
                    evals[split] = TensorRows.from_batches(torch_batches(ray.train.get_dataset_shard(split), eval_bs))
                metrics.update(evaluate(split, trainer.predict(evals[split].batches(eval_bs)), model, item_status,
                                        weights))
            metrics["eval/time_s"] = time.perf_counter() - t0 - train_time
            improved = state.update(metric, metrics, patience)
            if improved:
                best_weights = trainer.scored_state()
            metrics.update({"best_epoch": state.best_epoch, f"best/{metric}": state.best,
                            "stopped_early": state.stopped_early})
            if state.best_epoch >= 0:  # other metrics at the best epoch (a multi-objective search's values)
                at_best = state.history[state.best_epoch]
                metrics.update({f"best/{k}": at_best[k] for k in cfg.get("report_best", ()) if k in at_best})
            if cfg.get("report_placement_group"):  # a Tune trial: its driver removes it when the trial ends
                pg = ray.util.get_current_placement_group()
                metrics["trial/placement_group"] = pg.id.hex() if pg is not None else ""
            payload = [(metrics, state.to_dict())]
        if world > 1:
            import torch.distributed as dist

            dist.broadcast_object_list(payload, 0)
            metrics, loop = payload[0]
            if rank != 0:
                state = LoopState.from_dict(loop)
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                trainer.save(tmp, state, cfg["config"], cfg["fingerprint"], best_weights,
                             extra={"side_meta": cfg.get("side_meta", {}), "data": cfg["data"]})
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
        if progress is not None:
            progress.update.remote(metrics=metrics)
        fail_at = cfg.get("fail_once_after_epoch")
        if fail_at is not None and epoch == fail_at and rank == 0:
            marker = Path(cfg["fail_marker"])
            if not marker.exists():
                marker.write_text("failed once")
                if cfg.get("fail_kill"):  # the worker process dies, as on a lost node or OOM kill
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"injected failure after epoch {epoch} (test of resume)")


def _poison(model, config, cfg: dict, epoch: int) -> None:
    """Test hook of the reliability drills: from ``poison_at_epoch`` on, a run whose config has the
    values of ``poison_when`` gets NaN weights, so its loss turns NaN as a diverging run's would."""
    when = cfg.get("poison_when")
    if when is None or epoch != cfg.get("poison_at_epoch", 0):
        return
    if all(config[k] == v for k, v in when.items()):
        with torch.no_grad():
            next(model.mtl.parameters()).fill_(float("nan"))
