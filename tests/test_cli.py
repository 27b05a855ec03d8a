"""The rectune command: every --help explains itself; errors are one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from rectune.cli import main
from tests.conftest import run_cli, shared_path


def _all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", [(), *_all_commands(main)], ids=lambda p: " ".join(p) or "rectune")
def test_every_command_has_help(path):
    r = run_cli(*path, "--help")
    assert r.exit_code == 0
    assert "Usage:" in r.output and len(r.output.splitlines()) > 4


def test_importers_are_listed_from_the_registry():
    from rectune.data.importers import IMPORTERS

    out = run_cli("data", "import", "--help").output
    for name in IMPORTERS.names():
        assert name in out
    assert set(IMPORTERS.names()) >= {"recbole", "rechorus", "aliccp", "aliexpress"}


def test_synth_describe_validate(tmp_path):
    out = tmp_path / "w"
    r = run_cli("data", "synth", "--out", out, "--users", 50, "--items", 40, "--rows", 2000, "--seed", 1)
    assert r.exit_code == 0, r.output
    r = run_cli("data", "describe", out, "--json")
    desc = json.loads(r.output)
    assert desc["splits"]["train"]["rows"] == 1600
    assert set(desc["cold_items"]) == {"test_rows_cold_share", "test_positives_cold_share", "items_cold_share"}
    assert desc["relations"]["per_relation"]["same_brand"] > 0
    r = run_cli("data", "describe", out)
    assert "conversion rate" in r.output and "cold items" in r.output
    assert run_cli("data", "validate", out).exit_code == 0
    # an existing --out is refused, and left as it was
    before = (out / "schema.json").read_text()
    r = run_cli("data", "synth", "--out", out, "--rows", 1000)
    assert r.exit_code == 2 and "already exists" in r.stderr
    assert (out / "schema.json").read_text() == before


def test_errors_are_one_line_and_exit_2(tmp_path):
    r = run_cli("data", "describe", tmp_path / "nowhere")
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and "nowhere: not a folder" in r.stderr
    r = run_cli("data", "import", "recbole", tmp_path, "--out", tmp_path / "o", "--task", "like=rating>>4")
    assert r.exit_code == 2 and "--task 'like=rating>>4'" in r.stderr
    assert not (tmp_path / "o").exists()


def test_import_through_the_cli(tmp_path):
    src = shared_path("data", "ml-100k")
    r = run_cli("data", "import", "recbole", src, "--out", tmp_path / "ml", "--task", "like=rating>=4",
                "--neg-ratio", 2, "--split", "time:0.7,0.15,0.15")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "ml" / "schema.json").read_text())
    assert meta["tasks"] == ["click", "like"]
    assert sum(meta["rows"].values()) == 100_000 * 3
    assert meta["provenance"]["options"]["split"] == "time:0.7,0.15,0.15"


def test_console_script_and_fast_help():
    """The installed entry point works, and --help imports neither torch nor ray."""
    code = ("import sys; from rectune.cli import main; "
            "sys.argv=['rectune','--help'];\ntry: main()\nexcept SystemExit: pass\n"
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import at --help'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "quickstart" in r.stdout


@pytest.mark.parametrize("module, heavy", [
    ("rectune.results.report", "ray"),  # the results commands read files and the study, not Ray
    ("rectune.train.progress", "torch"),  # the progress actor's process holds a dict
])
def test_light_modules_stay_light(module, heavy):
    code = f"import sys, {module}; assert {heavy!r} not in sys.modules, 'imports {heavy}'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_quickstart(tmp_path):
    """The main job: a world, its description, the quick campaign and its best trials."""
    r = run_cli("quickstart", "--dir", tmp_path / "qs", "--rows", 5000, "--trials", 2)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "qs" / "data" / "schema.json").is_file()
    assert "cold items" in r.output
    assert "best trials by valid/mean_auc (2 done, 0 errored)" in r.output
    campaigns = list((tmp_path / "qs" / "campaigns").iterdir())
    assert len(campaigns) == 1 and (campaigns[0] / "study.db").is_file()


@pytest.mark.slow
def test_quickstart_again_reuses_its_world(tmp_path):
    """A second quickstart in the same folder keeps the world and starts a new campaign. Slow (two
    campaigns): `pytest -m slow`."""
    for trials in (1, 1):
        r = run_cli("quickstart", "--dir", tmp_path / "qs", "--rows", 5000, "--trials", trials)
        assert r.exit_code == 0, r.output
    assert "reusing" in r.output
    assert len(list((tmp_path / "qs" / "campaigns").iterdir())) == 2


def test_bench_synth_prints_its_figure():
    r = run_cli("bench", "synth", "--rows", 5000, "--users", 100, "--items", 100)
    assert r.exit_code == 0, r.output
    assert "rows/s" in r.output and "5,000 rows" in r.output


def test_augment_preview_and_bad_keys(small_world):
    r = run_cli("augment", "preview", small_world, "--set", "augment.mask.prob=0.5", "--rows", 2)
    assert r.exit_code == 0, r.output
    assert "augmenters on: mask" in r.output and "item_id" in r.output
    r = run_cli("augment", "preview", small_world, "--set", "augment.mask.prob=1.5")
    assert r.exit_code == 2 and "augment.mask.prob: 1.5 is out of range" in r.stderr
    r = run_cli("augment", "preview", small_world, "--set", "augment.mask.prb=0.5")
    assert r.exit_code == 2 and "did you mean 'augment.mask.prob'" in r.stderr
    r = run_cli("augment", "preview", small_world, "--set", "augment.mask.prob")
    assert r.exit_code == 2 and "expected KEY=VALUE" in r.stderr
    assert "augment.neighbor.rate" in run_cli("augment", "keys").output


def test_an_unexpected_error_is_one_line_naming_the_command_and_debug_shows_the_traceback(monkeypatch, tmp_path):
    import rectune.data.describe as describe

    def broken(*args, **kwargs):
        raise ValueError("something broke\nand this line is not shown")

    monkeypatch.setattr(describe, "describe", broken)
    r = run_cli("data", "describe", tmp_path / "ds", "--json")
    assert r.exit_code == 1
    assert r.stderr == (f"rectune: error: rectune data describe {tmp_path / 'ds'} --json: unexpected ValueError: "
                        f"something broke (rerun with --debug for the traceback)\n")
    with pytest.raises(ValueError, match="something broke"):
        run_cli("--debug", "data", "describe", tmp_path / "ds")
