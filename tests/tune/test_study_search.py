"""The campaign's searcher as Tune handles it: pickled with the Tuner and at every save of the
experiment state, then used again. No live storage, engine, sampler or lock goes into the pickle;
what comes back talks to the same study."""

from __future__ import annotations

import pickle
import uuid

import optuna
import pytest

from rectune.tune.campaign import StudySearch
from tests.tune.test_space import space


def _url(kind: str, tmp_path, request) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/study.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=["sqlite", "postgresql"])
def study_url(request, tmp_path):
    url = _url(request.param, tmp_path, request)
    names: list[str] = []
    yield url, names
    for name in names:  # the shared PostgreSQL database keeps no test study behind
        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass


@pytest.mark.parametrize("objective", [{"objective": "valid/mean_auc"},
                                       {"objective": {"metrics": ["valid/click_auc", "valid/conversion_auc"]}}],
                         ids=["tpe", "nsga2"])
def test_the_searcher_pickles_without_live_parts_and_goes_on_with_its_study(study_url, objective):
    url, names = study_url
    name = f"s-{uuid.uuid4().hex[:12]}"
    names.append(name)
    sp = space(**objective)
    metrics = sp.objective.names()
    searcher = StudySearch(sp, url, name)
    first = searcher.suggest("t0")
    searcher.suggest("t1")

    data = pickle.dumps(searcher)  # what Tuner(...) does with its search algorithm
    assert b"sqlalchemy" not in data and b"RDBStorage" not in data and b"Sampler" not in data
    back = pickle.loads(data)
    assert not {"_storage", "_sampler", "_ot_study", "_ot_trials"} & set(vars(back))

    # the trials asked before the pickle are told after it, to the same study
    back.on_trial_complete("t0", {f"best/{m}": 0.7 for m in metrics} | {"training_iteration": 1})
    study = optuna.load_study(study_name=name, storage=url)
    told = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(told) == 1 and told[0].params == first
    assert told[0].user_attrs["tune_trial_id"] == "t0"
    # and new trials go on in it
    back.suggest("t2")
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 3


def test_save_and_restore_keep_the_trials_and_draw_no_parameters_twice(tmp_path):
    url, name = f"sqlite:///{tmp_path}/study.db", "s"
    sp = space(**{"sampler": {"name": "random", "seed": 3}})
    searcher = StudySearch(sp, url, name)
    asked = [searcher.suggest(f"t{i}") for i in range(3)]
    searcher.on_trial_complete("t0", {"best/valid/mean_auc": 0.6, "training_iteration": 1})
    searcher.save(str(tmp_path / "searcher.pkl"))  # as Tune saves its experiment state

    restored = pickle.loads(pickle.dumps(searcher))  # as Tuner.restore unpickles the Tuner
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored._completed_trials == {"t0"}  # noqa: SLF001
    restored.on_trial_complete("t1", {"best/valid/mean_auc": 0.65, "training_iteration": 1})
    later = [restored.suggest(f"t{i}") for i in range(3, 6)]
    # the rebuilt sampler is seeded past the trials the study holds: a resumed campaign does not
    # draw its first trials' parameters again
    assert not [p for p in later if p in asked]
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [t.state for t in trials[:2]] == [optuna.trial.TrialState.COMPLETE] * 2
    assert len(trials) == 6
