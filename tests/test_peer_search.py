"""The peers' own search (`rectune bench peers`, the peer side of `bench mission`): which trials it
runs, which it keeps, that a rerun reuses them, and its refusals. The torch-rechub runs are replaced
by a function of the parameters here (the peer environment is not part of the test install)."""

from __future__ import annotations

import json
import math

import pytest

from rectune.bench import peer_search
from rectune.bench.peer_search import PEER_NICE, PEER_SPACE, PEER_START, peer_run, run_name, search_peer, table
from tests.conftest import run_cli


def _valid(p: dict) -> float:
    """A made-up valid AUC that peaks at lr 3e-3 and dropout 0.1."""
    return 0.9 - abs(math.log10(p["lr"] / 3e-3)) * 0.01 - abs(p["dropout"] - 0.1) * 0.01


class FakeRuns:
    def __init__(self, fail_lr_above: float = 1.0):
        self.calls: list[tuple[dict, int]] = []
        self.fail_lr_above = fail_lr_above

    def __call__(self, peer_python, data, out, model, params, seed, epochs, console, fields=None):
        self.calls.append((dict(params), seed))
        self.fields = fields
        if params["lr"] > self.fail_lr_above:
            return {"error": "exit 1: loss is nan"}
        v = _valid(params)
        return {"valid_mean_auc": v, "test_auc": {"click": v - 0.01 + seed * 1e-4},
                "test_cold_auc": {"click": v - 0.1}}


def test_the_search_starts_at_the_defaults_and_keeps_the_best_valid_trial(tmp_path):
    runs = FakeRuns()
    r = search_peer(None, tmp_path, tmp_path, "mmoe", [1, 2, 3], trials=8, epochs=5, jobs=2, runner=runs)
    first_seed = [p for p, s in runs.calls if s == 1]
    assert len(first_seed) == 8 and first_seed[0] == PEER_START
    for p in first_seed:  # every trial inside the space, as the runs use it (3 significant digits)
        for name, (kind, *args) in PEER_SPACE.items():
            assert p[name] in args if kind == "choice" else args[0] <= p[name] <= args[1]
    best = max(first_seed, key=_valid)
    assert r["hparams"] == best and r["lr"] == best["lr"]
    assert [(p, s) for p, s in runs.calls if s != 1] == [(best, 2), (best, 3)]
    assert r["seeds"] == 3 and [t["hparams"] for t in r["trials"]] == first_seed
    assert r["test_auc"]["click"]["values"] == pytest.approx([_valid(best) - 0.01 + s * 1e-4 for s in (1, 2, 3)])
    assert len(first_seed) == len({json.dumps(p, sort_keys=True) for p in first_seed})  # TPE drew 7 new points


def test_failed_trials_are_skipped_and_a_search_with_no_success_says_why(tmp_path):
    runs = FakeRuns(fail_lr_above=2e-3)
    r = search_peer(None, tmp_path, tmp_path, "ple", [1, 2], trials=6, epochs=5, runner=runs)
    assert r["hparams"]["lr"] <= 2e-3
    assert any(t["error"] for t in r["trials"]), "the space above 2e-3 was never drawn: the test proves nothing"
    r = search_peer(None, tmp_path, tmp_path, "ple", [1, 2], trials=2, epochs=5, runner=FakeRuns(fail_lr_above=0))
    assert r == {"model": "ple", "error": "exit 1: loss is nan"}


def test_a_rerun_draws_the_same_trials_and_reuses_every_finished_run(tmp_path, monkeypatch):
    calls = []

    def fake_run_peer(peer_python, data, seed, epochs, batch_size, emb, lr, history, threads, model, extra, nice):
        assert nice == PEER_NICE  # peers share the CPU with Ray's workers on equal terms
        calls.append((lr, seed))
        wd, do, schedule = float(extra[1]), float(extra[3]), extra[extra.index("--schedule") + 1]
        v = _valid({"lr": lr, "dropout": do})
        return {"valid_mean_auc": v, "test_auc": {"click": v}, "test_cold_auc": {}, "wd": wd, "emb": emb,
                "schedule": schedule}

    monkeypatch.setattr(peer_search, "run_peer", fake_run_peer)
    first = search_peer(None, tmp_path, tmp_path / "runs", "mmoe", [1, 2], trials=5, epochs=5)
    assert len(calls) == 6 and len(list((tmp_path / "runs").glob("*.json"))) == 6
    saved = json.loads((tmp_path / "runs" / f"{run_name('mmoe', PEER_START, 1)}.json").read_text())
    assert saved["hparams"] == PEER_START and saved["wd"] == PEER_START["weight_decay"] and saved["emb"] == 16
    assert saved["schedule"] == "constant"
    kept = [json.loads(f.read_text()) for f in (tmp_path / "runs").glob("*.json")]
    assert all(r["schedule"] == r["hparams"]["schedule"] for r in kept)  # each run trains on its drawn schedule
    again = search_peer(None, tmp_path, tmp_path / "runs", "mmoe", [1, 2], trials=5, epochs=5)
    assert len(calls) == 6 and again == first


def test_a_failed_run_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(peer_search, "run_peer", lambda *a, **k: {"error": "exit 1: boom"})
    from rich.console import Console

    r = peer_run(None, tmp_path, tmp_path / "runs", "mmoe", PEER_START, 1, 5, Console(quiet=True))
    assert r == {"error": "exit 1: boom"} and not (tmp_path / "runs").exists()


def test_the_fields_a_peer_reads_reach_each_run_and_name_its_file(tmp_path):
    runs = FakeRuns()
    r = search_peer(None, tmp_path, tmp_path, "mmoe", [1], trials=2, epochs=5, runner=runs,
                    fields=["item_id", "user_id"])
    assert runs.fields == ["item_id", "user_id"] and r["fields"] == ["item_id", "user_id"]
    names = {run_name("mmoe", PEER_START, 1), run_name("mmoe", PEER_START, 1, ["item_id", "user_id"]),
             run_name("mmoe", PEER_START, 1, ["item_id"])}
    assert len(names) == 3  # runs on other columns are never reused for each other
    swapped = run_name("mmoe", PEER_START, 1, ["user_id", "item_id"])
    assert swapped == run_name("mmoe", PEER_START, 1, ["item_id", "user_id"])


def test_the_report_table_has_a_row_per_peer():
    report = {"tasks": ["click"], "seeds": [1, 2, 3], "trials": 4,
              "peers": [{"model": "dcn", "hparams": PEER_START, "test_auc": {"click": {"mean": 0.7, "std": 0.01}},
                         "test_cold_auc": {}}, {"model": "deepfm", "error": "exit 1: boom"}]}
    assert table(report).row_count == 2


def test_bench_peers_refuses_bad_input_before_writing(tmp_path, small_world):
    out = tmp_path / "peers"
    r = run_cli("bench", "peers", small_world, "--peer-python", tmp_path / "nope", "--out", out)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "--peer-python" in r.output, r.output
    r = run_cli("bench", "peers", small_world, "--peer-python", tmp_path / "nope", "--out", out, "--model", "dcn")
    assert r.exit_code == 2 and "--model dcn: expected one of mmoe, ple, esmm" in r.output, r.output
    r = run_cli("bench", "peers", tmp_path / "missing", "--peer-python", tmp_path / "nope", "--out", out)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()


def test_bench_peers_without_a_field_reads_every_other_row_field(tmp_path, small_world, monkeypatch):
    out = tmp_path / "peers"
    r = run_cli("bench", "peers", small_world, "--peer-python", tmp_path / "nope", "--out", out, "--without", "userid")
    assert r.exit_code == 2 and "--without userid: not a field of dataset" in r.output, r.output
    assert not out.exists()
    seen = {}

    def search(peer_python, data, out, model, *args, fields=None, **kwargs):
        seen[model] = fields
        out.mkdir(parents=True, exist_ok=True)
        return {"model": model, "error": "not run"}

    monkeypatch.setattr(peer_search, "peer_problem", lambda python: None)
    monkeypatch.setattr(peer_search, "search_peer", search)
    report = peer_search.run_peers(small_world, "py", out, trials=1, seeds=[1], models=["mmoe"], without=["user_id"])
    from rectune.data import open_dataset

    every = [f.name for f in open_dataset(small_world).schema.row_fields]
    assert "user_id" in every and seen["mmoe"] == [n for n in every if n != "user_id"] == report["fields"]
    peer_search.run_peers(small_world, "py", tmp_path / "all", trials=1, seeds=[1], models=["esmm"])
    assert seen["esmm"] is None  # all fields: the runs keep the names they had before --without existed


def test_a_decayed_run_is_named_by_its_schedule_and_a_constant_one_keeps_its_old_name():
    cosine = {**PEER_START, "schedule": "cosine"}
    assert run_name("mmoe", cosine, 1) == "mmoe-lr0.001-cosine-wd1e-05-do0-emb16-seed1"
    # the runs kept before the schedule was searched (constant) are still found by their names
    assert run_name("mmoe", PEER_START, 1) == "mmoe-lr0.001-wd1e-05-do0-emb16-seed1"
    old = {k: v for k, v in PEER_START.items() if k != "schedule"}
    assert run_name("mmoe", old, 1) == run_name("mmoe", PEER_START, 1)
