"""A campaign on a real two-node Ray cluster on one machine (``ray.cluster_utils.Cluster``).

Both nodes have this machine's IP; they differ by node id. Where the trials ran is read from the
placement groups of their Train workers: each trial reports its group's id
(``trial/placement_group``), and a thread polls ``ray.util.placement_group_table()`` while the
campaign runs, to see the node each group's bundle was placed on.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import optuna
import pytest
import ray
from ray.cluster_utils import Cluster

from rectune.tune.campaign import run_campaign

from .spaces import write_space



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PlacementWatch(threading.Thread):
    """Placement group id (hex) -> the node ids of its bundles, as long as the group lived."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen: dict[str, set[str]] = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                table = ray.util.placement_group_table()
            except Exception:  # noqa: BLE001 - the cluster is going away
                table = {}
            for pg_id, info in table.items():
                nodes = {n for n in (info.get("bundles_to_node_id") or {}).values() if n}
                if nodes:
                    self.seen.setdefault(pg_id, set()).update(nodes)
            self.stop.wait(0.5)


def trial_results(tune_dir: Path) -> dict[str, dict]:
    """Each Tune trial's last reported result (its result.json), by trial id."""
    out = {}
    for f in tune_dir.glob("*/result.json"):
        lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
        if lines:
            last = json.loads(lines[-1])
            out[last["trial_id"]] = last
    return out


@pytest.mark.timeout(420)
def test_campaign_trials_run_on_both_nodes_of_a_two_node_cluster(small_world, tmp_path, monkeypatch):
    space = write_space(tmp_path / "space.yaml", budget={"trials": 2, "concurrency": 2})
    storage = tmp_path / "campaigns"
    # short: Ray's unix socket paths under the temp dir are limited to 107 bytes
    temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
    address_file = Path(ray._private.utils.get_ray_address_file(None))
    address_before = address_file.read_text() if address_file.is_file() else None
    ray.shutdown()
    # Two nodes of 2 CPUs: the ResourcePlan for 4 CPUs and 2 trials gives each trial's Train worker
    # 0.995 CPU. Ray places a one-bundle placement group on the node that keeps the largest share of
    # its available CPUs ((available - asked) / available): the first trial's worker takes one node,
    # which then scores 0 against ~0.5 for the other, so the second trial's worker goes there.
    # (With 1 + 2 CPUs both workers land on the larger node.)
    #
    # A dashboard as on a real head, and its address for every process of the cluster: Ray's own
    # processes that query the state API without an address (Train's placement group cleaner) must
    # ask this cluster, not whichever Ray on the machine they would find first.
    dashboard = free_port()
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{dashboard}")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "temp_dir": temp_dir, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": dashboard, "dashboard_agent_listen_port": free_port()})
    gcs = cluster.address
    watch = PlacementWatch()
    try:
        worker = cluster.add_node(num_cpus=2, temp_dir=temp_dir)
        cluster.wait_for_nodes()
        nodes = {cluster.head_node.node_id, worker.node_id}
        ray.init(address=cluster.address)
        assert len({n["NodeID"] for n in ray.nodes() if n["Alive"]}) == 2
        watch.start()
        result = run_campaign(small_world, space, "m1", storage=str(storage), address=cluster.address)
        watch.stop.set()
        watch.join(10)

        assert result.status == "finished"
        assert len(result.trials) == 2, result.trials
        assert all(t["status"] == "done" and 0.5 < t["valid/mean_auc"] <= 1.0 for t in result.trials), result.trials
        study = optuna.load_study(study_name="m1", storage=f"sqlite:///{storage / 'm1' / 'study.db'}")
        assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 2

        reported = trial_results(storage / "m1" / "tune")
        assert set(reported) == {t["trial_id"] for t in result.trials}
        placed = {tid: watch.seen.get(r["trial/placement_group"], set()) for tid, r in reported.items()}
        assert all(len(p) == 1 for p in placed.values()), (placed, watch.seen)
        assert set().union(*placed.values()) == nodes, (placed, nodes)
    finally:
        watch.stop.set()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        # Cluster points `ray.init(address="auto")` on this machine at itself: undo that
        if address_file.is_file() and address_file.read_text() == gcs:
            if address_before is None:
                address_file.unlink()
            else:
                address_file.write_text(address_before)
