"""Campaigns end to end on a small world: a real local Ray, Tune, Train and an Optuna study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from rectune.errors import ConfigError
from rectune.results import open_campaign
from rectune.tune.campaign import run_campaign

from .spaces import TINY, write_space



def study_trials(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rectune.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def test_campaign_survives_a_killed_driver_and_resumes(small_world, tmp_path):
    """A campaign killed with SIGKILL mid-way is completed by --resume: every trial once."""
    space = write_space(tmp_path / "space.yaml", budget={"trials": 3, "concurrency": 2})
    storage = tmp_path / "campaigns"
    url = f"sqlite:///{storage / 'c1' / 'study.db'}"
    proc = cli("tune", "--data", str(small_world), "--space", str(space), "--name", "c1", "--storage", str(storage))
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(2)
        if (storage / "c1" / "study.db").exists():
            try:
                done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study_trials(url, "c1"))
            except Exception:  # noqa: BLE001 - the study is being created
                done = 0
        if done >= 1:
            break
    assert proc.poll() is None, proc.stdout.read()
    assert done >= 1, "no trial completed within 240 s"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    closed = {t.number: t.value for t in study_trials(url, "c1") if t.state == optuna.trial.TrialState.COMPLETE}
    meta = json.loads((storage / "c1" / "campaign.json").read_text())
    assert meta["status"] == "running"  # it never got to say otherwise
    # the results commands see it as interrupted (its driver is gone), with what the study closed
    seen = open_campaign("c1", str(storage))
    assert seen.status == "interrupted"
    assert {t.number: t.value for t in seen.trials if t.state == "complete"} == closed

    # the same name again without --resume: refused, nothing touched
    before = (storage / "c1" / "campaign.json").read_text()
    with pytest.raises(ConfigError, match="a campaign of that name exists .* pass --resume"):
        run_campaign(small_world, space, "c1", storage=str(storage))
    # --resume with an edited space: refused
    edited = write_space(tmp_path / "edited.yaml", fixed={**TINY["fixed"], "model.emb_dim": 16})
    with pytest.raises(ConfigError, match="differs from the space campaign 'c1' started with"):
        run_campaign(small_world, edited, "c1", storage=str(storage), resume=True)
    assert (storage / "c1" / "campaign.json").read_text() == before

    result = run_campaign(small_world, space, "c1", storage=str(storage), resume=True, cpus=2)
    assert result.status == "finished"
    assert len(result.trials) == 3 and len({t["trial_id"] for t in result.trials}) == 3
    assert all(t["status"] == "done" and 0.5 < t["valid/mean_auc"] <= 1.0 for t in result.trials), result.trials
    trials = study_trials(url, "c1")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3, [(t.number, t.state) for t in trials]
    # the study is the truth: what it recorded before the kill stays, once; the trials it closed after
    # the resume carry the Tune trials' best valid AUCs
    assert {t.number: t.value for t in complete if t.number in closed} == closed
    found = {round(t["valid/mean_auc"], 6) for t in result.trials}
    assert {round(t.value, 6) for t in complete if t.number not in closed} <= found
    meta = json.loads((storage / "c1" / "campaign.json").read_text())
    assert meta["status"] == "finished" and meta["resumed"]
    assert (storage / "c1" / "space.yaml").is_file() and (storage / "c1" / "tune").is_dir()
    assert len(list((storage / "c1" / "train").glob("train-*"))) == 3
    after = open_campaign("c1", str(storage))  # the results agree with the study: each trial once
    assert after.status == "finished" and after.count("complete") == 3
    assert sorted(t.value for t in after.trials if t.state == "complete") == sorted(t.value for t in complete)
    # a study trial the kill left running (asked, not yet saved by Tune) is closed as errored, with why
    assert all(t.state == "errored" and "orphaned" in t.error for t in after.trials if t.state != "complete")


@pytest.mark.parametrize("args, message", [
    (["--space", "SPACE_BAD"], "search: modle.mtl: unknown config key 'modle.mtl'"),
    (["--space", "SPACE_OK", "--name", "bad name"], "--name 'bad name': expected letters"),
    (["--space", "SPACE_OK", "--resume"], "--resume: no campaign 'c2'"),
    (["--space", "SPACE_METRIC"], "objective: 'valid/like_auc' is not a metric of this dataset"),
    (["--space", "SPACE_OK", "--study-db", "nosuchdb://x"], "--study-db nosuchdb://x: not a usable SQLAlchemy"),
])
def test_bad_campaign_input_exits_2_and_writes_nothing(small_world, tmp_path, args, message):
    ok = write_space(tmp_path / "ok.yaml")
    bad = write_space(tmp_path / "bad.yaml", search={"modle.mtl": {"categorical": ["mmoe"]}})
    metric = write_space(tmp_path / "metric.yaml", objective="valid/like_auc")
    args = [{"SPACE_OK": str(ok), "SPACE_BAD": str(bad), "SPACE_METRIC": str(metric)}.get(a, a) for a in args]
    if "--name" not in args:
        args += ["--name", "c2"]
    storage = tmp_path / "campaigns"
    out = subprocess.run([sys.executable, "-m", "rectune.cli", "tune", "--data", str(small_world),
                          "--storage", str(storage), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not storage.exists() or not any(storage.iterdir())


def _open_study_db(url, barrier, results) -> None:
    from rectune.tune.folder import study_storage

    barrier.wait()
    try:
        study_storage(url)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported by the test
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_setting_up_one_fresh_study_database_at_once(tmp_path):
    """Optuna's table set-up is not atomic: processes opening a fresh database at the same moment
    raced ("table studies already exists", a duplicate alembic version; 3 rounds in 5 before the
    retry) and a campaign's start died of it. Every opener now gets the database."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    for r in range(3):
        url = f"sqlite:///{tmp_path / f'race-{r}.db'}"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_study_db, args=(url, barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        got = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
        assert got == ["ok"] * 4, got


def test_a_database_error_that_is_no_race_is_not_retried(monkeypatch, tmp_path):
    import sqlalchemy.exc

    from rectune.tune import folder

    calls = []

    def refuse(url):
        calls.append(url)
        raise sqlalchemy.exc.OperationalError("connect", {}, Exception("connection refused"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", refuse)
    with pytest.raises(ConfigError, match=r"--study-db sqlite:///x: cannot connect \(connection refused\)$"):
        folder.study_storage("sqlite:///x")
    assert len(calls) == 1


def test_campaign_with_its_study_on_postgresql(small_world, tmp_path, postgres_url):
    """A multi-objective campaign whose study lives in PostgreSQL."""
    url = postgres_url
    name = f"pg-{os.getpid()}-{int(time.time())}"
    space = write_space(tmp_path / "space.yaml", budget={"trials": 2, "concurrency": 2},
                        objective={"metrics": ["valid/click_auc", "valid/conversion_auc"]})
    try:
        result = run_campaign(small_world, space, name, storage=str(tmp_path / "campaigns"), study_db=url, cpus=2)
        assert result.status == "finished"
        trials = study_trials(url, name)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 2
        # both objectives reach the study: the click and conversion AUCs at each trial's best epoch
        assert all(len(t.values) == 2 and all(0 < v <= 1 for v in t.values) for t in complete)
        found = {(round(t["valid/click_auc"], 6), round(t["valid/conversion_auc"], 6)) for t in result.trials}
        assert {tuple(round(v, 6) for v in t.values) for t in complete} == found
        assert not (tmp_path / "campaigns" / name / "study.db").exists()
        # the results side reads the PostgreSQL study through campaign.json's URL: two objectives
        c = open_campaign(name, str(tmp_path / "campaigns"))
        assert c.objectives == ["valid/click_auc", "valid/conversion_auc"] and c.count("complete") == 2
        assert {tuple(t.values) for t in c.ranked()} == {tuple(t.values) for t in complete}
        # the study name is taken in the shared database: a new campaign of that name is refused
        with pytest.raises(ConfigError, match=f"a study named '{name}' exists there already"):
            run_campaign(small_world, space, name, storage=str(tmp_path / "other"), study_db=url)
        assert not (tmp_path / "other" / name).exists()
    finally:
        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass
