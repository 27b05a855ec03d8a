"""cluster.yaml is a real cluster-launcher file: it passes the launcher's own schema and checks, and it
keeps rectune's promises (a GPU worker type, torch pinned, Ray bound to 127.0.0.1, token auth, no
secrets in the file)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (a dependency of ray) is not installed")


def _schema() -> dict:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    assert path.is_file(), f"the launcher's schema is missing from the ray package: {path}"
    return json.loads(path.read_text())


def _validate(config: dict) -> dict:
    """What `ray up` checks before it talks to a cloud: the schema on the file as written, then Ray's
    validate_config on the config merged with the provider's defaults. Returns the merged config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(config, _schema())
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture(scope="module")
def config(text) -> dict:
    return yaml.safe_load(text)


def _commands(config: dict, *keys: str) -> list[str]:
    return [c for k in keys for c in config.get(k) or []]


def test_validates_against_the_launchers_schema(config):
    prepared = _validate(config)
    assert config["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "head"
    assert set(prepared["available_node_types"]) == {"head", "cpu_worker", "gpu_worker"}


def _max_below_min(c: dict) -> None:
    c["available_node_types"]["cpu_worker"]["min_workers"] = 2
    c["max_workers"] = 1


BREAKAGES = {
    "max_workers-not-an-integer": lambda c: c.update(max_workers="many"),
    "unknown-top-level-key": lambda c: c.update(env={"RECTUNE_STORAGE": "s3://bucket/campaigns"}),
    "fractional-gpu": lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5),
    "node-type-without-node_config": lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"),
    "unknown-head-node-type": lambda c: c.update(head_node_type="nope"),
    "max_workers-below-min_workers": _max_below_min,
}


@pytest.mark.parametrize("breakage", list(BREAKAGES.values()), ids=list(BREAKAGES))
def test_a_broken_copy_fails_validation(config, breakage):
    """The validation above can fail: the same checks reject deliberately broken copies."""
    broken = copy.deepcopy(config)
    breakage(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _validate(broken)


def test_on_prem_variant_as_documented_validates(config, text):
    """The comments say how to switch to provider `local`; doing exactly that must give a valid file."""
    assert "type: local" in text and "DELETE `available_node_types` and `head_node_type`" in text
    local = copy.deepcopy(config)
    local["provider"] = {"type": "local", "head_ip": "10.0.0.10", "worker_ips": ["10.0.0.11", "10.0.0.12"]}
    for key in ("available_node_types", "head_node_type", "head_setup_commands"):
        local.pop(key)
    _validate(local)


def test_gpu_worker_type(config):
    types = config["available_node_types"]
    gpu = [name for name, t in types.items() if t["resources"].get("GPU", 0) >= 1]
    assert gpu == ["gpu_worker"]
    assert types["gpu_worker"]["resources"] == {"CPU": 8, "GPU": 1}
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith("g5.")
    assert types["cpu_worker"]["node_config"]["InstanceType"].startswith("m6i.")
    assert types["head"]["resources"].get("GPU", 0) == 0
    for name in ("cpu_worker", "gpu_worker"):
        assert types[name]["min_workers"] == 0 and types[name]["max_workers"] >= 1


def test_setup_installs_rectune_with_the_locked_versions(config):
    setup = _commands(config, "setup_commands")
    installs = [c for c in setup if "pip install" in c and "--upgrade pip" not in c]
    # one install, of rectune and its PostgreSQL driver, constrained by the lock in the synced repository
    assert len(installs) == 1, setup
    assert re.search(r"-c [\"']?\$HOME/rectune/requirements\.lock", installs[0]), installs
    assert re.search(r"-e [\"']?\$HOME/rectune\[postgres\]", installs[0]), installs
    assert "==" not in installs[0]  # versions come from the lock alone
    assert config["file_mounts"]["~/rectune"] == "."
    # The repository is synced without .venv (2 GB here) and .git: .gitignore and the excludes apply.
    assert ".gitignore" in config["rsync_filter"] and "/.git" in config["rsync_exclude"]
    assert ".venv/" in (ROOT / ".gitignore").read_text().split()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in pyproject and '"ray[default,train,tune,data]==2.60.0"' in pyproject


def test_ray_is_bound_to_localhost(config, text):
    head = [c for c in _commands(config, "head_start_ray_commands") if "ray start" in c]
    assert len(head) == 1 and "--dashboard-host=127.0.0.1" in head[0]
    assert "0.0.0.0" not in text
    assert "ray dashboard cluster.yaml" in text  # how users reach the dashboard (SSH port forwarding)


def test_token_authentication_on_every_node(config, text):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert len(start) == 1 and re.search(r"\bexport RAY_AUTH_MODE=token\b", start[0]), key
        assert start[0].index("RAY_AUTH_MODE=token") < start[0].index("ray start")
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "ray get-auth-token --generate" in text


def test_campaign_storage_and_study_database(config):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        storage = re.search(r"\bRECTUNE_STORAGE=(\S+)", start)
        study = re.search(r"\bRECTUNE_STUDY_DB=(\S+?);?(\s|$)", start)
        assert storage and storage.group(1).startswith(("s3://", "/mnt/")), key
        assert study and study.group(1).startswith("postgresql"), key


def test_no_secrets_in_the_file(text):
    assert not re.search(r"[0-9a-fA-F]{32,}", text), "something like a Ray token (hex)"
    assert not re.search(r"\bRAY_AUTH_TOKEN\s*[=:]\s*\S", text), "a literal RAY_AUTH_TOKEN value"
    assert not re.search(r"AKIA[0-9A-Z]{16}", text), "an AWS access key id"
    assert not re.search(r"(?i)aws_secret_access_key|secret_key\s*[=:]", text)
    for url in re.findall(r"postgresql(?:\+\w+)?://\S+", text):
        assert not re.match(r"postgresql(?:\+\w+)?://[^/@\s]+:[^/@\s]*@", url), f"a password in {url}"
    assert not re.search(r"(?i)password\s*[=:]\s*\S", text)
