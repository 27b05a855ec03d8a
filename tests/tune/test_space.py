"""Search spaces: compiled to Optuna, every mistake refused with a one-line error naming the key."""

from __future__ import annotations

import optuna
import pytest
import yaml

from rectune.errors import ConfigError
from rectune.tune.space import from_mapping, load

BASE = {
    "objective": "valid/mean_auc",
    "budget": {"trials": 4, "concurrency": 2},
    "fixed": {"train.epochs": 3},
    "search": {
        "optim.lr": {"float": [1e-4, 1e-2], "log": True},
        "model.mtl": {"categorical": ["shared_bottom", "mmoe", "ple"]},
        "model.mtl.experts": {"int": [2, 6]},
        "model.hidden": {"categorical": [[64], [128, 64]]},
    },
}


def space(**changes):
    tree = yaml.safe_load(yaml.safe_dump(BASE))
    for path, value in changes.items():
        node = tree
        *parents, last = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return from_mapping(tree, "s.yaml")


def sample(sp, n=40, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        sp(trial)
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


def test_define_by_run_follows_the_implied_condition():
    sp = space()
    draws = sample(sp)
    for d in draws:
        assert 1e-4 <= d["optim.lr"] <= 1e-2
        # model.mtl.experts only matters for MMoE and PLE: searched exactly then
        assert ("model.mtl.experts" in d) == (d["model.mtl"] in ("mmoe", "ple"))
    assert {d["model.mtl"] for d in draws} == {"shared_bottom", "mmoe", "ple"}
    # a list value travels as text and becomes the list again in the run's configuration
    cfg = sp.config(draws[0])
    assert cfg["model.hidden"] in ([64], [128, 64]) and cfg["train.epochs"] == 3
    assert cfg["train.metric"] == "valid/mean_auc"


def test_explicit_condition_and_fixed_parent():
    sp = space(**{"search/augment.mask.prob": {"float": [0.0, 0.3], "when": {"model.mtl": "ple"}}})
    draws = sample(sp)
    assert all(("augment.mask.prob" in d) == (d["model.mtl"] == "ple") for d in draws)
    # a parent fixed to a value the condition accepts: always searched
    sp = space(**{"fixed/model.mtl": "mmoe", "search/model.mtl": None})
    assert all("model.mtl.experts" in d for d in sample(sp, 5))


def test_weighted_and_multi_objectives():
    sp = space(objective={"weights": {"valid/click_auc": 0.7, "valid/conversion_auc": 0.3}})
    assert sp.objective.metric == "valid/weighted" and sp.objective.mode == "max"
    cfg = sp.base()
    assert cfg["train.metric"] == "valid/weighted"
    assert cfg["train.metric_weights"] == ["valid/click_auc:0.7", "valid/conversion_auc:0.3"]
    sp = space(objective={"metrics": ["valid/click_auc", "valid/conversion_logloss"]})
    assert sp.objective.searcher_metric == ["best/valid/click_auc", "best/valid/conversion_logloss"]
    assert sp.objective.searcher_mode == ["max", "min"]


def test_fingerprint_ignores_the_budget_only():
    a, b = space(), space(**{"budget/trials": 40})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != space(**{"search/optim.lr": {"float": [1e-4, 1e-1], "log": True}}).fingerprint()


@pytest.mark.parametrize("changes, message", [
    ({"search/modle.mtl": {"categorical": ["mmoe"]}}, "unknown config key 'modle.mtl' (did you mean 'model.mtl'?)"),
    ({"search/optim.lr": {"float": [1e-2, 1e-4]}}, "search: optim.lr: float: low 0.01 must be below high 0.0001"),
    ({"search/optim.lr": {"float": [0.0, 1e-2], "log": True}}, "optim.lr: float low: 0.0 is out of range"),
    ({"search/augment.mask.prob": {"float": [0.0, 1.5]}}, "augment.mask.prob: float high: 1.5 is out of range"),
    ({"search/model.mtl": {"categorical": ["mmoe", "moe"]}}, "model.mtl: categorical: 'moe' is not one of"),
    ({"search/model.mtl.experts": {"float": [2, 6]}}, "model.mtl.experts: float does not fit this key"),
    ({"search/optim.lr": 0.01}, "search: optim.lr: expected a distribution"),
    ({"search/optim.lr": {"float": [1e-4, 1e-2], "int": [1, 2]}}, "expected exactly one of float, int, categorical"),
    ({"search/model.mtl": None, "fixed/model.mtl": "shared_bottom"},
     "model.mtl.experts: when: model.mtl: never true: model.mtl is fixed to 'shared_bottom'"),
    ({"search/model.mtl": {"categorical": ["shared_bottom", "esmm"]}},
     "model.mtl.experts: when: model.mtl: never true: model.mtl is searched over shared_bottom, esmm"),
    ({"search/augment.mask.prob": {"float": [0, 0.3], "when": {"optim.lr": 0.001}}},
     "when: optim.lr: optim.lr is a continuous range"),
    ({"fixed/optim.lr": 0.001}, "search: optim.lr: also under fixed"),
    ({"budget/trials": 0}, "budget: trials: 0 is out of range"),
    ({"scheduler/name": "hyperband"}, "scheduler: name: 'hyperband' is not one of asha, fifo"),
    ({"scheduler/grace_period": 5}, "grace_period 5 exceeds train.epochs 3"),
    ({"objective": {"weights": {"valid/click_auc": 1, "valid/click_logloss": 1}}}, "mixes metrics to maximise"),
    ({"searhc": {}}, "s.yaml: unknown entry 'searhc'"),
    ({"search/train.epochs": {"int": [1, 3]}, "fixed/train.epochs": None}, "train.epochs: the scheduler sets the trial length"),
    ({"start": {"optim.lr": 1e-3}}, "start: expected a list of points"),
    ({"start": [{"optim.lr": 1e-3}, "mmoe"]}, "start[1]: expected a mapping of searched keys to values"),
    ({"start": [{"augment.mask.prob": 0.0}]}, "start[0]: augment.mask.prob: not a searched key"),
    ({"start": [{"optim.lr": 0.5}]}, "start[0]: optim.lr: 0.5 is outside the searched range [0.0001, 0.01]"),
    ({"start": [{"model.mtl": "esmm"}]}, "start[0]: model.mtl: 'esmm' is not one of the choices shared_bottom, mmoe, ple"),
    ({"start": [{"model.mtl.experts": "four"}]}, "start[0]: model.mtl.experts: expected a number, got 'four'"),
    ({"start": [{"model.mtl": "ple"}, {"model.mtl": "ple"}]}, "start[1]: the same point as an earlier one"),
    ({"start": [{"model.mtl": m} for m in ("shared_bottom", "mmoe", "ple")], "budget/trials": 2},
     "start: 3 points, more than the budget's 2 trials"),
])
def test_bad_spaces_are_refused_naming_the_key(changes, message):
    with pytest.raises(ConfigError) as err:
        space(**changes)
    text = str(err.value)
    assert text.startswith("s.yaml") and message in text and "\n" not in text


def test_dataset_checks_name_the_metric_and_the_task():
    sp = space(objective="valid/clik_auc")
    with pytest.raises(ConfigError, match="objective: 'valid/clik_auc' is not a metric of this dataset "
                                          r"\(did you mean 'valid/click_auc'\?\)"):
        sp.check_dataset(["click", "conversion"])
    sp = space(**{"search/loss.weights.like": {"float": [0.5, 2.0]}})
    with pytest.raises(ConfigError, match="loss.weights.like: the dataset has no task 'like'"):
        sp.check_dataset(["click", "conversion"])


def test_load_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such search space file"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: {optim.lr: [1, 2\n")
    with pytest.raises(Exception, match="bad.yaml: not valid YAML"):
        load(bad)


@pytest.mark.parametrize("name, tasks", [
    ("quick", ["click", "conversion"]), ("full", ["click", "conversion"]), ("augment", ["click", "conversion"]),
    ("quick", ["click", "like"]), ("full", ["purchase"]), ("augment", ["click"]),
    ("bench-synth", ["click", "conversion"]), ("bench-synth-ids", ["click", "conversion"]),
    ("bench-synth-new", ["click", "conversion"]), ("bench-synth-rare", ["click", "conversion"]),
    ("bench-ml100k-mtl", ["click", "like"]), ("bench-ml100k-mtl-focus", ["click", "like"]), ("bench-grocery-kg", ["click"])])
def test_shipped_spaces_load_and_sample(name, tasks):
    from pathlib import Path

    sp = load(Path(__file__).parents[2] / "search_spaces" / f"{name}.yaml").for_tasks(tasks)
    sp.check_dataset(tasks)
    for d in sample(sp, 10):
        sp.config(d)  # every draw is a valid run configuration


def test_start_points_come_first_once_and_change_the_fingerprint(tmp_path):
    from rectune.tune.campaign import StudySearch

    points = [{"model.mtl": "shared_bottom", "model.hidden": [128, 64]}, {"optim.lr": 1e-3}]
    sp = space(start=points)
    assert sp.start == ({"model.mtl": "shared_bottom", "model.hidden": "128,64"}, {"optim.lr": 1e-3})
    assert sp.fingerprint() != space().fingerprint()
    assert "start" not in space().to_dict()  # campaigns made before start existed keep their fingerprint
    storage = f"sqlite:///{tmp_path}/study.db"

    def searcher():
        return StudySearch(sp, storage, "s")

    first = searcher()
    asked = [first.suggest(f"t{i}") for i in range(5)]
    # after the floor every campaign tries first (the defaults, the peer-equivalent: test_auto_space.py)
    from rectune.runconfig import RunConfig

    assert asked[0]["model.mtl"] == RunConfig()["model.mtl"] and asked[1]["model.mtl"] == "mmoe"
    assert asked[0]["optim.lr"] == RunConfig()["optim.lr"] and asked[1]["optim.lr"] == 1e-3
    assert asked[2]["model.mtl"] == "shared_bottom" and asked[2]["model.hidden"] == "128,64"
    assert asked[3]["optim.lr"] == 1e-3 and asked[4]["optim.lr"] != 1e-3
    searcher()  # a resumed campaign sets the study up again: the points are not enqueued twice
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 0
    assert len(study.trials) == 5


def test_task_weights_of_every_task_from_one_wildcard_key():
    sp = space(**{"search/loss.weights.*": {"float": [0.5, 2.0]}, "search/loss.weights.like": {"float": [1.0, 3.0]}})
    out = sp.for_tasks(["click", "like", "buy"])
    weights = {d.key: (d.low, d.high) for d in out.params if d.key.startswith("loss.weights.")}
    assert weights == {"loss.weights.click": (0.5, 2.0), "loss.weights.buy": (0.5, 2.0),
                       "loss.weights.like": (1.0, 3.0)}  # a task named in the space keeps its own range
    out.check_dataset(["click", "like", "buy"])
    assert space().for_tasks(["click"]) == space()
