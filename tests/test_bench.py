"""The benchmarks run end to end (marked: run with pytest -m bench)."""

import pytest

from tests.conftest import run_cli


@pytest.mark.bench
@pytest.mark.timeout(600)
def test_bench_augment_prints_the_ratio(small_world):
    r = run_cli("bench", "augment", small_world, "--repeat", 1, "--cpus", "1")
    assert r.exit_code == 0, r.output
    assert "vs in-process" in r.output and "ray 1cpu" in r.output
