"""``rectune bench defaults``: rectune with no settings against the peer at its defaults, per task."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from rectune.bench.defaults import PEER, default_config, run
from rectune.errors import ConfigError

from .test_bench_train import FAKE_PEER

pytestmark = pytest.mark.timeout(300)


def test_defaults_are_rectune_with_no_settings_and_a_variant_changes_only_its_keys():
    assert default_config(2).changed() == {"train.seed": 2}
    assert default_config(0, {"optim.lr": 0.01}).changed() == {"optim.lr": 0.01}
    with pytest.raises(ConfigError, match="model.nrom"):
        run(["unused"], variants={"bad": {"model.nrom": "batch"}})


def test_every_side_per_task_and_its_difference_from_the_peer(small_world, tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PEER.format(python=sys.executable))  # test AUC click 0.7, conversion 0.8
    fake.chmod(0o755)
    out = io.StringIO()
    figs = run([small_world], seeds=1, peer_python=fake, variants={"slow": {"optim.lr": 1e-5, "train.epochs": 1}},
               console=Console(file=out, width=200))
    (fig,) = figs.values()
    sides = fig["sides"]
    assert set(sides) == {"defaults", "peer", "slow"}
    assert sides["peer"] == {"click": (0.7, 0.0), "conversion": (0.8, 0.0)}
    for t in ("click", "conversion"):
        assert fig["defaults_vs_peer"][t] == pytest.approx(sides["defaults"][t][0] - sides["peer"][t][0])
        assert sides["defaults"][t][0] != sides["slow"][t][0]  # the variant trained otherwise
    run_args = fig["runs"]["peer"][0]
    assert run_args["epoch_s"] == [1.5]
    text = out.getvalue()
    assert "torch-rechub MMoE + history (its defaults)" in text and "defaults >= peer on every task" in text
    assert PEER["lr"] == 1e-3 and PEER["emb"] == 16 and PEER["batch_size"] == 1024
