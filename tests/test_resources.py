"""Jobs fit their Ray requests to the cluster, or stop naming the keys; a stall is explained.

Pure tests of the fitting against given clusters; then the jobs on the real 2-CPU local
Ray of the session (`ray_cluster`): dedup (2 shards) and search (3 shards) with the
default 1 CPU per shard actor finish (they waited forever before); a scan asking for a GPU
stops with rc 2 before writing anything; and the executor and the actor pool explain a
stall while something holds every CPU, and finish once it lets go.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from diffrep.config import ConfigError
from diffrep.resources import Ask, Cluster, Node, StallWatch, fit, places

REPO = Path(__file__).resolve().parents[1]
MODEL = "sscd_onnx"
JOB_TIMEOUT_S = 240  # generous bound: the jobs take seconds; before the fix they never ended


def shard_actors(n: int, cpus: float = 1.0, section: str = "dedup") -> Ask:
    return Ask("shard actors", n, cpus, cpus_key=f"{section}.shard_actor_cpus", cpus_fit="share")


def workers(n: int, cpus: float = 1.0, gpus: float = 0.0, section: str = "scan") -> Ask:
    return Ask("workers", n, cpus, gpus, f"{section}.cpus_per_worker",
               f"{section}.gpus_per_worker", f"{section}.workers", count_fit=True)


# ---- fitting, against given clusters (no Ray) ---------------------------------------

def test_shard_actors_get_a_share_that_leaves_room_for_a_task():
    two_cpus = Cluster((Node(2),))
    asks = [shard_actors(2), Ask("slice tasks", 1, 1.0)]
    assert not places(asks, two_cpus)  # the bug: both CPUs held by the actors
    fitted, changes = fit(asks, two_cpus)
    assert [a.cpus for a in fitted] == [0.5, 1.0]
    assert places(fitted, two_cpus)
    assert len(changes) == 1 and "dedup.shard_actor_cpus lowered from 1 to 0.5" in changes[0]


def test_light_shard_actors_pack_on_one_node_and_leave_a_whole_cpu_for_tasks():
    """Two 1-CPU raylets, three shard actors of 1/6 CPU and a 1-CPU task: the actors pack
    onto one node (a spreading placement would leave no node a whole CPU)."""
    nodes = Cluster((Node(1), Node(1)))
    asks = [shard_actors(3, 0.167), Ask("slice tasks", 1, 1.0)]
    assert places(asks, nodes)
    assert fit(asks, nodes) == (asks, [])


def test_a_request_that_fits_is_unchanged():
    asks = [shard_actors(2, 0.5), Ask("slice tasks", 1, 1.0)]
    assert fit(asks, Cluster((Node(2),))) == (asks, [])


def test_per_node_fragmentation_is_counted():
    # 8 CPUs in total, but 1.5-CPU actors spread over 2-CPU nodes leave no node a whole CPU
    nodes = Cluster((Node(2),) * 4)
    asks = [shard_actors(4, 1.5), Ask("slice tasks", 1, 1.0)]
    assert nodes.cpus >= 4 * 1.5 + 1 and not places(asks, nodes)
    fitted, _ = fit(asks, nodes)
    assert places(fitted, nodes) and fitted[0].cpus == 1.0


def test_laion2b_dedup_on_a_smaller_cluster_is_fitted_not_hung():
    cluster = Cluster((Node(16),) * 8)  # 128 CPUs for 64 actors x 4 CPUs + tasks
    fitted, changes = fit([shard_actors(64, 4.0), Ask("slice tasks", 1, 1.0)], cluster)
    assert 1.5 < fitted[0].cpus < 2.0 and places(fitted, cluster)
    assert "dedup.shard_actor_cpus lowered from 4 to" in changes[0]


def test_task_larger_than_every_node_is_lowered_to_the_largest_node():
    cluster = Cluster((Node(2),) * 4)  # 8 CPUs, but no task of 4 CPUs can ever run
    ask = Ask("index tasks", 1, 4, cpus_key="index.cpus_per_worker", cpus_fit="whole")
    fitted, changes = fit([ask], cluster)
    assert fitted[0].cpus == 2
    assert changes == ["index.cpus_per_worker lowered from 4 to 2 (no node has more than 2 CPUs "
                       f"({cluster.describe()}))"]


def test_fewer_workers_when_the_lightest_shard_actors_leave_no_room():
    fitted, changes = fit([shard_actors(2, section="scan"), workers(4)], Cluster((Node(2),)))
    assert [(a.count, a.cpus) for a in fitted] == [(2, 0.5), (1, 1.0)]
    assert any(c.startswith("scan.workers lowered from 4 to 1") for c in changes)


def test_gpus_on_a_cluster_without_gpus_name_the_key():
    with pytest.raises(ConfigError, match=r"scan\.gpus_per_worker = 1 .*no GPU.*set it to 0"):
        fit([workers(1, gpus=1.0)], Cluster((Node(8),)))


def test_gpu_workers_are_counted_per_gpu_and_cpu_per_node():
    cluster = Cluster((Node(16, 1), Node(16, 1), Node(4)))
    fitted, changes = fit([workers(8, cpus=4, gpus=1, section="dcs")], cluster)
    assert fitted[0].count == 2 and "dcs.workers lowered from 8 to 2" in changes[0]
    with pytest.raises(ConfigError, match=r"dcs\.cpus_per_worker = 32 .*no node with 1 GPU"):
        fit([workers(1, cpus=32, gpus=1, section="dcs")], cluster)


def test_fixed_demands_that_cannot_fit_raise_with_keys_and_totals():
    cluster = Cluster((Node(2),))
    with pytest.raises(ConfigError) as err:
        fit([workers(1, cpus=1.5), Ask("index tasks", 1, 1.0, cpus_key="index.cpus_per_worker")],
            cluster)
    assert "scan.cpus_per_worker" in str(err.value) and "2 CPUs" in str(err.value)


def test_stall_warning_at_most_once_per_interval(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("diffrep.resources.time.monotonic", lambda: now[0])
    watch = StallWatch("tasks", stall_warning_s=60, demand={"CPU": 1})
    monkeypatch.setattr(watch, "_reason", lambda: "held elsewhere")
    said = []
    for t in range(0, 200):
        now[0] = float(t)
        if t == 130:
            watch.progressed()
        if watch.check(pending=3):
            said.append(t)
    assert said == [60, 120, 190]  # after 60 s without a unit, then once per 60 s at most
    assert watch.check(pending=0) is None


# ---- the jobs on a real 2-CPU Ray ---------------------------------------------------

def build_index(root: Path, shards: int) -> None:
    from diffrep.executor import LocalExecutor
    from diffrep.index.builder import build
    from diffrep.index.config import IndexConfig
    from diffrep.synthetic import write_embeddings
    from tests.test_dedup import planted

    x, _ = planted()
    write_embeddings(str(root), MODEL, x, 250)
    build(IndexConfig(root=str(root), model=MODEL, num_shards=shards, rows_per_slice=1000,
                      eval_queries=50), LocalExecutor())


def run_job(job: str, *args: str) -> subprocess.CompletedProcess:
    """The job in its own process, bounded by JOB_TIMEOUT_S (TimeoutExpired: it hung);
    its log (stdout and stderr) in .stdout."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run([sys.executable, "-m", f"jobs.{job}", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=JOB_TIMEOUT_S)


@pytest.mark.ray
def test_dedup_with_default_shard_actor_cpus_finishes_on_two_cpus(ray_cluster, tmp_path):
    assert ray_cluster_cpus() == 2
    build_index(tmp_path, shards=2)
    proc = run_job("dedup", "--root", str(tmp_path), "--model", MODEL,
                   "--ray_address", ray_cluster.address, "--progress_interval_s", "1")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "dedup.shard_actor_cpus lowered from 1 to 0.5" in proc.stdout
    from tests.test_dedup import partition, planted

    groups = pq.read_table(tmp_path / "dedup" / MODEL / "groups")
    _, truth = planted()
    keys = np.array([f"k{r // 250:05d}_{r % 250}" for r in range(len(truth))])  # build_index's
    want = {frozenset(keys[truth == g].tolist()) for g in set(truth.tolist()) - {-1}}
    assert partition(groups) == want  # exactly the planted groups


@pytest.mark.ray
def test_search_with_more_shards_than_cpus_finishes(ray_cluster, tmp_path):
    """3 shards on 2 CPUs: by default (shards_per_actor auto) 2 actors of 1 CPU; with one
    actor per shard asked for, the actors are made lighter to fit. Same results."""
    build_index(tmp_path, shards=3)
    rows = {}
    for per_actor in ("0", "1"):
        out = tmp_path / f"results-{per_actor}.parquet"
        proc = run_job("search", "--root", str(tmp_path), "--model", MODEL, "--queries",
                       str(tmp_path), "--k", "3", "--shard_actors", "always", "--out", str(out),
                       "--shards_per_actor", per_actor, "--ray_address", ray_cluster.address)
        assert proc.returncode == 0, proc.stdout[-4000:]
        if per_actor == "0":
            assert "search.shards_per_actor auto: 2 (3 index shards, 2 actors for 2 CPUs)" in proc.stdout
            assert "lowered" not in proc.stdout
        else:
            assert "search.shard_actor_cpus lowered from 1 to 0.66" in proc.stdout
        rows[per_actor] = pq.read_table(out).sort_by([("query_key", "ascending"), ("rank", "ascending")])
        assert rows[per_actor].num_rows == 3000 * 3
    assert rows["0"].column("id").equals(rows["1"].column("id"))


@pytest.mark.ray
def test_search_and_dedup_exit_2_naming_a_tampered_shard(ray_cluster, tmp_path):
    """A shard whose bytes do not match the manifest is bad input (exit 2, one line naming
    the file), whether the shard actors or the driver verify it; no actor is left behind."""
    build_index(tmp_path, shards=2)
    shard = sorted((tmp_path / "indexes" / MODEL).glob("shard_*.index"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    for job, extra in (("search", ["--queries", str(tmp_path), "--shard_actors", "always"]),
                       ("search", ["--queries", str(tmp_path), "--shard_actors", "never"]),
                       ("dedup", ["--shard_actors", "always"])):
        proc = run_job(job, "--root", str(tmp_path), "--model", MODEL, *extra,
                       "--ray_address", ray_cluster.address)
        assert proc.returncode == 2, (job, extra, proc.stdout[-3000:])
        errors = [ln for ln in proc.stdout.splitlines() if " ERROR " in ln]
        assert len(errors) == 1 and shard.name in errors[0], (job, extra, errors)
        assert "Traceback" not in proc.stdout
    assert ray_cluster_cpus() == 2
    import ray

    ray.kill(hold_every_cpu())  # the shard actors of the failed jobs are gone


@pytest.mark.ray
def test_scan_asking_for_a_gpu_on_a_cpu_cluster_stops_before_any_work(ray_cluster, tmp_path):
    build_index(tmp_path, shards=2)
    (tmp_path / "generated").mkdir()
    proc = run_job("scan", "--root", str(tmp_path), "--model", MODEL, "--generated",
                   str(tmp_path / "generated"), "--gpus_per_worker", "1",
                   "--ray_address", ray_cluster.address)
    assert proc.returncode == 2, proc.stdout[-4000:]
    assert "scan.gpus_per_worker = 1" in proc.stdout and "no GPU" in proc.stdout
    assert not (tmp_path / "scans").exists()


def ray_cluster_cpus() -> float:
    import ray

    return ray.cluster_resources().get("CPU", 0)


# ---- stall warnings on the real cluster ---------------------------------------------

class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.seen = threading.Event()

    def emit(self, record):
        self.messages.append(record.getMessage())
        self.seen.set()


@pytest.fixture
def warnings_of_diffrep():
    handler = Collect()
    logger = logging.getLogger("diffrep")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def add_one(x: int) -> int:
    return x + 1


def hold_every_cpu():
    """An actor holding both CPUs of the session cluster (as too many shard actors did)."""
    import ray

    holder = ray.remote(num_cpus=2)(Holder).remote()
    try:  # a job that left an actor behind would make this wait forever: fail instead
        ray.get(holder.ping.remote(), timeout=120)
    except ray.exceptions.GetTimeoutError:
        ray.kill(holder)
        raise AssertionError(f"2 CPUs never came free: something still holds them "
                             f"({ray.available_resources()} of {ray.cluster_resources()})") from None
    return holder


class Holder:
    def ping(self) -> bool:
        return True


def in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


@pytest.mark.ray
def test_executor_explains_tasks_that_cannot_start(ray_cluster, warnings_of_diffrep):
    import ray

    from diffrep.executor import RayExecutor

    holder = hold_every_cpu()
    executor = RayExecutor(num_cpus=1, progress_interval_s=0.2, stall_warning_s=0.5)
    thread, out = in_thread(lambda: executor.map(add_one, [(1,), (2,)]))
    try:
        assert warnings_of_diffrep.seen.wait(JOB_TIMEOUT_S), "no stall warning"
    finally:
        ray.kill(holder)  # the watchdog only explains: the tasks start once the CPUs are free
    thread.join(JOB_TIMEOUT_S)
    assert out == [[2, 3]]
    message = warnings_of_diffrep.messages[0]
    assert "add_one tasks: no unit finished" in message and "2 pending" in message
    assert "each unit needs CPU 1" in message and "free now" in message


def nap(seconds: float) -> None:
    import time

    time.sleep(seconds)


def wait_on_another_task(i: int, log_dir: str) -> int:
    """A task that blocks in ray.get (as a dedup slice task waits on the shard actors),
    writing when it ran."""
    import time

    import ray

    start = time.time()
    ray.get(ray.remote(num_cpus=0)(nap).remote(0.5))
    (Path(log_dir) / f"{i}.txt").write_text(f"{start} {time.time()}")
    return i


def most_at_once(log_dir: Path) -> int:
    spans = [tuple(map(float, f.read_text().split())) for f in log_dir.glob("*.txt")]
    return max(sum(s <= t < e for s, e in spans) for t, _ in spans)


@pytest.mark.ray
def test_executor_runs_no_more_tasks_than_cpus_when_tasks_block(ray_cluster, tmp_path):
    """Ray gives back the CPUs of a task blocked in ray.get and starts more tasks in its
    place: the executor submits at most workers() tasks (2 CPUs / 1) at a time, or
    max_in_flight, and keeps the results in order."""
    from diffrep.executor import RayExecutor

    for limit, expected in ((None, 2), (1, 1)):
        log_dir = tmp_path / f"limit-{limit}"
        log_dir.mkdir()
        executor = RayExecutor(num_cpus=1, max_in_flight=limit)
        assert executor.workers() == 2
        assert executor.map(wait_on_another_task, [(i, str(log_dir)) for i in range(8)]) == list(range(8))
        assert len(list(log_dir.glob("*.txt"))) == 8 and most_at_once(log_dir) == expected


@pytest.mark.ray
def test_actor_pool_explains_actors_waiting_for_a_node(ray_cluster, warnings_of_diffrep):
    import ray

    from diffrep.distributor import run_units

    holder = hold_every_cpu()
    pool = [ray.remote(num_cpus=1)(Holder).remote()]
    thread, out = in_thread(lambda: run_units(pool, ["a"], lambda a, _u: a.ping.remote(),
                                              lambda _u, _v: None, progress_interval_s=0.2,
                                              stall_warning_s=0.5))
    try:
        assert warnings_of_diffrep.seen.wait(JOB_TIMEOUT_S), "no stall warning"
    finally:
        ray.kill(holder)
    thread.join(JOB_TIMEOUT_S)
    assert out == [[]]  # no failure
    assert "1 of 1 actor(s) not running (PENDING_CREATION)" in warnings_of_diffrep.messages[0]
    ray.kill(pool[0])
