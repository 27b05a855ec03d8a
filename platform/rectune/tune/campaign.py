"""Tuning campaigns: Ray Tune trials, each driving a Ray Train run, searched by Optuna.

Campaign folder (``<storage>/<name>``)::

    campaign.json   name, dataset, status (running / finished / interrupted / failed), times,
                    the study's database URL (without password) and name, the space's fingerprint,
                    the driver's host and pid (a "running" campaign whose driver is gone was killed)
    space.yaml      the resolved search space (every default written out)
    study.db        the Optuna study (SQLite), unless --study-db names another database
    tune/           the Ray Tune experiment (trial results, searcher and scheduler state)
    train/          one Ray Train run per trial, ``train-<trial id>`` (checkpoints every epoch)

Each Tune trial runs :func:`trial_driver`, a function trainable at a hundredth of a CPU that
builds a ``TorchTrainer`` (``train.run.make_trainer``) named after the trial id, so a retried
trial resumes from its own last checkpoint; the workers' reports reach Tune through
``TuneReportCallback``. ``OptunaSearch`` keeps the study in a real database; ASHA stops poor trials
early; failed trials are retried (``FailureConfig``). ``--resume`` restores the Tune experiment
(searcher state included) and goes on with the same study.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.tune
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console
from rich.table import Table

from rectune.errors import ConfigError, RectuneError
from rectune.tune.folder import (DEFAULT_STORAGE, STORAGE_ENV, TUNE_TRIAL_ATTR, CampaignFolder, is_uri, redact,
                                  study_storage)
from rectune.tune.space import SearchSpace, load, metric_mode

DRIVER_CPUS = 0.01
TRIAL_RETRIES = 2
ERROR_KEY = "trial/error"
"""What a trial reports when it ends on an error that a retry cannot mend (a loss turned NaN)."""


def _study_exists(storage, name: str) -> bool:
    import optuna

    return any(s.study_name == name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))


# ---------------------------------------------------------------------------------------------
# the trial driver (runs in a Tune trial actor)


def finished_run(run_dir: str, config, report_best: list[str]) -> dict | None:
    """The last report of a trial's Train run that already ended (all epochs, or stopped early), or
    None. A campaign driver killed after a trial's last epoch but before Tune recorded the trial's
    end restores it as unfinished; its Train run would return at once without reporting again."""
    if is_uri(run_dir) or not Path(run_dir).is_dir():
        return None
    from rectune.train import checkpoint as ckpt

    for folder in sorted(Path(run_dir).glob("checkpoint_*"), reverse=True):
        if not (folder / ckpt.STATE).is_file():
            continue
        loop = ckpt.read_state(folder)["loop"]
        if not (loop["epoch"] >= config["train.epochs"] or loop["stopped_early"]) or not loop["history"]:
            return None
        metrics = dict(loop["history"][-1])
        best = loop["history"][loop["best_epoch"]] if loop["best_epoch"] >= 0 else {}
        metrics.update({"best_epoch": loop["best_epoch"], "stopped_early": loop["stopped_early"],
                        **{f"best/{k}": best[k] for k in report_best if k in best}})
        return metrics
    return None


def trial_driver(config: dict, setup: dict) -> None:
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from rectune.data.prepared import open_dataset
    from rectune.train.run import make_trainer, trainer_inputs

    space: SearchSpace = setup["space"]
    trial_id = ray.tune.get_context().get_trial_id()
    run_config = space.config(config)
    ds = open_dataset(setup["data"])
    inputs = trainer_inputs(ds, run_config)
    report_best = sorted(set(space.objective.names()) | {run_config["train.metric"]})
    finished = finished_run(f"{setup['train_storage']}/train-{trial_id}", run_config, report_best)
    if finished is not None:  # restored after its Train run ended: Train would report nothing again
        ray.tune.report(finished)
        return
    trainer, clock, _ = make_trainer(
        ds, run_config, inputs, setup["train_storage"], f"train-{trial_id}", workers=space.workers,
        use_gpu=space.gpus_per_worker > 0, trials=space.concurrency, max_failures=1, clock_id=trial_id,
        extra={"report_best": report_best, "report_placement_group": True, "errors_as_results": True,
               **setup.get("extra", {})},
        callbacks=[TuneReportCallback()], gpus_per_worker=space.gpus_per_worker or None)
    try:
        result = trainer.fit()
        if result.error:
            raise result.error
    finally:
        clock.kill()


def release(trial) -> None:
    """Remove the placement group of a finished trial's Train workers.

    Tune ends a trial by killing its driver as soon as the scheduler says stop (ASHA at a rung, or
    at ``max_t`` on the last epoch), before ``TorchTrainer.fit`` has returned; the Train
    controller dies with it and the workers' placement group, owned by the job, stays reserved.
    On a small machine the next trials then wait for CPUs forever."""
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    pg = (trial.last_result or {}).get("trial/placement_group")
    if not pg:
        return
    try:
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg))))
    except Exception:  # noqa: BLE001 - already removed with its controller
        pass


class TrialEvents(ray.tune.Callback):
    """A line per trial start, end and error, printed by the campaign's driver, and the trial's
    resources released at its end (picklable: Tune saves its callbacks with the experiment and a
    restored campaign gets them back)."""

    def __init__(self, metric: str):
        self.metric = metric

    def on_trial_start(self, iteration, trials, trial, **info):
        Console().print(f"trial {trial.trial_id} started: {_short(trial.config)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        release(trial)
        r = trial.last_result or {}
        if r.get(ERROR_KEY):
            Console().print(f"trial {trial.trial_id} [red]errored[/red] after {r.get('training_iteration', 0)} "
                            f"epoch(s): {r[ERROR_KEY]}")
            return
        Console().print(f"trial {trial.trial_id} done after {r.get('training_iteration', 0)} epoch(s): "
                        f"{self.metric} = {_fmt(r.get(self.metric))}")

    def on_trial_error(self, iteration, trials, trial, **info):
        release(trial)
        Console().print(f"trial {trial.trial_id} [red]errored[/red]: {_reason(trial)}")


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "-"


def _short(config: dict) -> str:
    return ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in config.items())


def _reason(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        text = Path(path).read_text() if path and Path(path).is_file() else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "unknown error"


# ---------------------------------------------------------------------------------------------
# the campaign


@dataclass
class CampaignResult:
    folder: CampaignFolder
    status: str
    trials: list[dict]
    """One dict per Tune trial: id, status, config, epochs, objective value(s), error."""


class StudySearch(OptunaSearch):
    """OptunaSearch that takes the study as the truth after a crash, and that Tune can pickle.

    Tune saves its experiment state every few seconds, Optuna writes each trial's end at once: a
    campaign killed in between is restored with a trial Tune thinks is running and the study
    already closed. Its results are then not reported to the study again (Optuna refuses, and the
    study already counts the trial once).

    Tune pickles the searcher (with the Tuner, and in every save of its experiment state). Its live
    parts (the storage with its engine, the sampler, which may hold a lock, the study and its trial
    objects) never go into a pickle: only the study's URL and name and the Optuna trial ids do, and
    the live parts are rebuilt from them where they are next used."""

    _LIVE = ("_storage", "_sampler", "_ot_study", "_ot_trials")

    def __init__(self, space: SearchSpace, url: str, study_name: str, storage=None):
        self._url = url
        super().__init__(space, metric=space.objective.searcher_metric, mode=space.objective.searcher_mode,
                         sampler=make_sampler(space), study_name=study_name,
                         storage=storage if storage is not None else study_storage(url))

    # ---- pickling: the live parts stay out, and come back on first use ---------------------------
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in self._LIVE}
        state["_ot_trial_ids"] = {tid: ot._trial_id for tid, ot in self.__dict__.get("_ot_trials", {}).items()}  # noqa: SLF001
        return state

    def __setstate__(self, state: dict) -> None:
        for k in self._LIVE:
            self.__dict__.pop(k, None)
        self.__dict__.update(state)

    def __getattr__(self, name: str):
        # only called for attributes the instance lacks: the live parts of an unpickled searcher
        if name in type(self)._LIVE and "_url" in self.__dict__:
            self._connect()
            return self.__dict__[name]
        raise AttributeError(name)

    def _connect(self) -> None:
        """The storage, sampler, study and unfinished trials again, from the URL and the trial ids.

        The sampler's seed moves on by the trials the study already holds, so a resumed campaign
        does not draw its first trials' parameters again, and stays reproducible."""
        import optuna

        storage = study_storage(self._url)
        held = len(storage.get_all_trials(storage.get_study_id_from_name(self._study_name), deepcopy=False))
        sampler = make_sampler(self._space, seed_offset=held)
        study = optuna.load_study(study_name=self._study_name, storage=storage, sampler=sampler,
                                  pruner=optuna.pruners.NopPruner())
        ids = self.__dict__.pop("_ot_trial_ids", {})
        self.__dict__.update(_storage=storage, _sampler=sampler, _ot_study=study, _ot_trials={
            tid: optuna.trial.Trial(study, ot_id) for tid, ot_id in ids.items() if tid not in self._completed_trials})

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__setstate__(pickle.load(f))

    # ---- the study as the truth ------------------------------------------------------------------
    def _setup_study(self, mode):
        super()._setup_study(mode)
        from rectune.tune.auto import start_points

        # the floor (defaults, peer-equivalent), then the space's own start points, as many as the budget
        # holds (a point left over would wait in the study for ever); none twice after --resume
        for point in start_points(self._space)[: self._space.trials]:
            self._ot_study.enqueue_trial(dict(point), skip_if_exists=True)

    def _closed(self, trial_id: str) -> bool:
        ot = self._ot_trials.get(trial_id)
        if ot is None or self._ot_study is None:
            return False
        return self._ot_study._storage.get_trial(ot._trial_id).state.is_finished()  # noqa: SLF001

    def suggest(self, trial_id: str):
        out = super().suggest(trial_id)
        ot = self._ot_trials.get(trial_id)
        if isinstance(out, dict) and ot is not None:  # the results commands join study and Tune by this
            ot.set_user_attr(TUNE_TRIAL_ATTR, trial_id)
        return out

    def on_trial_result(self, trial_id: str, result: dict):
        if not self._closed(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if self._closed(trial_id):
            self._completed_trials.add(trial_id)
            return
        ot = self._ot_trials.get(trial_id)
        if ot is not None and result and result.get(ERROR_KEY):  # ended on an error it reported itself
            import optuna

            ot.set_user_attr("error", str(result[ERROR_KEY])[:500])
            self._ot_study.tell(ot, state=optuna.trial.TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


ORPHANED = "orphaned: left running by a killed campaign driver; Tune ran its configuration again as another trial"
TIMED_OUT = "stopped by the campaign's time limit before its last epoch"


def close_orphans(storage, study_name: str, reason: str = ORPHANED) -> list[int]:
    """Mark the study's trials that are still RUNNING when the campaign has finished as FAIL, with
    the reason in ``user_attrs["error"]``: a driver killed between Optuna's ``ask`` and Tune's next
    save of its experiment leaves such a trial behind, and Tune re-runs its configuration as
    another study trial; the time limit leaves the trials it stopped. Returns their numbers."""
    import optuna

    study_id = storage.get_study_id_from_name(study_name)
    closed = []
    for ft in storage.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if "error" not in ft.user_attrs:
            storage.set_trial_user_attr(ft._trial_id, "error", reason)  # noqa: SLF001
        storage.set_trial_state_values(ft._trial_id, optuna.trial.TrialState.FAIL)  # noqa: SLF001
        closed.append(ft.number)
    return closed


def make_sampler(space: SearchSpace, seed_offset: int = 0):
    """The space's Optuna sampler, seeded with its seed plus ``seed_offset``."""
    import optuna

    seed = space.seed + seed_offset
    if space.objective.metrics and space.sampler == "tpe":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=space.startup_trials, multivariate=True, group=True)


def _scheduler(space: SearchSpace):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if space.scheduler == "fifo":
        return FIFOScheduler()
    if space.objective.metrics:  # ASHA takes one metric: the one that picks each trial's best epoch
        chooser = space.base()["train.metric"]
        metric, mode = f"best/{chooser}", metric_mode(chooser)
    else:
        metric, mode = space.objective.searcher_metric, space.objective.mode
    return ASHAScheduler(time_attr="training_iteration", metric=metric, mode=mode, max_t=space.epochs,
                         grace_period=space.grace_period, reduction_factor=space.reduction_factor)


HISTORY_KEYS = ("training_iteration", "timestamp", "time_total_s", "train/time_s", "eval/time_s")


def _trials(grid, metrics: list[str]) -> list[dict]:
    """One dict per trial; ``history``: per reported epoch, the timing keys and the objective's
    metrics (current and best so far)."""
    out = []
    for r in grid:
        m = r.metrics or {}
        df = r.metrics_dataframe
        keep = [c for c in (*HISTORY_KEYS, *metrics, *(f"best/{k}" for k in metrics))
                if df is not None and c in df.columns]
        out.append({"trial_id": m.get("trial_id") or (r.path or "").rsplit("/", 1)[-1],
                    "status": "error" if r.error or m.get(ERROR_KEY) else "done", "config": dict(r.config or {}),
                    "epochs": m.get("training_iteration", 0),
                    **{k: m.get(f"best/{k}") for k in metrics},
                    "history": df[keep].to_dict("records") if keep else [],
                    "error": str(r.error).strip().splitlines()[-1][:300] if r.error else m.get(ERROR_KEY)})
    return out


def best_table(space: SearchSpace, trials: list[dict], top: int = 5) -> Table:
    metrics = space.objective.names()
    first, mode = metrics[0], space.objective.searcher_mode
    mode = mode[0] if isinstance(mode, list) else mode
    done = [t for t in trials if t["status"] == "done" and t.get(first) is not None]
    done.sort(key=lambda t: t[first], reverse=(mode == "max"))
    keys = [d.key for d in space.params]
    table = Table(title=f"best trials by {first} ({len(done)} done, "
                        f"{sum(t['status'] == 'error' for t in trials)} errored)", title_justify="left")
    table.add_column("trial", no_wrap=True)
    for m in metrics:
        table.add_column(m, justify="right", no_wrap=True)
    table.add_column("epochs", justify="right")
    table.add_column("parameters")
    for t in done[:top]:
        params = "\n".join(f"{k}={_fmt(v) if isinstance(v, float) else v}"
                           for k in keys if (v := t["config"].get(k)) is not None)
        table.add_row(t["trial_id"], *[_fmt(t.get(m)) for m in metrics], str(t["epochs"]), params)
    return table


def unbuildable(space: SearchSpace, ds):
    """Each searched key's extreme (every choice; a range's high end) over the fixed part that
    cannot build a model and its augmentation on ``ds``: yields ``(key, value, error)``. The fixed
    part is built first and its error raised as it is. TransE pretraining is not run."""
    from rectune.augment import AugmentPlan
    from rectune.train.run import trainer_inputs

    def build(cfg) -> None:
        cfg.set("model.kg.pretrain", 0)
        trainer_inputs(ds, cfg)
        AugmentPlan(cfg.augment(), ds, seed=0)

    build(space.base())
    for d in space.params:
        values = d.choices if d.kind == "categorical" else (d.high,)
        for value in values:
            cfg = space.base()
            for parent, allowed in d.when:
                cfg.set(parent, allowed[0])
            try:
                cfg.set(d.key, value)
                build(cfg)
            except RectuneError as err:
                yield d.key, value, err


def check_on_dataset(space: SearchSpace, ds) -> None:
    """Every searched choice must run on this dataset: a choice the dataset cannot serve (text
    without embeddings, the item graph without relations) is refused here, not found out by a
    trial's error hours later."""
    for key, value, err in unbuildable(space, ds):
        raise ConfigError(f"{space.source}: search: {key}: {value!r} cannot run on {ds.path}: {err}")


AUTO_SPACE = "auto"
"""campaign.json's ``space_file`` when the space was built from the dataset (no ``--space``)."""


def campaign_space(space_file: str | Path | None, ds, folder: CampaignFolder, resume: bool, address: str | None,
                   cpus: int | None, minutes: float | None) -> SearchSpace:
    """The space file's; without one, the automatic space of ``ds`` for the cluster's CPUs (on
    ``--resume``, the space the campaign started with, as its folder keeps it)."""
    import yaml

    from rectune.tune.auto import DEFAULT_MINUTES, auto_space
    from rectune.tune.space import from_mapping

    if space_file is not None:
        space = load(space_file)
    elif resume and folder.read("space.yaml") is not None:
        space = from_mapping(yaml.safe_load(folder.read("space.yaml")), f"{folder.root}/space.yaml")
    else:
        if address:
            from rectune.train.run import start_ray

            start_ray(address)
            cpus = int(ray.cluster_resources().get("CPU", 1))
        space = auto_space(ds, cpus or os.cpu_count() or 1, minutes or DEFAULT_MINUTES)
    if minutes is not None:
        from dataclasses import replace

        space = replace(space, time_limit_s=minutes * 60.0)
    return space


def run_campaign(data: str | Path, space_file: str | Path | None, name: str, storage: str | None = None,
                 trials: int | None = None, address: str | None = None, study_db: str | None = None,
                 resume: bool = False, console: Console | None = None, cpus: int | None = None,
                 extra: dict | None = None, minutes: float | None = None) -> CampaignResult:
    """Start (or with ``resume`` continue) the campaign ``name``; every input is checked first.

    Without ``space_file`` the space is built from the dataset (:mod:`rectune.tune.auto`);
    ``minutes`` replaces the space's time limit."""
    import yaml

    from rectune.data.prepared import open_dataset

    console = console or Console()
    folder = CampaignFolder(storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE, name)
    ds = open_dataset(data, validate=True)  # every file read once: a damaged one is refused before any trial
    space = campaign_space(space_file, ds, folder, resume, address, cpus, minutes).with_budget(trials)
    space = space.for_tasks(ds.schema.tasks)
    space.check_dataset(ds.schema.tasks)
    check_on_dataset(space, ds)
    meta = folder.meta()
    if meta is not None and not resume:
        raise ConfigError(f"--name {name}: a campaign of that name exists in {folder.storage} (status "
                          f"{meta.get('status')}); pass --resume to continue it, or choose another --name")
    if meta is None and resume:
        raise ConfigError(f"--resume: no campaign '{name}' in {folder.storage}")
    if resume:
        if meta.get("space_fingerprint") != space.fingerprint():
            raise ConfigError(f"{space_file or 'the automatic space'}: differs from the space campaign '{name}' started with "
                              f"({folder.root}/space.yaml); a campaign's space cannot change: start a new campaign")
        if Path(meta["data"]) != Path(ds.path).resolve():
            raise ConfigError(f"--data {data}: campaign '{name}' runs on {meta['data']}")
        if trials is not None and trials != meta.get("trials_target"):
            raise ConfigError(f"--trials {trials}: campaign '{name}' was started with a budget of "
                              f"{meta.get('trials_target')} trials, which --resume keeps; start a new campaign "
                              f"for more")
        url = study_db or meta.get("study_db_full") or folder.study_url(None)
    else:
        url = folder.study_url(study_db)
    made = folder.local is not None and not folder.local.exists()
    if made:
        folder.local.mkdir(parents=True)  # SQLite's file lives there
    try:
        rdb = study_storage(url)
        if not resume and _study_exists(rdb, name):
            raise ConfigError(f"--study-db {redact(url)}: a study named '{name}' exists there already; "
                              f"choose another --name or pass --resume")
    except BaseException:
        if made:
            import shutil

            shutil.rmtree(folder.local, ignore_errors=True)
        raise

    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    meta = meta or {"name": name, "data": str(Path(ds.path).resolve()), "created": now,
                    "space_fingerprint": space.fingerprint(),
                    "space_file": str(space_file) if space_file is not None else AUTO_SPACE}
    meta.update({"status": "running", "trials_target": space.trials, "resumed": now if resume else None,
                 "driver": {"host": socket.gethostname(), "pid": os.getpid()},
                 "study_db": redact(url), "study_name": name,
                 "objective": space.objective.to_dict(), "searcher_metric": space.objective.searcher_metric,
                 "searcher_mode": space.objective.searcher_mode})
    if "://" not in url or url.startswith("sqlite"):
        meta["study_db_full"] = url  # no password in a SQLite URL
    if not resume:
        folder.write("space.yaml", yaml.safe_dump(space.to_dict(), sort_keys=False))
    folder.save_meta(meta)
    return _run(folder, space, ds, meta, url, rdb, address, resume, console, cpus, extra or {})


def _run(folder, space, ds, meta, url, rdb, address, resume, console, cpus, extra) -> CampaignResult:
    import ray

    from rectune.train.run import start_ray

    started = start_ray(address, cpus=cpus)
    status = "failed"
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        setup = {"space": space, "data": str(Path(ds.path).resolve()), "train_storage": f"{folder.root}/train", "extra": extra}
        trainable = ray.tune.with_resources(ray.tune.with_parameters(trial_driver, setup=setup),
                                            {"CPU": DRIVER_CPUS})
        metric = space.objective.searcher_metric
        lines = TrialEvents(metric[0] if isinstance(metric, list) else metric)
        if resume and ray.tune.Tuner.can_restore(f"{folder.root}/tune"):
            tuner = ray.tune.Tuner.restore(f"{folder.root}/tune", trainable, resume_unfinished=True,
                                           resume_errored=True)
        else:
            tuner = ray.tune.Tuner(
                trainable,
                tune_config=ray.tune.TuneConfig(search_alg=StudySearch(space, url, meta["study_name"], rdb),
                                                scheduler=_scheduler(space), num_samples=space.trials,
                                                max_concurrent_trials=space.concurrency,
                                                time_budget_s=space.time_limit_s),
                run_config=ray.tune.RunConfig(name="tune", storage_path=folder.root,
                                              failure_config=ray.tune.FailureConfig(max_failures=TRIAL_RETRIES),
                                              callbacks=[lines], verbose=0),
            )
        limit = f" within {space.time_limit_s / 60:.0f} min" if space.time_limit_s else ""
        built = ", the space built from the dataset" if meta.get("space_file") == AUTO_SPACE else ""
        console.print(f"campaign {meta['name']}: {space.trials} trials{limit}, {space.concurrency} at a time, on "
                      f"{ds.schema.name}{built}; folder {folder.root}; study {meta['study_db']}")
        fit_started = time.monotonic()
        grid = tuner.fit()
        trials = _trials(grid, space.objective.names())
        # the budget is spent when every trial ran, or when the time limit ended the campaign
        timed_out = space.time_limit_s is not None and time.monotonic() - fit_started >= space.time_limit_s
        finished = (len(trials) >= space.trials or timed_out) and all(t["status"] in ("done", "error") for t in trials)
        if timed_out:
            meta["time_limit_reached"] = True
            console.print(f"campaign {meta['name']}: its time limit ({space.time_limit_s / 60:.0f} min) ended it after "
                          f"{len(trials)} trial(s)")
        status = "finished" if finished else "interrupted"
        if finished:
            close_orphans(rdb, meta["study_name"], TIMED_OUT if timed_out else ORPHANED)
    except KeyboardInterrupt:
        status, trials = "interrupted", []
        raise
    finally:
        meta.update({"status": status, "ended": time.strftime("%Y-%m-%dT%H:%M:%S")})
        folder.save_meta(meta)
        if started:
            ray.shutdown()
    console.print(best_table(space, trials))
    return CampaignResult(folder, status, trials)
