"""A campaign on a real two-node Ray cluster on one machine (``ray.cluster_utils.Cluster``).

Both nodes have this machine's IP; they differ by node id. Where the trials ran is read from the
placement groups of their Train workers: each trial reports its group's id
(``trial/placement_group``), and a thread polls ``ray.util.placement_group_table()`` while the
campaign runs, to see the node each group's bundle was placed on.
"""

from __future__ import annotations

import optuna
import pytest
import ray

from rectune.bench.scale import Placements, Poll, two_node_cluster
from rectune.results.store import read_tune_trials
from rectune.tune.campaign import run_campaign

from .spaces import write_space


@pytest.mark.timeout(420)
def test_campaign_trials_run_on_both_nodes_of_a_two_node_cluster(small_world, tmp_path):
    space = write_space(tmp_path / "space.yaml", budget={"trials": 2, "concurrency": 2})
    storage = tmp_path / "campaigns"
    # Two nodes of 2 CPUs: the ResourcePlan for 4 CPUs and 2 trials gives each trial's Train worker
    # 0.995 CPU. Ray places a one-bundle placement group on the node that keeps the largest share of
    # its available CPUs ((available - asked) / available): the first trial's worker takes one node,
    # which then scores 0 against ~0.5 for the other, so the second trial's worker goes there.
    # (With 1 + 2 CPUs both workers land on the larger node.)
    placements = Placements()
    with two_node_cluster(4) as (address, names):
        assert len({n["NodeID"] for n in ray.nodes() if n["Alive"]}) == 2
        with Poll(placements):
            result = run_campaign(small_world, space, "m1", storage=str(storage), address=address)

    assert result.status == "finished"
    assert len(result.trials) == 2, result.trials
    assert all(t["status"] == "done" and 0.5 < t["valid/mean_auc"] <= 1.0 for t in result.trials), result.trials
    study = optuna.load_study(study_name="m1", storage=f"sqlite:///{storage / 'm1' / 'study.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 2

    reported = {t.trial_id: t.history[-1] for t in read_tune_trials(result.folder)}
    assert set(reported) == {t["trial_id"] for t in result.trials}
    placed = {tid: placements.seen.get(r["trial/placement_group"], set()) for tid, r in reported.items()}
    assert all(len(p) == 1 for p in placed.values()), (placed, placements.seen)
    assert set().union(*placed.values()) == set(names), (placed, names)
