"""``rectune results importance``: how much each searched key mattered, by Optuna's evaluators.

Over the completed trials, per objective. Optuna assesses the keys that every one of those trials
has; a conditional key (``model.mtl.experts`` only for MMoE and PLE) is then assessed on its own
branch: the completed trials where it was searched, with the keys they all share.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from rectune.errors import ConfigError
from rectune.results.store import Campaign

EVALUATORS = ("ped-anova", "fanova", "mdi")
MIN_TRIALS = 2


def _evaluator(name: str, seed: int):
    from optuna.importance import (FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator,
                                   PedAnovaImportanceEvaluator)

    if name == "fanova":
        return FanovaImportanceEvaluator(seed=seed)
    if name == "mdi":
        return MeanDecreaseImpurityImportanceEvaluator(seed=seed)
    if name == "ped-anova":
        return PedAnovaImportanceEvaluator()
    raise ConfigError(f"--evaluator {name}: expected one of {', '.join(EVALUATORS)}")


@dataclass
class Importance:
    objective: str
    evaluator: str
    trials: int
    """Completed trials assessed."""
    importances: dict[str, float]
    """Searched key -> share of the objective's variation (sums to 1 over the keys assessed together)."""
    branches: dict[str, tuple[float, int]]
    """Conditional key -> (importance within its branch, trials in that branch)."""
    not_assessed: dict[str, str]
    """Searched key -> why it was not assessed."""

    def to_dict(self) -> dict:
        return {"objective": self.objective, "evaluator": self.evaluator, "trials": self.trials,
                "importances": self.importances,
                "branches": {k: {"importance": v, "trials": n} for k, (v, n) in self.branches.items()},
                "not_assessed": self.not_assessed}


def _assess(study, params: list[str], target, evaluator) -> dict[str, float]:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(study, evaluator=evaluator, params=params, target=target)


def assessable(keys: list[str], trials: list) -> list[str]:
    """The ``keys`` that every one of ``trials`` has and that took at least two values among them
    (what Optuna's evaluators and the parallel-coordinates plot can use together)."""
    return [k for k in keys if all(k in t.params for t in trials) and len({repr(t.params[k]) for t in trials}) > 1]


def importance(c: Campaign, evaluator: str = "ped-anova", seed: int = 0) -> list[Importance]:
    """One :class:`Importance` per objective."""
    _evaluator(evaluator, seed)  # a bad name fails before any work
    study = c.study()
    trials = study.get_trials(deepcopy=False)
    if len(trials) < MIN_TRIALS:
        raise ConfigError(f"campaign '{c.name}': importances need at least {MIN_TRIALS} completed trials, "
                          f"it has {len(trials)} ({c.summary_counts()})")
    searched = [d.key for d in c.space.params]
    seen = {k: sum(k in t.params for t in trials) for k in searched}
    common = [k for k in searched if seen[k] == len(trials)]
    varied = assessable(common, trials)
    out = []
    for i, metric in enumerate(c.objectives):
        target = (lambda t, i=i: t.values[i]) if len(c.objectives) > 1 else None
        not_assessed = {k: "took one value in every completed trial" for k in common if k not in varied}
        imps = _assess(study, varied, target, _evaluator(evaluator, seed)) if varied else {}
        imps = {k: float(v) for k, v in imps.items()}
        branches: dict[str, tuple[float, int]] = {}
        for k in searched:
            if k in common:
                continue
            branch = [t for t in trials if k in t.params]
            if len(branch) < MIN_TRIALS or len({repr(t.params[k]) for t in branch}) < 2:
                not_assessed[k] = (f"conditional: searched in {len(branch)} of {len(trials)} completed trials, "
                                   f"too few to assess")
                continue
            import optuna

            sub = optuna.create_study(directions=c.directions)
            sub.add_trials(branch)
            branch_imps = _assess(sub, assessable(searched, branch), target, _evaluator(evaluator, seed))
            branches[k] = (float(branch_imps.get(k, 0.0)), len(branch))
        for k in searched:
            if seen[k] == 0:
                not_assessed[k] = "never searched (its condition did not hold in any completed trial)"
        out.append(Importance(metric, evaluator, len(trials), dict(sorted(imps.items(), key=lambda kv: -kv[1])),
                              branches, not_assessed))
    return out
