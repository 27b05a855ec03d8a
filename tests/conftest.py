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


POSTGRES_ENV = "RECTUNE_TEST_POSTGRES"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A SQLAlchemy URL of a PostgreSQL database that connects.

    With $RECTUNE_TEST_POSTGRES set (as CI sets it) the database must connect, or the test fails:
    a test CI means to run is never skipped quietly. Without it, the machine's server at
    127.0.0.1:5432 (database test) is tried, and the test skips where there is none."""
    import os

    import sqlalchemy

    given = os.environ.get(POSTGRES_ENV)
    why = ""
    for url in [given] if given else [f"postgresql+psycopg2://{u}@127.0.0.1:5432/test" for u in ("postgres", "root")]:
        try:
            with sqlalchemy.create_engine(url).connect():
                return url
        except Exception as exc:  # noqa: BLE001 - reported below
            why = f"{url}: {str(exc).splitlines()[0]}"
    if given:
        pytest.fail(f"${POSTGRES_ENV} is set but does not connect ({why})")
    pytest.skip(f"no PostgreSQL to run against ({why}); set ${POSTGRES_ENV} to a SQLAlchemy URL")
