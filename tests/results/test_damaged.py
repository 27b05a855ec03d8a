"""`rectune results` on damaged campaign folders (no Ray: the folders are written by hand): one line
naming the damaged file and exit code 2 for a campaign; `list` lists the others and marks the damaged
one with its reason; nothing in any campaign folder changes."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml

from rectune.tune.space import from_mapping

from ..conftest import run_cli
from ..tune.spaces import TINY


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A finished campaign as `rectune tune` leaves it, without Tune's folders: space.yaml and a SQLite
    study (named "study") with three completed trials; each test copies it."""
    folder = tmp_path_factory.mktemp("template")
    space = from_mapping(TINY, "space.yaml")
    (folder / "space.yaml").write_text(yaml.safe_dump(space.to_dict(), sort_keys=False))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="study", storage=f"sqlite:///{folder / 'study.db'}",
                                direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial) -> float:
        space(trial)
        return 0.6 + trial.params["optim.lr"]

    study.optimize(objective, n_trials=3)
    return folder


def make_campaign(template: Path, storage: Path, name: str) -> Path:
    folder = storage / name
    shutil.copytree(template, folder)
    url = f"sqlite:///{folder / 'study.db'}"
    meta = {"name": name, "data": "/nowhere/data", "created": "2024-01-01T10:00:00", "ended": "2024-01-01T11:00:00",
            "status": "finished", "trials_target": 4, "study_db": url, "study_db_full": url, "study_name": "study"}
    (folder / "campaign.json").write_text(json.dumps(meta))
    return folder


def _zeroed(f: Path) -> None:
    f.write_bytes(bytes(f.stat().st_size))


def _other_sqlite(f: Path) -> None:
    """A SQLite database, but not Optuna's."""
    f.unlink()
    with sqlite3.connect(f) as con:
        con.execute("CREATE TABLE notes (text)")
    con.close()


def _meta(**changes):
    def damage(f: Path) -> None:
        f.write_text(json.dumps({**json.loads(f.read_text()), **changes}))
    return damage


# each: (the file damaged, how, what the one line says after the file's path)
DAMAGES = {
    "study_empty": ("study.db", lambda f: f.write_bytes(b""), "not a readable study database (the file is empty)"),
    "study_zeroed": ("study.db", _zeroed, "not a readable study database (file is not a database)"),
    "study_not_optuna": ("study.db", _other_sqlite,
                         "not a readable study database (OperationalError: no such table: version_info)"),
    "space_invalid_yaml": ("space.yaml", lambda f: f.write_text("objective: [valid/mean_auc\nsearch: {}\n"),
                           "not valid YAML at line 2; the campaign folder is damaged"),
    "space_not_a_mapping": ("space.yaml", lambda f: f.write_text("- objective\n- search\n"),
                            "expected a mapping with objective, budget"),
    "space_not_a_space": ("space.yaml", lambda f: f.write_text("objective: valid/mean_auc\nsearch: {}\n"),
                          "search: expected at least one key to search"),
    "space_infinite_epochs": ("space.yaml", lambda f: f.write_text(
        f.read_text().replace("train.epochs: 2", "train.epochs: .inf")),
        "fixed: train.epochs: inf is not a finite number"),
    "space_when_not_a_key": ("space.yaml", lambda f: f.write_text(
        f.read_text().replace("augment.mask.prob:\n", "augment.mask.prob:\n    when: {3: 1}\n")),
        "search: augment.mask.prob: when: 3: expected a dotted config key"),
    "meta_array": ("campaign.json", lambda f: f.write_text("[]"),
                   "expected a JSON object, got an array; the campaign folder is damaged"),
    "meta_number": ("campaign.json", lambda f: f.write_text("3"),
                    "expected a JSON object, got a number; the campaign folder is damaged"),
    "meta_not_utf8": ("campaign.json", lambda f: f.write_bytes(b"\xff\xfe{\x00"),
                      "not valid JSON; the campaign folder is damaged"),
    "meta_driver": ("campaign.json", _meta(status="running", driver="host-1"),
                    "driver: expected an object, got \"host-1\"; the campaign folder is damaged"),
    "meta_created": ("campaign.json", _meta(created=3), "created: expected a time, got 3"),
    "meta_study_db": ("campaign.json", _meta(study_db_full=["sqlite:///x"]), "study_db_full: expected a database URL"),
}


def damaged(template: Path, storage: Path, case: str) -> tuple[Path, str]:
    """Campaign ``case`` in ``storage``, damaged; the line the results commands should print."""
    file, damage, says = DAMAGES[case]
    folder = make_campaign(template, storage, case.replace("_", "-"))
    damage(folder / file)
    return folder, f"rectune: error: {folder / file}: {says}"


def fingerprint(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("rectune: error: "), r.output
    return lines[0]


@pytest.mark.parametrize("case", list(DAMAGES))
def test_a_damaged_campaign_is_one_line_naming_the_file(case, template, tmp_path):
    storage = tmp_path / "campaigns"
    folder, expected = damaged(template, storage, case)
    before = fingerprint(storage)
    for verb in (["show", folder.name], ["best", folder.name, "--out", tmp_path / "best.yaml"],
                 ["export", folder.name, "--out", tmp_path / "trials.csv"]):
        line = one_line(run_cli("results", *verb, "--storage", storage))
        assert line.startswith(expected), (verb, line)
    assert fingerprint(storage) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaigns"]


def test_list_shows_the_others_and_each_damaged_one_with_its_reason(template, tmp_path):
    storage = tmp_path / "campaigns"
    for name in ("good-1", "good-2"):
        make_campaign(template, storage, name)
    expected = {folder.name: line[len("rectune: error: "):] for folder, line in
                (damaged(template, storage, case) for case in DAMAGES)}
    before = fingerprint(storage)
    r = run_cli("results", "list", "--storage", storage, "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert sorted(rows) == sorted([*expected, "good-1", "good-2"])
    for name in ("good-1", "good-2"):
        assert rows[name]["status"] == "finished" and rows[name]["done"] == 3
    for name, error in expected.items():
        assert rows[name]["status"] == "unreadable" and rows[name]["error"].startswith(error), rows[name]
    r = run_cli("results", "list", "--storage", storage)
    assert r.exit_code == 0 and r.stderr == "", r.output
    table = " ".join(r.stdout.split())
    assert "good-1 │ finished" in table and "space-invalid-yaml │ unreadable" in table
    assert "space.yaml: not valid YAML at line 2" in table  # the reason, without the folder the row names
    assert fingerprint(storage) == before


def test_damaged_tune_trial_files_do_not_stop_show(template, tmp_path):
    """Tune's trial folders add metrics to the study's trials; a damaged one adds nothing, and the
    study's trials are still shown."""
    storage = tmp_path / "campaigns"
    folder = make_campaign(template, storage, "c1")
    trial = folder / "tune" / "trial_driver_abc12_00000_0_x_2024-01-01"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text("[1, 2]")
    (trial / "result.json").write_bytes(b'{"epoch": "one", "trial_id": "abc12"}\n{"epoch": 0, "trial_id": "abc12"}\n'
                                        b'{"epoch": 1, "trial_id": "abc12", "valid/\xff": 1}\n')
    (trial / "error.txt").write_bytes(b"Traceback\n\xff\xfe broken\n")
    r = run_cli("results", "show", "c1", "--storage", storage, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert len(data["best"]) == 3
    assert [(t["trial_id"], t["params"]) for t in data["errored"]] == [("abc12", {})]
