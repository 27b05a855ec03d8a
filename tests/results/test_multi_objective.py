"""Ranking, importances and plots of a multi-objective campaign, on a study made in memory (no Ray)."""

from __future__ import annotations

import optuna
import pytest

from rectune.results import importance, plot
from rectune.results.store import Campaign, TrialRecord
from rectune.tune.campaign import CampaignFolder
from rectune.tune.space import from_mapping

SPACE = {"objective": {"metrics": ["valid/click_auc", "valid/conversion_auc"]},
         "budget": {"trials": 12}, "fixed": {"train.epochs": 2},
         "search": {"optim.lr": {"float": [1e-4, 1e-2], "log": True},
                    "model.mtl": {"categorical": ["shared_bottom", "mmoe"]},
                    "model.mtl.experts": {"int": [2, 4]}}}


@pytest.fixture()
def campaign(tmp_path) -> Campaign:
    space = from_mapping(SPACE, "space.yaml")
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        space(trial)
        lr = trial.params["optim.lr"]
        mmoe = trial.params["model.mtl"] == "mmoe"
        return 0.6 + 20 * lr + 0.01 * mmoe, 0.7 - 10 * lr + 0.02 * mmoe

    study.optimize(objective, n_trials=12)
    records = []
    for ft in study.trials:
        history = [{"epoch": e, "best_epoch": e, "valid/click_auc": ft.values[0] - 0.01 * (1 - e),
                    "valid/conversion_auc": ft.values[1] - 0.01 * (1 - e), "test/click_auc": ft.values[0]}
                   for e in range(2)]
        records.append(TrialRecord(ft.number, f"t{ft.number}", "complete", dict(ft.params), list(ft.values), history,
                                   started=ft.datetime_start, finished=ft.datetime_complete))
    return Campaign(CampaignFolder(str(tmp_path), "multi"), {"status": "finished"}, space, ["maximize", "maximize"],
                    space.objective.names(), records, study.trials)


def test_pareto_front_ranks_first(campaign):
    ranked = campaign.ranked()
    front = [t for t in ranked if not any(o.values[0] >= t.values[0] and o.values[1] >= t.values[1]
                                          and o.values != t.values for o in campaign.trials)]
    assert ranked[:len(front)] == sorted(front, key=lambda t: -t.values[0])
    assert len(ranked) == 12


def test_importance_per_objective(campaign):
    found = importance(campaign, "fanova")
    assert [i.objective for i in found] == ["valid/click_auc", "valid/conversion_auc"]
    for imp in found:  # the objectives above depend on lr most
        assert max(imp.importances, key=imp.importances.get) == "optim.lr"
        assert "model.mtl.experts" in imp.branches or "model.mtl.experts" in imp.not_assessed


def test_plots_per_objective(campaign, tmp_path):
    files = sorted(p.name for p in plot(campaign, tmp_path / "plots"))
    assert files == ["curves.png", "history-0.png", "history-1.png", "importance-0.png", "importance-1.png",
                     "parallel-0.png", "parallel-1.png", "report.html"]
