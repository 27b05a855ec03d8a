"""`rectune results`: queries of a real campaign, while it runs and after, that never change it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from rectune.results import evaluate, open_campaign
from rectune.results.evaluate import baseline_config, lift
from rectune.results.store import _history

from ..conftest import run_cli
from ..tune.spaces import write_space

NAME = "r1"


def _results_at_once(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Several `rectune results` commands started together (separate processes), each waited for."""
    procs = [subprocess.Popen([sys.executable, "-m", "rectune.cli", "results", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in commands]
    done = []
    for args, p in zip(commands, procs):
        out, err = p.communicate(timeout=180)
        done.append(subprocess.CompletedProcess(args, p.returncode, out, err))
    return done


def _complete(url: str) -> list:
    try:
        trials = optuna.load_study(study_name=NAME, storage=url).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - the study is being created
        return []
    return [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]


@pytest.fixture(scope="module")
def campaign(small_world, tmp_path_factory):
    """A 4-trial campaign run by `rectune tune` in a subprocess; while it runs, the results commands
    read it (what they saw is kept for the tests); then it is left to finish."""
    tmp = tmp_path_factory.mktemp("results")
    # one trial at a time: after the first completes, three remain, so the reads fall inside the campaign
    space = write_space(tmp / "space.yaml", budget={"trials": 4, "concurrency": 1})
    storage = tmp / "campaigns"
    url = f"sqlite:///{storage / NAME / 'study.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "rectune.cli", "tune", "--data", str(small_world), "--space",
                             str(space), "--name", NAME, "--storage", str(storage)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not _complete(url):
            time.sleep(0.5)
        assert proc.poll() is None, "the campaign ended before a read: " + proc.stdout.read()
        for _ in range(2):  # reads during the campaign, each a separate process, the three at once
            running = proc.poll() is None
            listed, shown, exported = _results_at_once(
                ("list", "--storage", str(storage), "--json"), ("show", NAME, "--storage", str(storage), "--json"),
                ("export", NAME, "--storage", str(storage), "--out", str(tmp / "during.csv")))
            # running: the campaign ran from before the reads started until after they ended
            seen.append({"list": listed, "show": shown, "export": exported,
                         "running": running and proc.poll() is None, "complete_in_study": len(_complete(url))})
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    return {"storage": storage, "url": url, "space": space, "seen": seen, "tmp": tmp, "data": small_world}


def test_reads_while_the_campaign_runs(campaign):
    seen = campaign["seen"]
    assert seen[0]["running"], "the campaign had finished before the first read"
    for s in seen:
        for cmd in ("list", "show", "export"):
            assert s[cmd].returncode == 0, (cmd, s[cmd].stderr)
    first = json.loads(seen[0]["show"].stdout)
    assert first["campaign"]["status"] == "running"
    assert first["campaign"]["done"] >= 1
    assert first["campaign"]["done"] <= seen[0]["complete_in_study"]
    # and the campaign it read finished with every trial once in the study
    assert len(_complete(campaign["url"])) == 4


def _fingerprint(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def test_every_query_leaves_the_campaign_untouched(campaign, tmp_path):
    storage = campaign["storage"]
    folder = storage / NAME
    before = _fingerprint(folder)
    s = str(storage)
    for args in (["list", "--storage", s], ["show", NAME, "--storage", s, "--top", "2"],
                 ["best", NAME, "--storage", s, "--out", str(tmp_path / "best.yaml")],
                 ["export", NAME, "--storage", s, "--out", str(tmp_path / "t.parquet")],
                 ["importance", NAME, "--storage", s], ["plot", NAME, "--storage", s, "--out", str(tmp_path / "p")]):
        r = run_cli("results", *args)
        assert r.exit_code == 0, (args, r.output)
    assert _fingerprint(folder) == before
    assert sorted(p.name for p in storage.iterdir()) == [NAME]


def test_show_and_list_agree_with_the_study(campaign):
    study = {t.number: t for t in _complete(campaign["url"])}
    c = open_campaign(NAME, str(campaign["storage"]))
    assert c.status == "finished" and c.count("complete") == 4
    data = json.loads(run_cli("results", "show", NAME, "--storage", campaign["storage"], "--json", "--top", "10").output)
    values = [r["valid/mean_auc"] for r in data["best"]]
    assert values == sorted((t.value for t in study.values()), reverse=True)
    for r in data["best"]:
        assert r["params"] == study[r["trial"]].params
        assert r["valid/mean_auc"] == study[r["trial"]].value
        # Tune's metrics joined by trial id: the best epoch's valid AUC is the study's value
        assert r["best"]["valid/mean_auc"] == pytest.approx(r["valid/mean_auc"])
        assert (campaign["storage"] / NAME / "train" / f"train-{r['trial_id']}").is_dir()
        assert r["epochs"] in (1, 2) and "test/click_auc" in r["best"]
    assert data["errored"] == []
    listed = json.loads(run_cli("results", "list", "--storage", campaign["storage"], "--json").output)
    assert [(x["name"], x["status"], x["done"], x["errored"]) for x in listed] == [(NAME, "finished", 4, 0)]
    assert listed[0]["best"] == values[0] and listed[0]["duration_s"] > 0


def test_best_writes_the_config_rectune_train_takes(campaign, tmp_path):
    from rectune.cli import _run_config

    out = tmp_path / "best.yaml"
    r = run_cli("results", "best", NAME, "--storage", campaign["storage"], "--out", out)
    assert r.exit_code == 0, r.output
    c = open_campaign(NAME, str(campaign["storage"]))
    best = c.best_trial()
    cfg = _run_config(out, ())  # what `rectune train --config best.yaml` builds
    assert cfg.to_dict() == c.config_of(best).to_dict()
    for k, v in best.params.items():
        assert cfg[k] == v
    assert cfg["train.epochs"] == 2 and cfg["model.emb_dim"] == 8  # the space's fixed keys too


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_export_one_row_per_trial(campaign, tmp_path, suffix):
    out = tmp_path / f"trials{suffix}"
    r = run_cli("results", "export", NAME, "--storage", campaign["storage"], "--out", out)
    assert r.exit_code == 0, r.output
    df = pd.read_json(out) if suffix == ".json" else pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    study = {t.number: t.value for t in _complete(campaign["url"])}
    assert len(df) == 4 and set(df["trial"]) == set(study)
    for _, row in df.iterrows():
        assert row["objective/valid/mean_auc"] == pytest.approx(study[row["trial"]])
        assert row["best/valid/mean_auc"] == pytest.approx(row["objective/valid/mean_auc"])
        assert 0 < row["final/test/click_auc"] < 1
    for key in ("optim.lr", "augment.mask.prob", "model.mtl", "model.mtl.experts"):
        assert key in df.columns
    # a trial that was not MMoE has no experts: the cell is empty, not a default
    assert df.loc[df["model.mtl"] == "shared_bottom", "model.mtl.experts"].isna().all()


def test_importance_over_the_searched_keys(campaign):
    r = run_cli("results", "importance", NAME, "--storage", campaign["storage"], "--json")
    assert r.exit_code == 0, r.output
    (imp,) = json.loads(r.output)
    assert imp["trials"] == 4 and imp["objective"] == "valid/mean_auc"
    assert {"optim.lr", "augment.mask.prob"} <= set(imp["importances"])
    assert sum(imp["importances"].values()) == pytest.approx(1.0)
    searched = {"optim.lr", "augment.mask.prob", "model.mtl", "model.mtl.experts"}
    assert set(imp["importances"]) | set(imp["branches"]) | set(imp["not_assessed"]) == searched


def test_plot_writes_pngs_and_one_html_page(campaign, tmp_path):
    out = tmp_path / "plots"
    r = run_cli("results", "plot", NAME, "--storage", campaign["storage"], "--out", out)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["curves.png", "history.png", "importance.png", "parallel.png", "report.html"]
    for p in out.glob("*.png"):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, p
    html = (out / "report.html").read_text()
    assert html.count("plotly.js") >= 1 and f"Campaign {NAME}" in html and "Learning curves" in html


def test_evaluate_retrains_best_and_baseline(campaign, tmp_path):
    c = open_campaign(NAME, str(campaign["storage"]))
    base = baseline_config(c)
    assert base.augment().enabled() == [] and base["model.fusion"] == "concat" and base["loss.weighting"] == "fixed"
    assert base["train.epochs"] == 2  # the campaign's fixed settings stay
    report = evaluate(c, top=1, seeds=1, out=tmp_path / "eval")
    labels = [r["label"] for r in report["rows"]]
    assert labels == ["baseline", "peer-equivalent", f"trial-{c.best_trial().number}"]
    best = report["rows"][2]["metrics"]["test/click_auc"]
    assert 0.5 < best["mean"] < 1 and best["lift"]["seeds"] == 1 and best["lift"]["ci95"] is None
    assert best["lift"]["mean"] == pytest.approx(best["mean"] - report["rows"][0]["metrics"]["test/click_auc"]["mean"])
    # the second reference: the peer-equivalent start point, the campaign's second trial, as it ran there
    peer = report["rows"][1]
    assert peer["config"] == c.config_of(c.trial(1)).changed() and peer["config"]["optim.lr"] == 1e-3
    assert best["lift_peer"]["mean"] == pytest.approx(best["mean"] - peer["metrics"]["test/click_auc"]["mean"])
    assert "lift_peer" not in peer["metrics"]["test/click_auc"]
    # --top 1: the pick is the campaign's best; each row carries its mean valid objective (the pick's criterion)
    assert report["pick"]["label"] == labels[2] and report["objective"] == "valid/mean_auc"
    assert all(0.5 < r["objective"] < 1 for r in report["rows"])
    assert report["seeds"] == [c.space.base()["train.seed"] + 1]
    saved = json.loads((tmp_path / "eval" / "evaluate.json").read_text())
    assert saved["rows"][2]["metrics"]["test/click_auc"]["mean"] == best["mean"]
    # a second evaluation reuses the finished runs (no training)
    again = evaluate(c, top=1, seeds=1, out=tmp_path / "eval")
    assert json.dumps(again["rows"], default=str) == json.dumps(report["rows"], default=str)  # std is NaN at 1 seed


def test_lift_interval_is_the_paired_t_interval():
    xs, base = [0.71, 0.73, 0.72], [0.70, 0.70, 0.71]
    out = lift(xs, base)
    d = [0.01, 0.03, 0.01]
    m = sum(d) / 3
    sd = (sum((x - m) ** 2 for x in d) / 2) ** 0.5
    half = 4.302652729911275 * sd / 3 ** 0.5  # t(0.975, 2)
    assert out["mean"] == pytest.approx(m)
    assert out["ci95"] == pytest.approx([m - half, m + half])


def test_history_reads_a_half_written_result_file_and_counts_a_retried_epoch_once():
    rows = [{"epoch": 0, "v": 1}, {"epoch": 1, "v": 2}, {"epoch": 1, "v": 3}]
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"epoch": 2, "v'
    assert _history(text) == [{"epoch": 0, "v": 1}, {"epoch": 1, "v": 3}]


def _bad(args, message):
    r = run_cli("results", *args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln]
    assert len(lines) == 1 and message in lines[0], r.output


def test_bad_input_is_one_line_and_exit_2(campaign, tmp_path):
    s = str(campaign["storage"])
    _bad(["show", "nope", "--storage", s], "campaign 'nope': not found in")
    _bad(["list", "--storage", str(tmp_path / "none")], "no such folder")
    (tmp_path / "empty").mkdir()
    _bad(["list", "--storage", str(tmp_path / "empty")], "holds no campaign")
    _bad(["export", NAME, "--storage", s, "--out", str(tmp_path / "t.xlsx")], "expected a file ending in")
    assert not (tmp_path / "t.xlsx").exists()


def test_storage_path_that_is_not_a_campaign(small_world):
    r = run_cli("results", "show", small_world.name, "--storage", small_world.parent)
    assert r.exit_code == 2 and "not a campaign (no campaign.json)" in r.output


def test_an_empty_campaign_and_a_truncated_study(campaign, tmp_path):
    """A campaign whose study holds no trial yet, and one whose study file was cut short."""
    storage = tmp_path / "campaigns"
    empty = storage / "empty"
    empty.mkdir(parents=True)
    meta = json.loads((campaign["storage"] / NAME / "campaign.json").read_text())
    shutil.copy(campaign["storage"] / NAME / "space.yaml", empty / "space.yaml")
    url = f"sqlite:///{empty / 'study.db'}"
    optuna.create_study(study_name="empty", storage=url, direction="maximize")
    (empty / "campaign.json").write_text(json.dumps({**meta, "name": "empty", "study_name": "empty",
                                                     "status": "finished", "study_db_full": url}))
    for cmd in (["show", "empty"], ["best", "empty", "--out", str(tmp_path / "b.yaml")],
                ["importance", "empty"], ["plot", "empty", "--out", str(tmp_path / "p")]):
        r = run_cli("results", *cmd, "--storage", storage)
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert any(m in r.output for m in ("no trials yet", "no completed trial", "at least 2 completed")), r.output
    assert not (tmp_path / "b.yaml").exists() and not (tmp_path / "p").exists()
    r = run_cli("bench", "mission", "empty", "--storage", storage, "--out", tmp_path / "m")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "no completed trial" in r.output and not (tmp_path / "m").exists(), r.output

    cut = storage / "cut"
    shutil.copytree(campaign["storage"] / NAME, cut, ignore=shutil.ignore_patterns("train", "tune"))
    db = cut / "study.db"
    db.write_bytes(db.read_bytes()[:1000])
    meta2 = {**meta, "name": "cut", "study_db_full": f"sqlite:///{db}"}
    (cut / "campaign.json").write_text(json.dumps(meta2))
    before = db.read_bytes()
    r = run_cli("results", "show", NAME, "--storage", storage)
    assert r.exit_code == 2 and "not found" in r.output
    r = run_cli("results", "show", "cut", "--storage", storage)
    assert r.exit_code == 2 and "not a readable study database" in r.output, r.output
    assert db.read_bytes() == before
    listed = json.loads(run_cli("results", "list", "--storage", storage, "--json").output)
    assert {x["name"]: x["status"] for x in listed} == {"cut": "unreadable", "empty": "finished"}


def test_an_old_study_without_tune_ids_is_joined_by_parameters(campaign, tmp_path):
    """Campaigns from before the searcher wrote `tune_trial_id` still join study and Tune trials."""
    storage = tmp_path / "campaigns"
    shutil.copytree(campaign["storage"] / NAME, storage / NAME)
    import sqlite3

    con = sqlite3.connect(storage / NAME / "study.db")
    con.execute("DELETE FROM trial_user_attributes WHERE key = 'tune_trial_id'")
    con.commit()
    con.close()
    meta = json.loads((storage / NAME / "campaign.json").read_text())
    meta["study_db_full"] = f"sqlite:///{storage / NAME / 'study.db'}"
    (storage / NAME / "campaign.json").write_text(json.dumps(meta))
    old = open_campaign(NAME, str(storage))
    new = open_campaign(NAME, str(campaign["storage"]))
    assert [(t.number, t.trial_id) for t in old.trials] == [(t.number, t.trial_id) for t in new.trials]
    assert all(t.trial_id for t in old.trials)


def test_a_killed_driver_reads_as_interrupted(campaign, tmp_path):
    storage = tmp_path / "campaigns"
    shutil.copytree(campaign["storage"] / NAME, storage / NAME)
    meta = json.loads((storage / NAME / "campaign.json").read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    meta.update({"status": "running", "driver": {"host": socket.gethostname(), "pid": dead.pid}})
    meta["study_db_full"] = f"sqlite:///{storage / NAME / 'study.db'}"
    (storage / NAME / "campaign.json").write_text(json.dumps(meta))
    assert open_campaign(NAME, str(storage)).status == "interrupted"
    meta["driver"]["pid"] = os.getpid()
    (storage / NAME / "campaign.json").write_text(json.dumps(meta))
    assert open_campaign(NAME, str(storage)).status == "running"


def test_the_study_opens_in_optuna_dashboard(campaign, tmp_path):
    """The README's command: optuna-dashboard on a copy of the study, bound to 127.0.0.1."""
    import socket as sk
    import urllib.request

    exe = Path(sys.executable).with_name("optuna-dashboard")
    if not exe.exists():
        pytest.skip("optuna-dashboard is not installed (pip install -e '.[dashboard]')")
    copy = tmp_path / "study.db"
    from rectune.results.store import snapshot_sqlite

    snapshot_sqlite(campaign["storage"] / NAME / "study.db", copy)
    with sk.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(exe), f"sqlite:///{copy}", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = None
        for _ in range(60):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None, "optuna-dashboard did not answer within 30 s"
        assert [s["study_name"] for s in body["study_summaries"]] == [NAME]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_resume_with_a_truncated_study_is_refused_and_overwrites_nothing(campaign, tmp_path):
    storage = tmp_path / "campaigns"
    shutil.copytree(campaign["storage"] / NAME, storage / NAME)
    db = storage / NAME / "study.db"
    db.write_bytes(db.read_bytes()[:2048])
    meta = json.loads((storage / NAME / "campaign.json").read_text())
    meta["study_db_full"] = f"sqlite:///{db}"
    (storage / NAME / "campaign.json").write_text(json.dumps(meta))
    before = _fingerprint(storage / NAME)
    r = subprocess.run([sys.executable, "-m", "rectune.cli", "tune", "--data", str(campaign["data"]), "--space",
                        str(campaign["space"]), "--name", NAME, "--storage", str(storage), "--resume"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a usable study database" in lines[0], r.stderr
    assert _fingerprint(storage / NAME) == before
