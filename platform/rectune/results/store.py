"""Reading a campaign without touching it: campaign.json, space.yaml, the Optuna study, Tune's trials.

Read-only by construction. A SQLite study is copied with SQLite's online backup (one short read
transaction, as any reader takes) into a temporary file and read there; a server database
(PostgreSQL) is only queried. Tune's trial folders are only read: a ``result.json`` whose last
line is being written is read up to its last whole line. Nothing is created, locked beyond one
read or changed in the campaign folder, so the commands work on finished, interrupted and running
campaigns alike.

The study is the truth for each trial's state and objective value(s) (Optuna records a trial's end
at once; Tune's experiment state is saved every few seconds). Tune's trial folders add what the
study does not keep: every metric of every epoch (valid, test, losses, timings) and error reasons.
The two are joined by the Tune trial id the campaign's searcher writes on each study trial
(``user_attrs["tune_trial_id"]``), and for studies from before that attribute by equal parameters.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from rectune.errors import ConfigError, DataError, first_line, shorten
from rectune.tune.folder import (DEFAULT_STORAGE, STORAGE_ENV, STUDY_DB_ENV, TUNE_TRIAL_ATTR, CampaignFolder, is_uri,
                                  redact)
from rectune.tune.space import SearchSpace, from_mapping

STATES = ("complete", "errored", "running", "interrupted", "pruned", "waiting")


@dataclass
class TrialRecord:
    """One trial: the study's view (number, state, values, params) joined with Tune's (metrics)."""

    number: int | None
    """The Optuna trial number (None: a Tune trial the study does not know)."""
    trial_id: str | None
    """The Tune trial id (the Train run is ``train/train-<trial_id>``)."""
    state: str
    """complete, errored, running, interrupted (running when its campaign's driver stopped), pruned
    or waiting."""
    params: dict[str, Any]
    values: list[float] | None
    """The objective value(s) the study holds (``best/<metric>`` of the trial's last report)."""
    history: list[dict] = field(default_factory=list)
    """Every reported epoch's metrics, in epoch order (one row per epoch; a retried epoch counts once)."""
    error: str | None = None
    started: datetime | None = None
    finished: datetime | None = None

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def best_epoch(self) -> int | None:
        if not self.history:
            return None
        b = self.history[-1].get("best_epoch")
        return int(b) if isinstance(b, (int, float)) and b >= 0 else None

    @property
    def final(self) -> dict:
        """The last epoch's metrics."""
        return _metrics(self.history[-1]) if self.history else {}

    @property
    def best(self) -> dict:
        """The metrics of the best epoch (by ``train.metric``)."""
        b = self.best_epoch
        rows = [r for r in self.history if r.get("epoch") == b]
        return _metrics(rows[-1]) if rows else {}

    @property
    def duration_s(self) -> float | None:
        if self.started is None:
            return None
        end = self.finished or datetime.now()
        return (end - self.started).total_seconds()

    @property
    def value(self) -> float | None:
        return self.values[0] if self.values else None


METRIC_PREFIXES = ("train/", "valid/", "test/", "eval/", "loss_weights/")


def _metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith(METRIC_PREFIXES) and isinstance(v, (int, float))}


@dataclass
class Campaign:
    """A campaign as the results commands see it (a snapshot taken when it was opened)."""

    folder: CampaignFolder
    meta: dict
    space: SearchSpace
    directions: list[str]
    """"maximize" / "minimize" per objective."""
    objectives: list[str]
    """The objective's metric names (``valid/mean_auc``; several for a multi-objective campaign)."""
    trials: list[TrialRecord]
    frozen: list = field(default_factory=list, repr=False)
    """The study's trials as Optuna has them (``FrozenTrial``: distributions, intermediate values)."""

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def status(self) -> str:
        return campaign_status(self.meta)

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    def study(self):
        """An in-memory Optuna study of the completed trials (for importances and plots)."""
        import optuna

        study = optuna.create_study(directions=self.directions)
        study.add_trials([ft for ft in self.frozen if ft.state == optuna.trial.TrialState.COMPLETE
                          and ft.values is not None and all(_finite(v) for v in ft.values)])
        return study

    def completed(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == "complete" and t.values and all(_finite(v) for v in t.values)]

    def ranked(self) -> list[TrialRecord]:
        """Completed trials, best first: by the objective, or for several objectives the Pareto
        front first (each front by the first objective)."""
        done = self.completed()
        sign = [1.0 if d == "maximize" else -1.0 for d in self.directions]
        if len(sign) == 1:
            return sorted(done, key=lambda t: -sign[0] * t.values[0])
        front = pareto_front(done, sign)
        rest = [t for t in done if t not in front]
        key = lambda t: -sign[0] * t.values[0]  # noqa: E731
        return sorted(front, key=key) + sorted(rest, key=key)

    def best_trial(self) -> TrialRecord:
        ranked = self.ranked()
        if not ranked:
            raise ConfigError(f"campaign '{self.name}': no completed trial yet "
                              f"({len(self.trials)} trial(s): {self.summary_counts()})")
        return ranked[0]

    def trial(self, number: int) -> TrialRecord:
        for t in self.trials:
            if t.number == number:
                return t
        raise ConfigError(f"--trial {number}: campaign '{self.name}' has trials "
                          f"{', '.join(str(t.number) for t in self.trials if t.number is not None) or 'none'}")

    def config_of(self, trial: TrialRecord):
        """The trial's full run configuration (what ``rectune train --config`` takes)."""
        return self.space.config(trial.params)

    def summary_counts(self) -> str:
        return ", ".join(f"{self.count(s)} {s}" for s in STATES if self.count(s)) or "none"

    def started(self) -> datetime | None:
        return _parse_time(self.meta.get("created"))

    def duration_s(self) -> float | None:
        start = self.started()
        if start is None:
            return None
        end = _parse_time(self.meta.get("ended")) if self.status != "running" else None
        return ((end or datetime.now()) - start).total_seconds()


def pareto_front(trials: list[TrialRecord], sign: list[float]) -> list[TrialRecord]:
    def dominates(a, b) -> bool:
        x = [s * v for s, v in zip(sign, a.values)]
        y = [s * v for s, v in zip(sign, b.values)]
        return all(p >= q for p, q in zip(x, y)) and any(p > q for p, q in zip(x, y))

    return [t for t in trials if not any(dominates(o, t) for o in trials if o is not t)]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _parse_time(s: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(s) if s else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# campaign status


def campaign_status(meta: dict) -> str:
    """campaign.json's status, except that a "running" campaign whose driver process is gone (on
    this host) is "interrupted": a driver killed with SIGKILL never gets to write its status."""
    status = meta.get("status", "unknown")
    driver = meta.get("driver") or {}
    pid = driver.get("pid")
    if status == "running" and driver.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0:
        if not _alive(pid):
            return "interrupted"
    return status


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


# ---------------------------------------------------------------------------------------------
# finding campaigns


def storage_of(storage: str | None) -> str:
    return storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def campaign_names(storage: str | None = None) -> list[str]:
    """The campaigns (sub-folders with a campaign.json) in ``storage``, by name."""
    root = storage_of(storage)
    if is_uri(root):
        import pyarrow.fs

        fs, base = pyarrow.fs.FileSystem.from_uri(root)
        infos = fs.get_file_info(pyarrow.fs.FileSelector(base, allow_not_found=True))
        names = [i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                 and fs.get_file_info(f"{i.path}/campaign.json").type == pyarrow.fs.FileType.File]
        return sorted(names)
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"--storage {root}: no such folder (campaigns live in --storage, default "
                          f"${STORAGE_ENV} or ./{DEFAULT_STORAGE})")
    return sorted(p.name for p in path.iterdir() if (p / "campaign.json").is_file())


META_FIELDS: dict[str, tuple[type, str]] = {
    "status": (str, "text"), "data": (str, "text"), "created": (str, "a time"), "ended": (str, "a time"),
    "study_db": (str, "a database URL"), "study_db_full": (str, "a database URL"), "study_name": (str, "text"),
    "driver": (dict, "an object"), "trials_target": (int, "a number")}
"""campaign.json's entries the results commands use, with the type each must have (when present)."""


def open_folder(name: str, storage: str | None = None) -> tuple[CampaignFolder, dict]:
    root = storage_of(storage)
    folder = CampaignFolder(root, name)
    meta = folder.meta()
    if meta is None:
        if folder.local is not None and folder.local.is_dir():
            raise ConfigError(f"{folder.root}: not a campaign (no campaign.json)")
        raise ConfigError(f"campaign '{name}': not found in {root} (campaigns there: "
                          f"{', '.join(campaign_names(root)) or 'none'})")
    for key, (typ, what) in META_FIELDS.items():
        value = meta.get(key)
        if value is not None and (not isinstance(value, typ) or isinstance(value, bool)):
            raise DataError(f"{folder.root}/campaign.json: {key}: expected {what}, got {shorten(json.dumps(value), 60)}; "
                            f"the campaign folder is damaged")
    return folder, meta


def read_space(folder: CampaignFolder) -> SearchSpace:
    """The campaign's space.yaml, checked as when the campaign started; a damaged one is a one-line error."""
    where = f"{folder.root}/space.yaml"
    text = folder.read("space.yaml")
    if text is None:
        raise ConfigError(f"{where}: missing; the campaign folder is damaged")
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(f"{where}: not valid YAML{f' at line {mark.line + 1}' if mark else ''}; "
                        f"the campaign folder is damaged") from None
    return from_mapping(tree, where)


def open_campaign(name: str, storage: str | None = None, study_db: str | None = None) -> Campaign:
    """Open campaign ``name`` read-only and read its trials."""
    folder, meta = open_folder(name, storage)
    space = read_space(folder)
    objectives = space.objective.names()
    modes = space.objective.searcher_mode
    modes = modes if isinstance(modes, list) else [modes]
    directions = ["maximize" if m == "max" else "minimize" for m in modes]
    url = study_db or os.environ.get(STUDY_DB_ENV) or meta.get("study_db_full") or meta.get("study_db")
    if not url:
        raise ConfigError(f"{folder.root}/campaign.json: names no study database; pass --study-db")
    study_trials = read_study(url, meta.get("study_name", name))
    tune_trials = read_tune_trials(folder)
    trials = join(study_trials, tune_trials, objectives)
    if campaign_status(meta) != "running":
        for t in trials:
            if t.state == "running":
                t.state = "interrupted"
    return Campaign(folder, meta, space, directions, objectives, trials, study_trials)


# ---------------------------------------------------------------------------------------------
# the study


def read_study(url: str, study_name: str) -> list:
    """The study's trials (Optuna ``FrozenTrial``), read without writing to the database."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.is_file():
            raise ConfigError(f"{path}: the campaign's study database is missing")
        if path.stat().st_size == 0:  # SQLite would read it as a database without tables
            raise DataError(f"{path}: not a readable study database (the file is empty)")
        with tempfile.TemporaryDirectory(prefix="rectune-study-") as tmp:
            copy = Path(tmp) / "study.db"
            snapshot_sqlite(path, copy)
            return _trials_from(f"sqlite:///{copy}", study_name, str(path))
    return _trials_from(url, study_name, redact(url))


def snapshot_sqlite(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite database that another process may be writing: SQLite's
    backup API over a read-only connection (it waits up to 30 s for a writer's commit)."""
    try:
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
        try:
            target = sqlite3.connect(dst)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{src}: not a readable study database ({exc})") from None


def _trials_from(url: str, study_name: str, shown: str) -> list:
    import optuna
    import sqlalchemy.exc

    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)
        study_id = storage.get_study_id_from_name(study_name)
        return storage.get_all_trials(study_id, deepcopy=False)
    except KeyError:
        raise ConfigError(f"{shown}: holds no study named '{study_name}'") from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, ValueError, ImportError) as exc:
        # Optuna wraps a database error (a file without its tables: "no such table") in its own
        cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ else exc
        cause = getattr(cause, "orig", None) or cause
        raise DataError(f"{shown}: not a readable study database ({type(cause).__name__}: "
                        f"{first_line(str(cause))})") from None


# ---------------------------------------------------------------------------------------------
# Tune's trial folders


@dataclass
class TuneTrial:
    trial_id: str
    params: dict
    history: list[dict]
    error: str | None


def read_tune_trials(folder: CampaignFolder) -> list[TuneTrial]:
    out = []
    for sub in _trial_dirs(folder):
        params = _load_json(folder.read(f"tune/{sub}/params.json"))
        params = params if isinstance(params, dict) else {}
        history = _history(folder.read(f"tune/{sub}/result.json") or "")
        trial_id = history[-1].get("trial_id") if history else None
        trial_id = trial_id or _id_from_dir(sub)
        error = folder.read(f"tune/{sub}/error.txt")
        out.append(TuneTrial(trial_id, params, history, _last_line(error) if error else None))
    return out


def _trial_dirs(folder: CampaignFolder) -> list[str]:
    if folder.local is not None:
        base = folder.local / "tune"
        return sorted(p.name for p in base.iterdir() if (p / "params.json").is_file()) if base.is_dir() else []
    import pyarrow.fs

    fs, base = pyarrow.fs.FileSystem.from_uri(f"{folder.root}/tune")
    infos = fs.get_file_info(pyarrow.fs.FileSelector(base, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory)


def _id_from_dir(name: str) -> str:
    parts = name.split("_")  # trial_driver_<id>_<index>_<params>_<date>
    return parts[2] if len(parts) > 2 else name


def _load_json(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _history(text: str) -> list[dict]:
    """result.json: one JSON object per report; a line being written is skipped; a retried
    trial reports some epochs again (the last report of an epoch counts)."""
    by_epoch: dict[Any, dict] = {}
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            by_epoch[row.get("epoch", row.get("training_iteration"))] = row
    numbered = sorted(e for e in by_epoch if isinstance(e, (int, float)) and not isinstance(e, bool))
    return [by_epoch[k] for k in numbered] + [by_epoch[k] for k in by_epoch if k not in numbered]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "unknown error"


# ---------------------------------------------------------------------------------------------
# joining


_STATE = {"COMPLETE": "complete", "FAIL": "errored", "RUNNING": "running", "PRUNED": "pruned", "WAITING": "waiting"}


def join(study_trials: list, tune_trials: list[TuneTrial], objectives: list[str]) -> list[TrialRecord]:
    by_id = {t.trial_id: t for t in tune_trials}
    used: set[str] = set()
    out = []
    # completed trials claim their Tune trial first: a trial a killed driver left behind (closed
    # later as orphaned) may name the same Tune trial as the study trial that re-ran it
    for ft in sorted(study_trials, key=lambda ft: (ft.state.name != "COMPLETE", ft.number)):
        tid = ft.user_attrs.get(TUNE_TRIAL_ATTR)
        tt = by_id.get(tid) if tid and tid not in used else None
        if tt is None:  # a study from before the attribute: the Tune trial with the same parameters
            tt = next((t for t in tune_trials if t.trial_id not in used and t.params == ft.params), None)
        if tt is not None:
            used.add(tt.trial_id)
        state = _STATE.get(ft.state.name, ft.state.name.lower())
        error = tt.error if tt is not None else None
        if state == "errored" and error is None:
            error = ft.user_attrs.get("error") or "the trial failed (no error file)"
        out.append(TrialRecord(number=ft.number, trial_id=tt.trial_id if tt else tid, state=state,
                               params=dict(ft.params), values=list(ft.values) if ft.values is not None else None,
                               history=tt.history if tt else [], error=error if state == "errored" else None,
                               started=ft.datetime_start, finished=ft.datetime_complete))
    out.sort(key=lambda t: t.number)
    for tt in tune_trials:  # started by Tune, never recorded by the study (a driver killed in between)
        if tt.trial_id not in used:
            out.append(TrialRecord(number=None, trial_id=tt.trial_id, state="errored" if tt.error else "running",
                                   params=tt.params, values=None, history=tt.history, error=tt.error))
    return out
