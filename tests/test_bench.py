"""The benchmarks run end to end (marked: run with pytest -m bench)."""

import re

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


def _row(output: str, label: str) -> list[str]:
    """The cells of the table row that starts with ``label``."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{output}")


def _positive(cell: str) -> float:
    value = float(cell.split()[0].rstrip("x").replace(",", ""))
    assert value > 0, cell
    return value


@pytest.mark.bench
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bench_scale_two_node_adds_a_row_beside_one_node(small_world, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps the table at the terminal's width
    r = run_cli("bench", "scale", small_world, "--epochs", 1, "--trials", 2, "--workers", "none",
                "--concurrency", "1,2", "--two-node")
    assert r.exit_code == 0, r.output
    assert "by Train workers" not in r.output
    for label in ("1", "2"):
        assert [_positive(c) for c in _row(r.output, label)[1:4]]
    row = _row(r.output, "2, on 2 nodes")
    assert [_positive(c) for c in row[1:4]]
    assert re.search(r"\d+\+\d+ CPUs", row[4]) and re.search(r"vs 2 at a time on 1 node: [\d.]+x", row[4]), row
    assert "Train workers by node:" in row[4], row


@pytest.mark.bench
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_scale_memory_rows_reports_peaks(small_world, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    r = run_cli("bench", "scale", small_world, "--workers", "none", "--concurrency", "none",
                "--memory-rows", "20000")
    assert r.exit_code == 0, r.output
    assert "peak Σ PSS MB" in r.output and "by trials at a time" not in r.output
    row = _row(r.output, "20,000")
    assert _positive(row[5]) >= _positive(row[6]) > 0, row  # Σ PSS over all processes >= Σ USS
    assert _positive(row[5]) > _positive(row[7]) > 0, row  # the sum >= its largest process
    assert [_positive(c) for c in row[2:4]], row
    assert row[-1] == "-", row  # no growth from a single size
