"""Querying campaign results: the Python API behind ``rectune results``.

    from rectune import results

    results.list_campaigns("campaigns")                 # one dict per campaign
    c = results.open_campaign("my-campaign", storage="campaigns")
    c.status, c.count("complete"), c.ranked()[:5]       # TrialRecord: number, params, values, history
    results.show(c, top=5)                              # what `rectune results show --json` prints
    results.write_best(c, "best.yaml")                  # takes `rectune train --config best.yaml`
    results.export(c, "trials.parquet")                 # one row per trial (.csv, .parquet, .json)
    results.importance(c)                               # Optuna's evaluators, per objective
    results.plot(c, "plots/")                           # PNGs and report.html
    results.evaluate(c, top=3, seeds=3)                 # retrain top-K and the baseline: the lift

Every function reads the campaign without writing to it (see :mod:`rectune.results.store`), so it
works on finished, interrupted and running campaigns.
"""

from __future__ import annotations

from rectune.results.evaluate import baseline_config, evaluate
from rectune.results.export import best_config, export, trial_rows, write_best
from rectune.results.importance import Importance, importance
from rectune.results.plots import plot
from rectune.results.report import list_campaigns, show, summary
from rectune.results.store import Campaign, TrialRecord, campaign_names, open_campaign

__all__ = ["Campaign", "Importance", "TrialRecord", "baseline_config", "best_config", "campaign_names", "evaluate",
           "export", "importance", "list_campaigns", "open_campaign", "plot", "show", "summary",
           "trial_rows", "write_best"]
