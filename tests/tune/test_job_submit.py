"""A campaign submitted as a Ray job to a real local head (`ray start --head`), as a user would.

The head is private to the test: its own ports, its own ``--temp-dir`` and its own token (token
authentication on, as on any Ray 2.60 cluster): `ray stop` would stop every Ray on the machine,
so the test stops only the processes it started.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest

from .spaces import write_space

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")



def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_env(token_file: Path) -> dict:
    """The environment of every Ray process and client the test starts: token auth with the
    test's own token, `python` is this venv's (the job's entrypoint says `python`), no address
    or token inherited from the caller, and no 30 s drain when the head is stopped."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "PYTHONPATH")}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file),
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
    return env


def ray_cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def job_status(env: dict, url: str, job_id: str) -> str | None:
    """What `ray job status` says: SUCCEEDED, FAILED, STOPPED, PENDING, RUNNING (None: no answer)."""
    st = ray_cli(env, "job", "status", job_id, "--address", url, "--log-style", "record", "--log-color", "false")
    text = re.sub(r"\x1b\[[0-9;]*m", "", st.stdout + st.stderr)
    for pattern, status in ((f"Job '{job_id}' succeeded", "SUCCEEDED"), (f"Job '{job_id}' failed", "FAILED"),
                            (f"Job '{job_id}' was stopped", "STOPPED")):
        if pattern in text:
            return status
    m = re.search(rf"Status for job '{re.escape(job_id)}': (?:JobStatus\.)?(\w+)", text)
    return m.group(1) if m else None


def wait_for_dashboard(url: str, token: str, head: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start --head exited with {head.returncode}:\n{log.read_text()[-4000:]}")
        try:
            req = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"the head's dashboard did not answer within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def stop_head(head: subprocess.Popen, *folders: str) -> None:
    """SIGTERM to `ray start --block` (it stops its node's processes; they also die with it), then
    SIGKILL whatever is left of this head and its job: processes whose command line names one of
    ``folders`` (the head's temp dir, the test's tmp_path)."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)
    deadline = time.time() + 30
    while (left := [p for f in folders for p in pids_naming(f)]) and time.time() < deadline:
        time.sleep(1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pids_naming(folder: str) -> list[int]:
    """Processes with ``folder`` or a path under it in their command line (Linux /proc)."""
    name, under = folder.encode(), folder.encode() + b"/"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(under in a or a == name or a.endswith(b"=" + name) for a in args):
            found.append(int(proc.name))
    return found


def runtime_env(tmp_path: Path, locked: bool) -> str:
    """jobs/runtime_env.yaml as shipped (``locked``: with its pip env of the locked pins), or without
    its pip env. Ray makes that env by copying the node's whole virtualenv, a minute here: the
    default suite runs the job without it, the slow suite as shipped."""
    if locked:
        return "jobs/runtime_env.yaml"
    import yaml

    env = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    del env["pip"]
    path = tmp_path / "runtime_env.yaml"
    path.write_text(yaml.safe_dump(env))
    return str(path)


@pytest.mark.timeout(540)
@pytest.mark.parametrize("locked", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["without-pip-env", "as-shipped"])
def test_campaign_as_a_ray_job_on_a_local_head(small_world, tmp_path, locked):
    token = secrets.token_hex(32)
    token_file = tmp_path / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = ray_env(token_file)
    # short: Ray's unix socket paths (<temp dir>/session_<date>_<pid>/sockets/plasma_store) are limited to 107 bytes
    temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
    gcs, dash, agent, client = free_ports(4)
    url = f"http://127.0.0.1:{dash}"
    # Ray's own processes that query the state API without an address (Train's placement group
    # cleaner) must ask this head, not whichever Ray on the machine they would find first
    env["RAY_API_SERVER_ADDRESS"] = url
    space = write_space(tmp_path / "space.yaml", budget={"trials": 2, "concurrency": 2})
    storage = tmp_path / "campaigns"
    job_id = f"rectune-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--port", str(gcs),
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
             "--dashboard-agent-listen-port", str(agent), "--ray-client-server-port", str(client),
             "--min-worker-port", "0", "--max-worker-port", "0", "--num-cpus", "2", "--num-gpus", "0",
             "--temp-dir", temp_dir, "--disable-usage-stats"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    submitted = False
    try:
        wait_for_dashboard(url, token, head, log)
        sub = ray_cli(env, "job", "submit", "--address", url, "--submission-id", job_id, "--working-dir", ".",
                      "--runtime-env", runtime_env(tmp_path, locked), "--no-wait", "--",
                      "python", "jobs/tune.py", "--data", str(small_world), "--space", str(space), "--name", "j1",
                      "--storage", str(storage))
        assert sub.returncode == 0, sub.stdout + sub.stderr
        submitted = True

        status, deadline = None, time.time() + 330  # the pip env first: ~1 min
        while time.time() < deadline:
            status = job_status(env, url, job_id)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(5)
        logs = ray_cli(env, "job", "logs", job_id, "--address", url)
        text = logs.stdout
        assert status == "SUCCEEDED", f"job {job_id}: {status}\n{text[-6000:]}\n{logs.stderr[-2000:]}"
        submitted = False

        meta = json.loads((storage / "j1" / "campaign.json").read_text())
        assert meta["status"] == "finished", meta
        study = optuna.load_study(study_name="j1", storage=f"sqlite:///{storage / 'j1' / 'study.db'}")
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 2, [(t.number, t.state) for t in study.trials]
        assert all(0.5 < t.value <= 1.0 for t in complete), [t.value for t in complete]
        assert len(list((storage / "j1" / "train").glob("train-*"))) == 2
        # the driver's output reaches the job's logs: its trial lines and the best-trials table
        assert "campaign j1: 2 trials, 2 at a time" in text, text[-6000:]
        assert "best trials by valid/mean_auc (2 done, 0 errored)" in text, text[-6000:]
        assert sum(f"{t.value:.4f}" in text for t in complete) == 2, text[-6000:]
        # as shipped, the job ran in the environment of jobs/runtime_env.yaml's pip pins (the locked versions)
        envs = list(Path(temp_dir).glob("session_*/runtime_resources/pip/*/virtualenv"))
        assert bool(envs) == locked, envs
    finally:
        if submitted and head.poll() is None:  # a job still running: stop it before its head
            ray_cli(env, "job", "stop", job_id, "--address", url, "--no-wait", timeout=60)
        stop_head(head, temp_dir, str(tmp_path))
        shutil.rmtree(temp_dir, ignore_errors=True)
