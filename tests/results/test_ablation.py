"""`rectune results evaluate --ablate` and `rectune bench mission`: which configurations the ablation
trains, and the arithmetic of the shares and of the comparison with peers (no training here; the
runs themselves are those of `evaluate`, tested in test_results.py)."""

from __future__ import annotations

import math

import pytest

from rectune.bench.mission import peer_models, table, versus
from rectune.results.evaluate import ABLATIONS, Candidate, ablations, pick, shares
from rectune.results.evaluate import table as evaluate_table
from rectune.runconfig import RunConfig

FULL = {"augment.mask.prob": 0.2, "augment.neighbor.rate": 0.1, "model.kg": "mean", "model.text_dim": 32,
        "model.history_text": True, "loss.weighting": "uncertainty", "loss.weights.conversion": 2.0, "optim.lr": 0.003}


def test_each_component_is_switched_off_alone():
    best = Candidate("trial-4", 4, RunConfig(FULL))
    out, unused = ablations(best)
    assert [c.ablation for c in out] == list(ABLATIONS) and unused == []
    by = {c.ablation: c.config for c in out}
    assert by["augmentation"].augment().enabled() == []
    assert by["augmentation"]["model.kg"] == "mean" and by["augmentation"]["loss.weighting"] == "uncertainty"
    assert by["kg+text fusion"]["model.kg"] == "none" and by["kg+text fusion"]["model.text_dim"] == 0
    assert by["kg+text fusion"]["model.history_text"] is False  # it needs the text: off with it
    assert by["kg+text fusion"]["augment.mask.prob"] == 0.2  # neighbour substitution is augmentation, kept
    assert by["mtl weighting"]["loss.weighting"] == "fixed" and by["mtl weighting"]["loss.weights.conversion"] == 1.0
    for c in out:  # everything else as in the best
        assert c.config["optim.lr"] == 0.003 and c.trial == 4 and c.label == f"trial-4 without {c.ablation}"
    assert best.config["model.kg"] == "mean"  # the best itself is untouched


def test_a_component_the_best_does_not_use_is_not_retrained():
    best = Candidate("trial-1", 1, RunConfig({"augment.mask.prob": 0.2, "optim.lr": 0.003}))
    out, unused = ablations(best)
    assert [c.ablation for c in out] == ["augmentation"]
    assert unused == ["kg+text fusion", "mtl weighting"]


def _row(label, ablation, **means):
    return {"label": label, "ablation": ablation, "metrics": {m.replace("__", "/"): {"mean": v, "std": 0.001}
                                                              for m, v in means.items()}}


def _report():
    rows = [_row("baseline", None, test__click_auc=0.80, test__conversion_auc=0.70),
            _row("trial-4", None, test__click_auc=0.82, test__conversion_auc=0.74),
            _row("trial-4 without augmentation", "augmentation", test__click_auc=0.815, test__conversion_auc=0.74),
            _row("trial-4 without kg+text fusion", "kg+text fusion", test__click_auc=0.81, test__conversion_auc=0.75)]
    for r in rows[1:]:
        for m, e in r["metrics"].items():
            e["lift"] = {"mean": e["mean"] - rows[0]["metrics"][m]["mean"], "ci95": None, "seeds": 3}
    return {"campaign": "c", "seeds": [1, 2, 3], "metrics": ["test/click_auc", "test/conversion_auc"], "rows": rows}


def test_share_of_the_lift_each_component_carries():
    report = _report()
    s = shares(report)
    assert s["augmentation"]["test/click_auc"] == pytest.approx(0.25)  # (0.82 - 0.815) / (0.82 - 0.80)
    assert s["augmentation"]["test/conversion_auc"] == pytest.approx(0.0)
    assert s["kg+text fusion"]["test/click_auc"] == pytest.approx(0.5)
    assert s["kg+text fusion"]["test/conversion_auc"] == pytest.approx(-0.25)  # better without it: negative
    report["ablation"] = {"of": "trial-4", "unused": ["mtl weighting"], "share": s}
    t = evaluate_table(report)
    assert t.row_count == 4 + 2 + 1


def test_the_pick_is_the_best_mean_valid_objective_over_the_seeds():
    cands = [Candidate(f"trial-{n}", n, RunConfig()) for n in (13, 0, 5)]
    runs = {"trial-13": [{"valid/mean_auc": v} for v in (0.9182, 0.9212, 0.9213)],  # best on the campaign's seed
            "trial-0": [{"valid/mean_auc": v} for v in (0.9219, 0.9217, 0.9216)],
            "trial-5": [{"valid/mean_auc": v} for v in (0.9100, 0.9300, 0.9000)]}
    assert pick(cands, runs, "valid/mean_auc", "maximize")[0].label == "trial-0"
    assert pick(cands, runs, "valid/mean_auc", "minimize")[0].label == "trial-5"  # mean 0.9133
    assert pick(cands[:1], runs, "valid/mean_auc", "maximize")[0].label == "trial-13"  # --top 1: the campaign's best
    tied = {**runs, "trial-13": runs["trial-0"]}
    assert pick(cands, tied, "valid/mean_auc", "maximize")[0].label == "trial-13"  # equals: the campaign's order
    gap = {**runs, "trial-13": [{"valid/mean_auc": 0.99}, {}, {"valid/mean_auc": float("nan")}]}
    assert pick(cands, gap, "valid/mean_auc", "minimize")[0].label == "trial-5"  # trial-13 diverged: left out
    none = {label: [{}] for label in runs}
    assert pick(cands, none, "valid/mean_auc", "maximize")[0].label == "trial-13"  # nobody has it: the campaign's


def test_shares_and_the_peers_are_of_the_pick():
    report = _report()
    report["rows"].insert(2, _row("trial-7", None, test__click_auc=0.83, test__conversion_auc=0.76))
    for m, e in report["rows"][2]["metrics"].items():
        e["lift"] = {"mean": e["mean"] - report["rows"][0]["metrics"][m]["mean"], "ci95": None, "seeds": 3}
    assert shares(report)["augmentation"]["test/click_auc"] == pytest.approx(0.25)  # of trial-4: no pick recorded
    report["pick"] = {"label": "trial-7", "by": "mean valid/mean_auc over the seeds (maximize)"}
    # (0.83 - 0.815) / (0.83 - 0.80): the ablation rows measured against the pick
    assert shares(report)["augmentation"]["test/click_auc"] == pytest.approx(0.5)
    vs = versus(report, [_peer("ple", 0.812, 0.725)], ["click", "conversion"])
    assert vs["click"]["difference"] == pytest.approx(0.018) and vs["conversion"]["difference"] == pytest.approx(0.035)
    report["objective"] = "valid/mean_auc"
    for r, v in zip(report["rows"], (0.90, 0.91, 0.92, None, None)):
        r["objective"] = v
    t = evaluate_table(report)
    labels = list(t.columns[0].cells)
    assert labels[2] == "trial-7 (pick)" and labels[1] == "trial-4"
    assert list(t.columns[1].cells)[:4] == ["0.9000", "0.9100", "0.9200", "-"]


def _peer(model, click, conversion):
    return {"model": model, "lr": 0.001, "test_auc": {"click": {"mean": click, "std": 0.001},
                                                      "conversion": {"mean": conversion, "std": 0.002}},
            "test_cold_auc": {"click": {"mean": 0.6, "std": math.nan}}}


def test_best_against_the_best_peer_per_task():
    report = _report()
    peers = [_peer("mmoe", 0.805, 0.728), _peer("ple", 0.812, 0.725), {"model": "esmm", "error": "exit 1: boom"}]
    vs = versus(report, peers, ["click", "conversion"])
    assert vs["click"]["best_peer"] == "ple" and vs["click"]["difference"] == pytest.approx(0.008)
    assert vs["click"]["met"] is False
    assert vs["conversion"]["best_peer"] == "mmoe" and vs["conversion"]["difference"] == pytest.approx(0.012)
    assert vs["conversion"]["met"] is True
    mission = {"tasks": ["click", "conversion"], "seeds": [1, 2, 3], "peer_trials": 20, "goal": 0.01,
               "evaluate": report, "peers": peers, "versus_best_peer": vs}
    assert table(mission).row_count == 1 + 3 + 1
    assert "each the best of 20 trials on seed 1" in table(mission).title
    assert table({**mission, "peers": []}).title.startswith("no peers run")


def test_peer_models_follow_the_number_of_tasks():
    assert peer_models(["click", "like"]) == ("mmoe", "ple", "esmm")
    assert peer_models(["click"]) == ("deepfm", "dcn")


def test_mission_refuses_a_top_whose_candidates_read_different_columns(monkeypatch, tmp_path):
    from rectune.bench import mission
    from rectune.errors import ConfigError

    cands = [Candidate("baseline", None, RunConfig()), Candidate("trial-3", 3, RunConfig()),
             Candidate("trial-1", 1, RunConfig({"model.features": ["item_id", "hist_items"]}))]
    monkeypatch.setattr(mission, "open_dataset", lambda path: None)
    monkeypatch.setattr(mission, "candidates", lambda c, top: cands[:top + 1])
    campaign = type("C", (), {"meta": {"data": str(tmp_path)}})()
    with pytest.raises(ConfigError) as e:
        mission.run(campaign, None, top=2, out=tmp_path / "out")
    assert str(e.value) == ("--top 2: the candidates read different columns (model.features [[], ['item_id', "
                            "'hist_items']]); the peers read one set: use --top 1")
    assert not (tmp_path / "out").exists()


def test_each_candidate_is_compared_with_the_peer_equivalent_too():
    from io import StringIO
    from types import SimpleNamespace

    from rich.console import Console

    from rectune.results.evaluate import PEER, _report

    cands = [Candidate("baseline", None, RunConfig()), Candidate(PEER, None, RunConfig({"model.mtl": "mmoe"})),
             Candidate("trial-7", 7, RunConfig({"optim.lr": 0.01}))]
    runs = {"baseline": [{"test/click_auc": v, "valid/mean_auc": v} for v in (0.70, 0.71, 0.72)],
            PEER: [{"test/click_auc": v, "valid/mean_auc": v} for v in (0.74, 0.74, 0.75)],
            "trial-7": [{"test/click_auc": v, "valid/mean_auc": v} for v in (0.76, 0.77, 0.77)]}
    report = _report(SimpleNamespace(name="c"), cands, [1, 2, 3], ["test/click_auc"], runs, "valid/mean_auc")
    rows = {r["label"]: r["metrics"]["test/click_auc"] for r in report["rows"]}
    assert rows["trial-7"]["lift_peer"]["mean"] == pytest.approx((0.02 + 0.03 + 0.02) / 3)  # paired, per seed
    assert rows["trial-7"]["lift"]["mean"] == pytest.approx((0.06 + 0.06 + 0.05) / 3)
    assert "lift_peer" not in rows[PEER] and "lift_peer" not in rows["baseline"]
    assert rows[PEER]["lift"]["mean"] == pytest.approx(0.0333, abs=1e-4)  # the peer-equivalent against the baseline
    out = StringIO()
    Console(file=out, width=250).print(evaluate_table(report))
    assert "vs peer +0.0233" in out.getvalue()
