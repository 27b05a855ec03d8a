"""The benchmarks run end to end (marked: run with pytest -m bench)."""

import pytest

from tests.conftest import run_cli


@pytest.mark.bench
@pytest.mark.timeout(600)
def test_bench_augment_prints_the_ratio(small_world):
    r = run_cli("bench", "augment", small_world, "--repeat", 1, "--cpus", "1")
    assert r.exit_code == 0, r.output
    assert "vs in-process" in r.output and "ray 1cpu" in r.output


@pytest.mark.bench
@pytest.mark.timeout(900)
def test_bench_scale_prints_both_tables(small_world):
    r = run_cli("bench", "scale", small_world, "--epochs", 1, "--trials", 2)
    assert r.exit_code == 0, r.output
    assert "by Train workers" in r.output and "by trials at a time" in r.output
