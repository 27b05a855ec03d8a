"""``rectune bench train`` on the small synthetic world: the rectune sides give positive, finite
figures, and a missing peer python skips the torch-rechub side with a clear message. Each
torch-rechub peer model runs once where the peer environment (``make bench-peers``) exists."""

from __future__ import annotations

import io
import json
import math
import os
import sys
from pathlib import Path

import pytest
from rich.console import Console

from rectune.bench.train import peer_status, run, run_peer, summarise
from rectune.errors import ConfigError

pytestmark = pytest.mark.timeout(300)

PEER_PYTHON = Path(__file__).resolve().parents[2] / ".venv-peers" / "bin" / "python"


def _finite_positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def _check_side(side: dict) -> None:
    assert _finite_positive(side["epoch_s"]) and _finite_positive(side["samples_per_s"])
    assert side["test_auc"]
    for mean, std in side["test_auc"].values():
        assert 0.0 < mean <= 1.0 and math.isfinite(std)


def test_plain_side_and_missing_peer(small_world, tmp_path):
    out = io.StringIO()
    fig = run(small_world, seeds=1, epochs=1, batch_size=512, peer_python=tmp_path / "no-such-python",
              ray_side=False, console=Console(file=out, width=200),
              variants={"model.features=[item_id,hist_items]": {"model.features": ["item_id", "hist_items"]}})
    text = out.getvalue()
    assert "torch-rechub side skipped" in text and "not found" in text and "make bench-peers" in text
    assert fig["peer_skipped"] and set(fig["sides"]) == {"plain", "variant:model.features=[item_id,hist_items]"}
    # the label keeps its brackets in the log line and both tables (rich would read them as markup)
    assert text.count("variant:model.features=[item_id,hist_items]") == 3
    _check_side(fig["sides"]["plain"])
    assert _finite_positive(fig["plain_peak_rss_mb"])
    assert fig["goals"] == {}  # nothing to compare with: no goal is claimed
    assert "rectune, plain loop" in text and "train rows), mmoe, emb 16" in text  # the architecture that ran


def test_a_bad_variant_key_is_refused_before_any_run(small_world):
    out = io.StringIO()
    with pytest.raises(ConfigError, match="unknown config key 'pos:model.history_position'"):
        run(small_world, seeds=1, epochs=1, ray_side=False, console=Console(file=out, width=200),
            variants={"pos:model.history_position=true": {"pos:model.history_position": True}})
    assert out.getvalue() == ""  # refused before anything was trained or printed


def test_no_peer_python_is_a_message_not_a_crash():
    msg = peer_status(None)
    assert "no peer python given" in msg and "--peer-python" in msg


def test_a_failed_peer_run_is_reported_and_left_out():
    runs = [{"error": "exit 1: ModuleNotFoundError: No module named 'torch_rechub'"}]
    assert summarise(runs, ["click"], 100) == {"runs": runs}


@pytest.mark.slow
def test_ray_side(small_world, tmp_path):
    out = io.StringIO()
    fig = run(small_world, seeds=1, epochs=2, batch_size=512, console=Console(file=out, width=200))
    ray = fig["sides"]["ray"]
    _check_side(ray)
    assert _finite_positive(ray["worker_peak_rss_mb"]) and ray["setup_s"] > 0
    assert _finite_positive(fig["goals"]["ray_vs_plain_epoch"]["ratio"])
    assert "epoch time Ray/plain" in out.getvalue()


FAKE_PEER = """#!{python}
import json, sys
argv = sys.argv[1:]
print("a line that is not JSON")
print(json.dumps({{"argv": argv, "model": argv[argv.index("--model") + 1], "epochs": [{{"train_s": 1.5}}],
                  "best_epoch": 0, "test": {{"click_auc": 0.7, "conversion_auc": 0.8}},
                  "test_cold": {{"click_auc": 0.6}}, "valid": {{"click_auc": 0.71, "conversion_auc": 0.81}},
                  "valid_mean_auc": 0.76, "peak_rss_mb": 10.0, "threads": 1, "params": 5, "versions": {{}}}}))
"""


def test_run_peer_passes_the_model_and_extra_options_and_maps_the_figures(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PEER.format(python=sys.executable))
    fake.chmod(0o755)
    r = run_peer(fake, tmp_path / "data", 3, 2, 256, 8, 0.01, True, 1, model="ple", extra=["--dropout", "0.1"])
    assert r["model"] == "ple" and r["best_epoch"] == 0 and r["epoch_s"] == [1.5]
    assert r["test_auc"] == {"click": 0.7, "conversion": 0.8} and r["test_cold_auc"] == {"click": 0.6}
    assert r["valid_auc"] == {"click": 0.71, "conversion": 0.81} and r["valid_mean_auc"] == 0.76
    # the default model is today's MMoE, with today's options
    r = run_peer(fake, tmp_path / "data", 0, 5, 1024, 16, 0.001, False, 2)
    assert r["model"] == "mmoe"


def test_run_peer_raises_the_peers_niceness_when_asked(tmp_path):
    fake = tmp_path / "python"
    seen = tmp_path / "nice.txt"
    fake.write_text(f"#!{sys.executable}\nimport os\nopen({str(seen)!r}, 'a').write(str(os.nice(0)) + ' ')\n"
                    + FAKE_PEER.format(python=sys.executable).split("\n", 1)[1])
    fake.chmod(0o755)
    base = os.nice(0)
    assert "error" not in run_peer(fake, tmp_path, 0, 1, 512, 8, 1e-3, True, 1)
    assert "error" not in run_peer(fake, tmp_path, 0, 1, 512, 8, 1e-3, True, 1, nice=15)
    assert seen.read_text().split() == [str(base), str(min(base + 15, 19))]


def test_run_peer_reports_a_failing_peer(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint('bad options', file=sys.stderr)\nsys.exit(2)\n")
    fake.chmod(0o755)
    r = run_peer(fake, tmp_path, 0, 1, 512, 8, 1e-3, True, 1, model="dcn")
    assert r == {"error": "exit 2: bad options"}


@pytest.fixture(scope="module")
def click_only_world(small_world, tmp_path_factory) -> Path:
    """The small world as a single-task dataset: task click only (conversion dropped)."""
    import pyarrow.parquet as pq

    out = tmp_path_factory.mktemp("world-click") / "synth"
    out.mkdir()
    schema = json.loads((small_world / "schema.json").read_text())
    schema["tasks"] = ["click"]
    schema.pop("task_parents", None)
    (out / "schema.json").write_text(json.dumps(schema))
    for split in ("train", "valid", "test"):
        table = pq.read_table(small_world / f"{split}.parquet")
        pq.write_table(table.drop_columns(["conversion"]), out / f"{split}.parquet")
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", ["mmoe", "ple", "esmm", "shared_bottom", "deepfm", "dcn"])
def test_peer_model(model, small_world, click_only_world):
    if not PEER_PYTHON.exists():
        pytest.skip(f"{PEER_PYTHON} is absent (make bench-peers makes it)")
    single = model in ("deepfm", "dcn")
    data, tasks = (click_only_world, ["click"]) if single else (small_world, ["click", "conversion"])
    r = run_peer(PEER_PYTHON, data, 0, 1, 1024, 8, 3e-3, True, 1, timeout=110, model=model,
                 extra=["--train-rows", "12000"])
    assert "error" not in r, r["error"]
    assert r["model"] == model and r["best_epoch"] == 0 and len(r["epoch_s"]) == 1
    for key in ("test_auc", "valid_auc", "test_cold_auc"):
        assert set(r[key]) == set(tasks), (key, r[key])
        for v in r[key].values():
            assert math.isfinite(v) and 0.0 < v < 1.0
    assert math.isfinite(r["valid_mean_auc"])
    assert r["valid_mean_auc"] == pytest.approx(sum(r["valid_auc"].values()) / len(tasks))


@pytest.mark.timeout(120)
def test_peer_schedule_decays_the_learning_rate_per_epoch(small_world):
    if not PEER_PYTHON.exists():
        pytest.skip(f"{PEER_PYTHON} is absent (make bench-peers makes it)")
    r = run_peer(PEER_PYTHON, small_world, 0, 2, 1024, 8, 3e-3, True, 1, timeout=110, model="esmm",
                 extra=["--train-rows", "12000", "--schedule", "cosine"])
    assert "error" not in r, r["error"]
    assert r["epoch_lr"] == pytest.approx([3e-3, 1.5e-3])
