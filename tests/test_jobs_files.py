"""The `ray job submit` entry points (jobs/*.py) and their runtime env (jobs/runtime_env.yaml)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"

# Options of each command that --help must show: (command, entry point, options).
ENTRY_POINTS = {
    "tune": ["--data", "--space", "--name", "--trials", "--address", "--storage", "--study-db", "--resume"],
    "train": ["--data", "--config", "--set", "--workers", "--gpu", "--address", "--out", "--resume"],
}


def _skip_unless_command(name: str) -> None:
    from rectune.cli import main

    if name not in main.commands:
        pytest.skip(f"`rectune {name}` does not exist yet in rectune.cli.main (commands: "
                    f"{', '.join(sorted(main.commands))}); jobs/{name}.py wraps it")


def _clean_env(**extra: str) -> dict:
    """The environment of a fresh shell: no PYTHONPATH, no RAY_ADDRESS, no virtualenv activation."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(extra)
    return env


def _run_help(name: str, cwd: Path, *python_flags: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *python_flags, str(JOBS / f"{name}.py"), "--help"], cwd=cwd,
                          env=_clean_env(**env), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_help_from_anywhere(name, tmp_path):
    """`python jobs/<name>.py --help` in a clean environment, started outside the repository."""
    _skip_unless_command(name)
    proc = _run_help(name, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"Usage: rectune {name} [OPTIONS]" in proc.stdout
    for option in ENTRY_POINTS[name]:
        assert option in proc.stdout, f"{option} missing from jobs/{name}.py --help"


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_imports_rectune_from_the_working_dir_without_install(name, tmp_path):
    """On a node where rectune is not pip-installed, the entry point imports it from <repo>/platform.

    `python -S` skips site-packages' .pth files, among them the editable install of rectune; only the
    third-party packages are put back, through PYTHONPATH.
    """
    _skip_unless_command(name)
    site_packages = sysconfig.get_paths()["purelib"]
    probe = subprocess.run([sys.executable, "-S", "-c", "import rectune"], env=_clean_env(PYTHONPATH=site_packages),
                           cwd=tmp_path, capture_output=True, text=True)
    if probe.returncode == 0:
        pytest.skip("rectune is importable from site-packages itself here (not an editable install)")
    proc = _run_help(name, tmp_path, "-S", PYTHONPATH=site_packages)
    assert proc.returncode == 0, proc.stderr
    assert f"Usage: rectune {name} [OPTIONS]" in proc.stdout


def test_address_defaults_to_auto_and_can_be_overridden():
    """The wrappers put `--address auto` before the user's arguments, so a given --address wins."""
    import click

    for name in ENTRY_POINTS:
        source = (JOBS / f"{name}.py").read_text()
        assert f'args=["{name}", "--address", "auto", *sys.argv[1:]]' in source
        assert 'Path(__file__).resolve().parents[1] / "platform"' in source

    @click.command()
    @click.option("--address", default=None)
    def probe(address):
        click.echo(address)

    from click.testing import CliRunner

    assert CliRunner().invoke(probe, ["--address", "auto"]).output.strip() == "auto"
    assert CliRunner().invoke(probe, ["--address", "auto", "--address", "ray://h:10001"]).output.strip() == "ray://h:10001"
    assert CliRunner().invoke(probe, ["--address", "auto", "--address=http://h:8265"]).output.strip() == "http://h:8265"


def test_exit_code_of_a_rectune_error_is_kept(tmp_path):
    """A job whose command fails must fail (`ray job status` reads the driver's exit code)."""
    _skip_unless_command("train")
    proc = subprocess.run([sys.executable, str(JOBS / "train.py"), "--data", str(tmp_path / "absent")],
                          cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "rectune: error:" in proc.stderr


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runtime_env() -> dict:
    return yaml.safe_load((JOBS / "runtime_env.yaml").read_text())


def test_runtime_env_keys(runtime_env):
    assert set(runtime_env) == {"env_vars", "excludes", "pip"}
    assert "working_dir" not in runtime_env  # --working-dir . gives it
    # the job's environment gets the locked pins (tests/test_lock.py: the same as requirements.lock)
    assert runtime_env["pip"] == {"packages": "jobs/requirements.txt", "pip_check": False}
    assert runtime_env["env_vars"] == {"PYTHONPATH": "platform"}
    assert all(isinstance(v, str) for v in runtime_env["env_vars"].values())
    for pattern in (".git", ".venv", ".venv-peers", "__pycache__", "/runs/", "/rectune-quickstart/", "*.parquet"):
        assert pattern in runtime_env["excludes"], pattern


def test_runtime_env_is_accepted_by_ray(runtime_env, monkeypatch):
    from ray.runtime_env import RuntimeEnv

    monkeypatch.chdir(ROOT)  # `ray job submit` runs from the repository root, where it reads the pins
    env = RuntimeEnv(**runtime_env, working_dir=str(ROOT))
    assert env.env_vars() == {"PYTHONPATH": "platform"}
    pins = [ln for ln in (JOBS / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert [p for p in env.pip_config()["packages"] if not p.startswith("#")] == pins


def _package(tmp_path: Path, root: Path, runtime_env: dict) -> set[str]:
    """The files Ray uploads for `--working-dir root` with these excludes (Ray's own packaging)."""
    packaging = pytest.importorskip("ray._private.runtime_env.packaging")
    out = tmp_path / "pkg.zip"
    packaging._zip_files(str(root), runtime_env["excludes"], str(out), include_gitignore=True)
    with zipfile.ZipFile(out) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def test_excludes_keep_the_code_and_drop_data_and_venvs(runtime_env, tmp_path):
    repo = tmp_path / "repo"
    files = {
        "platform/rectune/__init__.py": True, "platform/rectune/data/prepared.py": True,
        "platform/rectune/train/run.py": True, "tests/data/test_synth.py": True,
        "jobs/tune.py": True, "search_spaces/quick.yaml": True, "pyproject.toml": True,
        ".venv/lib/site.py": False, ".venv-peers/lib/site.py": False, ".git/HEAD": False,
        "runs/r1/metrics.json": False, "campaigns/c1/campaign.json": False,
        "rectune-quickstart/synth/schema.json": False, "data/world/train.parquet": False,
        "data/world/schema.json": False, "mydata/train.parquet": False,
        "platform/rectune/__pycache__/cli.cpython-311.pyc": False,
    }
    for rel in files:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x")
    kept = _package(tmp_path, repo, runtime_env)
    assert kept == {rel for rel, keep in files.items() if keep}


def test_the_repository_package_is_small_and_complete(runtime_env, tmp_path):
    kept = _package(tmp_path, ROOT, runtime_env)
    for needed in ("jobs/tune.py", "jobs/train.py", "platform/rectune/cli.py", "pyproject.toml"):
        assert needed in kept
    code = {str(p.relative_to(ROOT)) for p in (ROOT / "platform").rglob("*.py") if "__pycache__" not in p.parts}
    assert code <= kept, sorted(code - kept)[:10]
    size = sum((ROOT / n).stat().st_size for n in kept)
    assert size < 50 * 2**20, f"the job's working dir would upload {size / 2**20:.0f} MiB"
