"""Reliability drills: a worker killed mid-trial, a trial whose loss turns NaN, a damaged
Parquet file, and where rectune's own Ray listens. Each bounded in time."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import optuna
import pytest

from rectune.results import open_campaign
from rectune.tune.campaign import run_campaign

from .spaces import write_space


def _study(storage, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{storage / name / 'study.db'}").trials


@pytest.mark.timeout(420)
def test_a_killed_train_worker_is_retried_from_its_checkpoint(small_world, tmp_path):
    """SIGKILL of the Train worker process after epoch 0: Train restarts the worker group from the
    last checkpoint (epoch 1 runs once, epoch 0 is not run again) and the trial completes."""
    space = write_space(tmp_path / "space.yaml", budget={"trials": 1, "concurrency": 1},
                        scheduler={"name": "fifo"}, search={"optim.lr": {"float": [1e-3, 3e-3]}})
    marker = tmp_path / "killed"
    storage = tmp_path / "campaigns"
    result = run_campaign(small_world, space, "kw", storage=str(storage), cpus=2,
                          extra={"fail_once_after_epoch": 0, "fail_marker": str(marker), "fail_kill": True})
    assert marker.exists(), "the worker was never killed"
    assert result.status == "finished"
    (trial,) = _study(storage, "kw")
    assert trial.state == optuna.trial.TrialState.COMPLETE
    (tune_dir,) = [p for p in (storage / "kw" / "tune").iterdir() if (p / "result.json").is_file()]
    epochs = [json.loads(line)["epoch"] for line in (tune_dir / "result.json").read_text().splitlines()]
    assert epochs == [0, 1], epochs  # epoch 0 reported once: the restart resumed from its checkpoint
    c = open_campaign("kw", str(storage))
    assert c.trials[0].state == "complete" and c.trials[0].epochs == 2


@pytest.mark.timeout(420)
def test_a_trial_whose_loss_turns_nan_errors_with_its_reason_and_the_campaign_goes_on(small_world, tmp_path):
    # two trials at once, the floor every campaign starts from: the defaults, and the peer-equivalent
    # (lr 1e-3, which the defaults are not) poisoned
    space = write_space(tmp_path / "space.yaml", budget={"trials": 2, "concurrency": 2})
    storage = tmp_path / "campaigns"
    result = run_campaign(small_world, space, "nan", storage=str(storage), cpus=2,
                          extra={"poison_when": {"optim.lr": 1e-3}, "poison_at_epoch": 0})
    assert result.status == "finished"
    trials = _study(storage, "nan")
    assert len(trials) == 2
    poisoned = [t for t in trials if t.params["optim.lr"] == 1e-3]
    healthy = [t for t in trials if t.params["optim.lr"] != 1e-3]
    assert len(poisoned) == len(healthy) == 1, [t.params for t in trials]
    assert all(t.state == optuna.trial.TrialState.FAIL and "not finite" in t.user_attrs["error"] for t in poisoned)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in healthy)
    c = open_campaign("nan", str(storage))
    errored = [t for t in c.trials if t.state == "errored"]
    assert len(errored) == len(poisoned) and all("loss is not finite" in t.error for t in errored)
    assert all(t.epochs == 1 for t in errored)  # not retried: a NaN is not mended by running again
    shown = subprocess.run([sys.executable, "-m", "rectune.cli", "results", "show", "nan", "--storage", str(storage)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "loss is not finite" in shown.stdout


@pytest.mark.parametrize("command", ["tune", "train"])
def test_a_truncated_parquet_file_is_refused_before_anything_is_written(small_world, tmp_path, command):
    data = tmp_path / "data"
    shutil.copytree(small_world, data)
    train = data / "train.parquet"
    train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    out = tmp_path / "out"
    space = write_space(tmp_path / "space.yaml")
    args = (["tune", "--space", str(space), "--name", "x", "--storage", str(out)] if command == "tune"
            else ["train", "--out", str(out)])
    r = subprocess.run([sys.executable, "-m", "rectune.cli", *args, "--data", str(data)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.parquet" in lines[0] and "unreadable Parquet file" in lines[0], r.stderr
    assert not out.exists()


def _listening(pid: int) -> list[str]:
    """The IPv4/IPv6 addresses a process listens on (TCP), from /proc: its socket inodes matched in
    /proc/net/tcp{,6} rows in state LISTEN (0A)."""
    from pathlib import Path

    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:
                host = cols[1].split(":")[0]
                if table == "tcp":
                    out.append(".".join(str(int(host[i:i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    out.append("::1" if host == "0" * 24 + "01000000" else "::" if set(host) == {"0"} else host)
    return out


def _session_processes(session: str) -> list[tuple[int, list[str]]]:
    from pathlib import Path

    out = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if proc.name.isdigit() and any(session in a for a in cmd):
            out.append((int(proc.name), cmd))
    return out


@pytest.fixture()
def rectune_ray():
    import ray

    from rectune.train.run import start_ray

    assert not ray.is_initialized()
    assert start_ray(None, cpus=1)
    try:
        yield ray._private.worker._global_node  # noqa: SLF001
    finally:
        ray.shutdown()


def test_rectune_starts_ray_without_a_web_dashboard(rectune_ray):
    """rectune's own Ray (`rectune train`, `tune` without --address): no dashboard web UI and no
    Jobs API (whoever reaches those can run code); Ray's head process `dashboard.py`, which Ray
    keeps for its internal modules, is told --host=127.0.0.1 and runs without its frontend."""
    assert not rectune_ray.address_info.get("webui_url")
    heads = [(pid, cmd) for pid, cmd in _session_processes(rectune_ray.get_session_dir_path())
             if any(a.endswith("dashboard/dashboard.py") for a in cmd)]
    assert heads, "no dashboard process of this Ray session found"
    for _, cmd in heads:
        assert "--host=127.0.0.1" in cmd and "--disable-frontend" in cmd, cmd
        assert not any(a.startswith("--modules-to-load=") and "Job" in a for a in cmd), cmd


@pytest.mark.xfail(strict=True, reason="Ray 2.60 binds its gRPC servers (gcs_server, raylet), metrics "
                   "exporters and dashboard agent to all interfaces even for a private local Ray and with "
                   "_node_ip_address=127.0.0.1; they take Ray's auth token (on by default for local "
                   "clusters). Strict: this test starts passing, and says so, once Ray binds to loopback.")
def test_every_listener_of_rectunes_ray_is_on_loopback(rectune_ray):
    exposed = []
    for pid, cmd in _session_processes(rectune_ray.get_session_dir_path()):
        try:
            addresses = _listening(pid)
        except OSError:
            continue
        exposed += [(cmd[0].rsplit("/", 1)[-1], a) for a in addresses if a not in ("127.0.0.1", "::1")]
    assert exposed == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_campaigns_at_once_on_one_storage_with_results_read_during_both(small_world, tmp_path):
    """Two `rectune tune` processes (each its own private Ray) on the same --storage, and the results
    commands reading both while they run; both finish with every trial once. Slow (two campaigns on
    a 2-core machine): `pytest -m slow`."""
    import time

    space = write_space(tmp_path / "space.yaml", budget={"trials": 2, "concurrency": 1})
    storage = tmp_path / "campaigns"
    procs = {name: subprocess.Popen([sys.executable, "-m", "rectune.cli", "tune", "--data", str(small_world),
                                     "--space", str(space), "--name", name, "--storage", str(storage)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True) for name in ("a", "b")}
    reads = []
    try:
        deadline = time.time() + 800
        while time.time() < deadline and any(p.poll() is None for p in procs.values()):
            if all((storage / n / "study.db").exists() for n in procs):
                r = subprocess.run([sys.executable, "-m", "rectune.cli", "results", "list", "--storage", str(storage),
                                    "--json"], capture_output=True, text=True, timeout=120)
                reads.append((r.returncode, r.stdout, r.stderr, [p.poll() is None for p in procs.values()]))
            time.sleep(5)
        outs = {n: p.communicate(timeout=60)[0] for n, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs.values()), outs
    during = [r for r in reads if all(r[3])]
    assert during, "no read while both campaigns ran"
    assert all(r[0] == 0 for r in reads), [r[2] for r in reads if r[0]]
    assert {x["name"] for x in json.loads(during[0][1])} == {"a", "b"}
    for name in procs:
        trials = _study(storage, name)
        assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        c = open_campaign(name, str(storage))
        assert c.status == "finished" and c.count("complete") == 2
