"""``rectune bench scale``: throughput of one trial with 1 and 2 Train workers, and of a campaign
with 1, 2 and 4 trials at a time, on this machine; on request the same campaign on two
nodes, and a campaign's peak memory by dataset size.

- **Workers**: ``rectune train`` (Ray Train, the Ray Data stream, no augmentation) on the same rows
  and settings with each worker count; samples/s = training rows / the steady epoch's time (the
  median epoch after the first: the first also pulls each worker's shard). With several workers
  each trains its shard and gradients are averaged every step.
- **Concurrency**: the same campaign (random search, FIFO: no early stopping, so every campaign
  trains exactly the same configurations in the same order) with each ``budget.concurrency``, on
  a local Ray given all of this machine's CPUs; figures: wall time, trials per hour, and the
  speed-up against one trial at a time.
- **Two nodes** (``--two-node``): that campaign, 2 trials at a time, on a two-node
  ``ray.cluster_utils.Cluster`` on this machine: the same CPUs split between a head and a worker
  node (the head takes the odd one), each node half a single node's default object store. One more
  row of the campaign table, with its ratio to 2 at a time on one node and the node each trial's
  Train worker ran on. Both nodes have this machine's IP, so Tune's ``node_ip`` cannot tell them
  apart: a thread polls ``ray.util.placement_group_table()`` for the node of each placement group,
  and each trial reports its Train workers' group (``trial/placement_group``).
- **Memory** (``--memory-rows``): for each N, a synthetic world of N impressions (all splits; N/20
  users, N/50 items, at most 20,000) and a campaign of 2 trials, 1 epoch, 2 at a time on it. A
  thread samples every 0.5 s this process and all its descendants (Ray's GCS, raylet, agents,
  Tune and Train workers): the peak of the sum of their PSS (proportional set size: a page shared
  by k processes counts 1/k in each, so the sum counts the object store's shared memory and the
  libraries every worker maps, torch's, once; a sum of RSS would count them once per process) and
  of their USS (pages no other process maps: a lower bound that leaves all shared pages out), the
  peak PSS of the largest single process, and Ray's object store bytes in use (already inside the
  PSS sum: its pages are shared memory of the processes that map them). On a system without PSS
  (not Linux) the sums fall back to USS, then RSS; the table names the measure.
A setting the machine cannot hold (more trials at once than its CPUs allow) is reported, not run.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml
from rich.console import Console
from rich.table import Table

from rectune.bench.train import steady_epoch

SPACE = {
    "objective": "valid/mean_auc",
    "scheduler": {"name": "fifo"},
    "sampler": {"name": "random", "seed": 0},
    "fixed": {"train.patience": 0, "train.batch_size": 1024},
    "search": {"optim.lr": {"float": [1.0e-3, 1.0e-2], "log": True},
               "model.mtl": {"categorical": ["shared_bottom", "mmoe"]}},
}
TWO_NODES = "2, on 2 nodes"
"""The two-node row's key in the campaign table."""
MEMORY_CAMPAIGN = {"trials": 2, "epochs": 1, "at_once": 2}
MAX_ITEMS = 20_000
SAMPLE_S = 0.5
MB = 1024 * 1024
MEASURES = ("PSS: a page shared by k processes counts 1/k in each, so the sum counts it once; USS: the pages no other "
            "process maps (a lower bound); the object store's bytes are already inside the PSS sum (shared memory of "
            "the processes that map it)")


def run(path: str | Path, epochs: int = 2, trials: int = 4, workers: tuple[int, ...] = (1, 2),
        concurrency: tuple[int, ...] = (1, 2, 4), two_node: bool = False, memory_rows: tuple[int, ...] = (),
        console: Console | None = None) -> dict:
    from rectune.data.prepared import open_dataset

    console = console or Console()
    rows = open_dataset(path).schema.rows.get("train", 0)
    cpus = os.cpu_count() or 1  # given explicitly, so the two-node row compares with the same CPUs
    out: dict = {"workers": {}, "concurrency": {}, "memory": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for w in workers:
            out["workers"][w] = _one_trial(path, root, w, epochs, rows, console)
        for c in concurrency:
            out["concurrency"][c] = _said(console, f"{c} at a time", _campaign(
                path, root, f"scale-c{c}", trials, epochs, c, cpus=cpus))
        if two_node:
            out["concurrency"][TWO_NODES] = _said(console, "2 at a time on 2 nodes",
                                                  _two_node(path, root, trials, epochs, cpus))
        for n in memory_rows:
            out["memory"].append(_memory(root, n, cpus, console))
    _print(out, path, rows, epochs, trials, cpus, console)
    return out


def _one_trial(path, root: Path, w: int, epochs: int, rows: int, console: Console) -> dict:
    from rectune.errors import RectuneError
    from rectune.runconfig import RunConfig
    from rectune.train.run import train

    cfg = RunConfig({"model.mtl": "mmoe", "train.epochs": max(2, epochs), "train.patience": 0,
                     "train.batch_size": 1024})
    t0 = time.perf_counter()
    try:
        result = train(path, cfg, root / f"workers-{w}", workers=w, console=Console(file=io.StringIO()))
    except (RectuneError, ValueError) as exc:
        return {"skipped": str(exc)}
    times = [m["train/time_s"] for m in result.metrics["history"]]
    console.print(f"  {w} worker(s): epochs {', '.join(f'{t:.1f}' for t in times)} s")
    return {"wall_s": time.perf_counter() - t0, "epoch_s": times, "samples_s": rows / steady_epoch(times)}


def _campaign(path, root: Path, name: str, trials: int, epochs: int, at_once: int, **kw) -> dict:
    """The bench's campaign (``SPACE``) with this budget: wall time, trials done, trials per hour and
    its ``CampaignFolder``; or why it could not run. ``kw`` goes to ``run_campaign`` (``cpus``, ``address``)."""
    from rectune.errors import RectuneError
    from rectune.tune.campaign import run_campaign

    tree = {**SPACE, "budget": {"trials": trials, "concurrency": at_once},
            "fixed": {**SPACE["fixed"], "train.epochs": epochs}}
    space = root / f"{name}.yaml"
    space.write_text(yaml.safe_dump(tree))
    t0 = time.perf_counter()
    try:
        result = run_campaign(path, space, name, storage=str(root / "campaigns"),
                              console=Console(file=io.StringIO()), **kw)
    except (RectuneError, ValueError) as exc:
        return {"skipped": str(exc).splitlines()[0]}
    wall = time.perf_counter() - t0
    done = sum(t["status"] == "done" for t in result.trials)
    return {"wall_s": wall, "trials": done, "trials_per_hour": done / wall * 3600, "folder": result.folder}


def _said(console: Console, label: str, o: dict) -> dict:
    console.print(f"  {label}: not run ({o['skipped']})" if "skipped" in o
                  else f"  {label}: {o['trials']} trials in {o['wall_s']:.0f} s")
    return o


# ---------------------------------------------------------------------------------------------
# sampling while a campaign runs


class Poll(threading.Thread):
    """Calls ``sample()`` every ``SAMPLE_S`` seconds inside a ``with`` block (and once at its end)."""

    def __init__(self, sample):
        super().__init__(daemon=True)
        self.sample = sample
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a process or the cluster going away between two reads
                pass
            if self.done.wait(SAMPLE_S):
                return

    def __enter__(self) -> "Poll":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join(10)


class Placements:
    """Placement group id (hex) -> the node ids of its bundles, while the group lives (a removed
    group no longer says where it was)."""

    def __init__(self):
        self.seen: dict[str, set[str]] = {}

    def __call__(self) -> None:
        import ray

        for pg, info in ray.util.placement_group_table().items():
            self.seen.setdefault(pg, set()).update(n for n in (info.get("bundles_to_node_id") or {}).values() if n)


class MemoryPeak:
    """Peaks of the memory of this process and all its descendants, summed (see the module's
    docstring); ``kinds``: the measures summed, the first also the one of the largest process."""

    def __init__(self):
        self.me = psutil.Process()
        have = self.me.memory_full_info()._fields
        self.kinds = [k for k in ("pss", "uss") if k in have] or ["rss"]
        self.sums = dict.fromkeys(self.kinds, 0)
        self.largest, self.largest_name, self.store = 0, "", 0
        self._state = None

    def __call__(self) -> None:
        procs = [self.me, *self.me.children(recursive=True)]
        sizes = [(self._sizes(p), p) for p in procs]
        for k in self.kinds:
            self.sums[k] = max(self.sums[k], sum(s[k] for s, _ in sizes))
        top, proc = max(sizes, key=lambda sp: sp[0][self.kinds[0]])
        if top[self.kinds[0]] > self.largest:
            self.largest, self.largest_name = top[self.kinds[0]], "this process" if proc == self.me else _name(proc)
        self.store = max(self.store, self._store_used())

    def _sizes(self, proc) -> dict[str, int]:
        try:
            info = proc.memory_full_info()
        except psutil.Error:  # ended since it was listed
            return dict.fromkeys(self.kinds, 0)
        return {k: getattr(info, k) for k in self.kinds}

    def _store_used(self) -> int:
        """Object store bytes in use over the cluster (Ray's private ``internal_api``, as ``ray memory``)."""
        import ray
        from ray._private import internal_api

        if not ray.is_initialized():
            self._state = None
            return 0
        if self._state is None:
            self._state = internal_api.get_state_from_address(ray.get_runtime_context().gcs_address)
        return internal_api.get_memory_info_reply(self._state, timeout_seconds=2).store_stats.object_store_bytes_used

    def figures(self) -> dict:
        return {"measure": self.kinds, **{f"peak_{k}_mb": v / MB for k, v in self.sums.items()},
                "largest_mb": self.largest / MB, "largest": self.largest_name, "store_mb": self.store / MB}


def _name(proc) -> str:
    try:
        cmd = proc.cmdline()
    except Exception:  # noqa: BLE001 - ended, or not ours to read
        return "?"
    return Path(cmd[0].split(" ")[0]).name[:32] if cmd else "?"


def _memory(root: Path, n: int, cpus: int, console: Console) -> dict:
    """Generate a world of ``n`` rows, then run the memory campaign on it while sampling."""
    from rectune.data.synth import SynthConfig, generate

    users, items = max(10, n // 20), min(max(10, n // 50), MAX_ITEMS)
    world = root / f"world-{n}"
    t0 = time.perf_counter()
    generate(SynthConfig(users=users, items=items, rows=n, seed=0)).write(world)
    made = time.perf_counter() - t0
    peak = MemoryPeak()
    with Poll(peak):
        o = _campaign(world, root, f"scale-mem{n}", MEMORY_CAMPAIGN["trials"], MEMORY_CAMPAIGN["epochs"],
                      MEMORY_CAMPAIGN["at_once"], cpus=cpus)
    shutil.rmtree(world, ignore_errors=True)
    return _said(console, f"{n:,} rows", {**o, "rows": n, "users": users, "items": items, "generate_s": made,
                                          **peak.figures()})


# ---------------------------------------------------------------------------------------------
# two nodes on this machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _env(name: str, value: str):
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextlib.contextmanager
def _address_file_kept():
    """A ``Cluster`` points ``ray.init(address="auto")`` on this machine at itself, and its shutdown
    deletes that pointer: put back whatever was there before (another Ray on this machine)."""
    from ray._common.utils import get_ray_address_file

    f = Path(get_ray_address_file(None))
    before = f.read_text() if f.is_file() else None
    try:
        yield
    finally:
        if before is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(before)
        else:
            f.unlink(missing_ok=True)


@contextlib.contextmanager
def two_node_cluster(cpus: int):
    """A head and a worker node on this machine sharing ``cpus``, this process connected to it;
    yields (address, {node id: "head" | "worker"}); everything is shut down and removed at the end.

    As on a real head, a dashboard, and its address for every process of the cluster: Ray's own
    processes that query the state API without an address (Train's placement group cleaner) must
    ask this cluster, not whichever Ray on the machine they would find first."""
    import ray
    from ray._private.utils import resolve_object_store_memory
    from ray.cluster_utils import Cluster

    ray.shutdown()
    temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # Ray's unix socket paths: at most 107 bytes
    dashboard = _free_port()
    store = resolve_object_store_memory(psutil.virtual_memory().available) // 2
    node = {"temp_dir": temp_dir, "object_store_memory": store}
    cluster = None
    with _address_file_kept(), _env("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{dashboard}"):
        try:
            cluster = Cluster(initialize_head=True, head_node_args={
                **node, "num_cpus": cpus - cpus // 2, "include_dashboard": True, "dashboard_host": "127.0.0.1",
                "dashboard_port": dashboard, "dashboard_agent_listen_port": _free_port()})
            worker = cluster.add_node(**node, num_cpus=cpus // 2)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
            yield cluster.address, {cluster.head_node.node_id: "head", worker.node_id: "worker"}
        finally:
            ray.shutdown()
            if cluster is not None:
                cluster.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


def _two_node(path, root: Path, trials: int, epochs: int, cpus: int) -> dict:
    if cpus < 2:
        return {"skipped": f"needs at least 2 CPUs (this machine: {cpus})"}
    placements = Placements()
    with two_node_cluster(cpus) as (address, names):
        with Poll(placements):
            o = _campaign(path, root, "scale-2nodes", trials, epochs, 2, address=address)
    if "skipped" not in o:
        o["nodes"] = _trial_nodes(o["folder"], placements.seen, names)
        o["cpus"] = f"{cpus - cpus // 2}+{cpus // 2}"
    return o


def _trial_nodes(folder, seen: dict[str, set[str]], names: dict[str, str]) -> dict[str, int]:
    """How many trials' Train workers ran on each node ("unknown": the poll never saw the group)."""
    from rectune.results.store import read_tune_trials

    counts: dict[str, int] = {}
    for t in read_tune_trials(folder):
        pg = t.history[-1].get("trial/placement_group") if t.history else None
        where = "+".join(sorted(names.get(n, n[:8]) for n in seen.get(pg, ()))) or "unknown"
        counts[where] = counts.get(where, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------
# tables


def _table(title: str, columns: tuple[str, ...], results: dict, rate: str, cells) -> Table:
    """One row per setting: ``cells(o)`` for a measured one, then its ``rate`` against setting 1's
    (1 worker, 1 at a time; "-" where that was not run) and, where a row has one, its ``note``; a
    skipped setting shows why."""
    t = Table(title=title, title_justify="left")
    notes = any("note" in o for o in results.values())
    for col in (*columns, "note") if notes else columns:
        t.add_column(col, justify="left" if col == "note" else "right")
    base = results.get(1, {}).get(rate)
    for k, o in results.items():
        if "skipped" in o:
            t.add_row(str(k), "-", "-", o["skipped"][:80])
            continue
        t.add_row(str(k), *cells(o), f"{o[rate] / base:.2f}x" if base else "-", *([o.get("note", "")] if notes else []))
    return t


def _two_node_note(rows: dict) -> None:
    """The two-node row's note: its ratio to 2 at a time on one node, and where its trials ran."""
    o, one = rows.get(TWO_NODES, {}), rows.get(2, {})
    if "wall_s" not in o:
        return
    vs = f"{o['trials_per_hour'] / one['trials_per_hour']:.2f}x" if one.get("trials_per_hour") else "-"
    where = ", ".join(f"{k} {v}" for k, v in sorted(o["nodes"].items()))
    o["note"] = f"{o['cpus']} CPUs; vs 2 at a time on 1 node: {vs}; trials' Train workers by node: {where}"


def _print(out: dict, path, rows: int, epochs: int, trials: int, cpus: int, console: Console) -> None:
    if out["workers"]:
        console.print(_table(f"one trial's throughput by Train workers ({path}, {rows:,} training rows, MMoE)",
                             ("workers", "steady epoch s", "samples/s", "vs 1 worker"), out["workers"], "samples_s",
                             lambda o: (f"{steady_epoch(o['epoch_s']):.2f}", f"{o['samples_s']:,.0f}")))
    if out["concurrency"]:
        _two_node_note(out["concurrency"])
        console.print(_table(f"a campaign's throughput by trials at a time ({trials} trials, {epochs} epochs, FIFO, "
                             f"same configurations{f', {cpus} CPUs in all' if TWO_NODES in out['concurrency'] else ''})",
                             ("at a time", "wall s", "trials/hour", "vs 1 at a time"), out["concurrency"],
                             "trials_per_hour", lambda o: (f"{o['wall_s']:.0f}", f"{o['trials_per_hour']:.1f}")))
    if out["memory"]:
        console.print(_memory_table(out["memory"], cpus))


def _memory_table(results: list[dict], cpus: int) -> Table:
    c = MEMORY_CAMPAIGN
    kinds = next((o["measure"] for o in results if "measure" in o), ["pss"])
    t = Table(title=f"a campaign's peak memory by rows ({c['trials']} trials, {c['epochs']} epoch, {c['at_once']} at "
                    f"a time, {cpus} CPUs; this process and all its descendants, sampled every {SAMPLE_S} s)",
              title_justify="left", caption=MEASURES, caption_justify="left")
    for col in ("rows", "users / items", "generate s", "campaign s", *(f"peak Σ {k.upper()} MB" for k in kinds),
                f"largest process {kinds[0].upper()} MB", "object store MB", f"Σ {kinds[0].upper()} MB per M rows"):
        t.add_column(col, justify="right")
    prev = None
    for o in results:
        head = (f"{o['rows']:,}", f"{o['users']:,} / {o['items']:,}", f"{o['generate_s']:.1f}")
        if "skipped" in o:
            t.add_row(*head, o["skipped"][:80])
            continue
        total = o[f"peak_{kinds[0]}_mb"]
        growth = f"{(total - prev[1]) / (o['rows'] - prev[0]) * 1e6:,.0f}" if prev else "-"
        t.add_row(*head, f"{o['wall_s']:.0f}", *(f"{o[f'peak_{k}_mb']:,.0f}" for k in kinds),
                  f"{o['largest_mb']:,.0f} ({o['largest']})", f"{o['store_mb']:,.0f}" if o["store_mb"] else "-", growth)
        prev = (o["rows"], total)
    return t
