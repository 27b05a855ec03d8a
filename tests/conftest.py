"""Shared fixtures. Tests that read the real data in ../shared skip cleanly where it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips the calling test when it is not there."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent (../shared is only beside the checkout in development and CI)")
    return p


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """A small synthetic prepared dataset, written once per test session. Do not modify it."""
    from rectune.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("world") / "synth"
    generate(SynthConfig(users=300, items=200, rows=20_000, seed=7)).write(out)
    return out


def run_cli(*args: str):
    """Run the rectune CLI in-process; returns click's Result (exit_code, output, stderr)."""
    from click.testing import CliRunner

    from rectune.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
