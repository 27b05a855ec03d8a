"""NaN and infinities (YAML's .nan, .inf, -.inf) are refused with a one-line error naming the key, in a
run configuration and in every numeric entry of a search space, before anything runs or is written."""

from __future__ import annotations

import pytest
import yaml

from rectune.config import parse_value
from rectune.errors import ConfigError
from rectune.runconfig import RunConfig
from rectune.tune.space import load

from .conftest import run_cli
from .tune.spaces import TINY


@pytest.mark.parametrize("key, text, shown", [
    ("optim.lr", ".nan", "nan"),
    ("augment.mask.prob", ".nan", "nan"),  # NaN passed the bounds and turned the augmenter off
    ("optim.weight_decay", "-.inf", "-inf"),
    ("train.epochs", ".inf", "inf"),  # an int key: infinity has no integer
    ("train.seed", ".nan", "nan"),
    ("model.hidden", "[64, .inf]", "inf"),
    ("loss.weights.click", ".nan", "nan"),
])
def test_a_config_key_refuses_a_non_finite_number(key, text, shown):
    with pytest.raises(ConfigError, match=rf"^{key}: {shown} is not a finite number$"):
        RunConfig({key: parse_value(text)})


def test_a_float_key_refuses_an_integer_beyond_floats():
    with pytest.raises(ConfigError, match=r"^optim.lr: .*not a finite number$"):
        RunConfig({"optim.lr": 10 ** 400})


def _one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("rectune: error: "), r.output
    return lines[0]


def test_train_set_nan_is_one_line(tmp_path):
    r = run_cli("train", "--data", tmp_path / "data", "--set", "optim.lr=.nan", "--out", tmp_path / "run")
    assert _one_error_line(r) == "rectune: error: optim.lr: nan is not a finite number"
    assert not (tmp_path / "run").exists()


def test_train_config_file_inf_names_the_file(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  epochs: .inf\n")
    r = run_cli("train", "--data", tmp_path / "data", "--config", cfg, "--out", tmp_path / "run")
    assert _one_error_line(r) == f"rectune: error: {cfg}: train.epochs: inf is not a finite number"


NAN, INF = float("nan"), float("inf")

# each: (section, its value with one non-finite entry, what the error names)
SPACE_CASES = {
    "trials": ("budget", {"trials": INF}, "budget: trials: inf"),
    "concurrency": ("budget", {"concurrency": NAN}, "budget: concurrency: nan"),
    "time_limit_s": ("budget", {"time_limit_s": NAN}, "budget: time_limit_s: nan"),
    "time_limit_inf": ("budget", {"time_limit_s": INF}, "budget: time_limit_s: inf"),
    "grace_period": ("scheduler", {"name": "asha", "grace_period": INF}, "scheduler: grace_period: inf"),
    "reduction_factor": ("scheduler", {"name": "asha", "reduction_factor": NAN}, "scheduler: reduction_factor: nan"),
    "seed": ("sampler", {"name": "tpe", "seed": NAN}, "sampler: seed: nan"),
    "startup_trials": ("sampler", {"name": "tpe", "startup_trials": INF}, "sampler: startup_trials: inf"),
    "workers": ("resources", {"workers": INF}, "resources: workers: inf"),
    "gpus": ("resources", {"gpus_per_worker": NAN}, "resources: gpus_per_worker: nan"),
    "fixed_float": ("fixed", {"train.epochs": 2, "optim.weight_decay": NAN}, "fixed: optim.weight_decay: nan"),
    "fixed_int": ("fixed", {"train.epochs": INF}, "fixed: train.epochs: inf"),
    "fixed_list": ("fixed", {"train.epochs": 2, "model.hidden": [32, INF]}, "fixed: model.hidden: inf"),
    "fixed_task_weight": ("fixed", {"train.epochs": 2, "loss.weights.click": -INF}, "fixed: loss.weights.click: -inf"),
    "weights": ("objective", {"weights": {"valid/click_auc": INF, "valid/conversion_auc": 1}},
                "objective: weights: valid/click_auc: inf"),
    "range_low": ("search", {"optim.lr": {"float": [NAN, 1e-2]}}, "search: optim.lr: float low: nan"),
    # a key without an upper bound: infinity passed its own check
    "range_high": ("search", {"train.seed": {"int": [0, INF]}}, "search: train.seed: int high: inf"),
    "float_step": ("search", {"optim.weight_decay": {"float": [0.0, 0.1], "step": NAN}},
                   "search: optim.weight_decay: step: nan"),
    "int_step": ("search", {"train.seed": {"int": [0, 8], "step": INF}}, "search: train.seed: step: inf"),
    "choice": ("search", {"optim.weight_decay": {"categorical": [0.0, NAN]}},
               "search: optim.weight_decay: categorical: nan"),
    "when": ("search", {"train.seed": {"int": [0, 8], "when": {"train.patience": INF}}},
             "search: train.seed: when: train.patience: inf"),
    "start": ("start", [{"augment.mask.prob": NAN}], "start[0]: augment.mask.prob: nan"),
}


def write_space(path, section: str, value) -> None:
    """TINY with ``section`` replaced (``search``: keys added), written as YAML (.nan, .inf, -.inf)."""
    tree = yaml.safe_load(yaml.safe_dump(TINY))
    tree[section] = {**tree["search"], **value} if section == "search" else value
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    assert any(s in path.read_text() for s in (".nan", ".inf"))


@pytest.mark.parametrize("case", list(SPACE_CASES))
def test_every_numeric_entry_of_a_space_refuses_non_finite(case, tmp_path):
    section, value, named = SPACE_CASES[case]
    path = tmp_path / "space.yaml"
    write_space(path, section, value)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"{path}: {named} is not a finite number"


def test_tune_refuses_a_nan_time_limit_before_ray_and_writes_nothing(small_world, tmp_path, monkeypatch):
    import rectune.tune.campaign as campaign

    def no_ray(*args, **kwargs):
        raise AssertionError("the campaign started")

    monkeypatch.setattr(campaign, "_run", no_ray)
    space = tmp_path / "space.yaml"
    write_space(space, "budget", {"trials": 4, "time_limit_s": NAN})
    storage = tmp_path / "campaigns"
    r = run_cli("tune", "--data", small_world, "--space", space, "--name", "c1", "--storage", storage)
    assert _one_error_line(r) == f"rectune: error: {space}: budget: time_limit_s: nan is not a finite number"
    assert not storage.exists()


def test_a_metric_weight_refuses_infinity():
    from rectune.train.metrics import metric_weights

    config = RunConfig({"train.metric_weights": ["valid/click_auc:inf", "valid/conversion_auc:1"]})
    with pytest.raises(ConfigError, match=r"valid/click_auc:inf'.*finite weight"):
        metric_weights(config, ["click", "conversion"])


@pytest.mark.parametrize("args", [("data", "synth", "--new-items", "nan"), ("data", "synth", "--conversion-shift", "inf"),
                                  ("bench", "gan", ".", "--ratio", "nan"), ("bench", "train", ".", "--lr", "nan")])
def test_float_options_refuse_nan_and_inf(args, tmp_path):
    r = run_cli(*args, *(("--out", tmp_path / "w") if args[0] == "data" else ()))
    assert r.exit_code == 2 and "is not a finite number" in r.output
    assert not (tmp_path / "w").exists()
