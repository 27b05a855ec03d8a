"""``rectune bench train`` on the small synthetic world: the rectune sides give positive, finite
figures, and a missing peer python skips the torch-rechub side with a clear message."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from rectune.bench.train import peer_status, run, summarise

pytestmark = pytest.mark.timeout(300)


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
              ray_side=False, console=Console(file=out, width=200))
    text = out.getvalue()
    assert "torch-rechub side skipped" in text and "not found" in text and "make bench-peers" in text
    assert fig["peer_skipped"] and set(fig["sides"]) == {"plain"}
    _check_side(fig["sides"]["plain"])
    assert _finite_positive(fig["plain_peak_rss_mb"])
    assert fig["goals"] == {}  # nothing to compare with: no goal is claimed
    assert "rectune, plain loop" in text


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
