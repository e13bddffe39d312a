"""What every benchmark shares: memory measured one way, results written one way, and
the synthetic corpus (diffrep.synthetic). No benchmark imports from tests/.

Memory: `peak_rss_mb()` is this process's peak resident set (the kernel's VmHWM, which
writing 5 to /proc/self/clear_refs resets); `WorkerRss` samples the driver's and every Ray worker's RSS and
RssAnon in a thread (RssAnon: heap, without the pages of memory-mapped files that RSS
also counts). Results: `write_results(path, results)` prints them and writes them as
JSON, atomically.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time

from diffrep.synthetic import clustered_vectors, write_embeddings  # noqa: F401 - shared

__all__ = ["WorkerRss", "clustered_vectors", "peak_rss_mb", "rss_mb", "write_embeddings",
           "write_results"]


def peak_rss_mb() -> float:
    """This process's peak RSS so far (VmHWM), MB (2**20 bytes)."""
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb(pid: int | None = None) -> float:
    """A process's current RSS (default: this one), MB; 0 if unreadable."""
    return _status_mb("VmRSS", pid)


def _status_mb(field: str, pid: int | None = None) -> float:
    try:
        with open(f"/proc/{pid or os.getpid()}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measured_commit() -> str:
    """HEAD's commit, with "+uncommitted changes" when the working tree differs from it
    (the figures then measured code that commit does not hold)."""
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return f"{head}+uncommitted changes" if dirty else head


def write_results(path: str | None, results: dict) -> None:
    """Print the results and, with a path, write them there as JSON (atomically), with
    the commit they measured (`commit`, unless the benchmark set it)."""
    results = {"commit": measured_commit(), **results}
    text = json.dumps(results, indent=2)
    print(text)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)


def _status_bytes(pid: int) -> dict[str, int] | None:
    """VmRSS, RssAnon and RssFile of a process from /proc/<pid>/status, in bytes; None
    when it is gone."""
    out = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in out:
                    out[name] = int(line.split()[1]) * 1024
    except OSError:
        return None
    return out


def rss_parts(pid: int) -> tuple[int, int]:
    """A process's (RssAnon, RssFile) in bytes: its heap, and the pages of files it
    memory-maps (which RSS also counts and the kernel can drop); zeros if unreadable."""
    status = _status_bytes(pid) or {"RssAnon": 0, "RssFile": 0}
    return status["RssAnon"], status["RssFile"]


def proc_sample(pid: int) -> tuple[str, int, int, int] | None:
    """A live process's (title: its command line's first word, as setproctitle sets it,
    VmRSS, RssAnon, RssFile) in bytes; None when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return None
    status = _status_bytes(pid)
    return None if status is None else (title, status["VmRSS"], status["RssAnon"], status["RssFile"])


def raylet_pids(cluster) -> set[int]:
    """Pids of the raylets of a ray.cluster_utils.Cluster (for WorkerRss(raylets=...))."""
    return {info.process.pid for node in cluster.list_all_nodes()
            for info in node.all_processes.get("raylet", [])}


def rss_anon(pid: int) -> int:
    return rss_parts(pid)[0]


def task_type(title: str) -> str:
    """A Ray worker's task type from its process title ("ray::dedup_slice",
    "ray::ShardSearcher.range_search_lists()"): the part after "ray::" up to "(" or "."."""
    name = title.split("ray::", 1)[-1]
    for sep in ("(", ".", " "):
        name = name.split(sep, 1)[0]
    return name or "?"


class WorkerRss:
    """Peak RSS and RssAnon of the driver and of Ray worker processes (names starting
    'ray::'), sampled in a thread; also, over the samples, the peak of the RssAnon summed
    over all of them (file-backed pages, e.g. a memory-mapped index shared by processes,
    are left out of the sum so they are not counted once per process) and, per task type,
    the most processes of that type running at once and the largest RssAnon of a worker
    idle after running one (what a reused worker keeps of it). `raylets`: pids of the measured
    cluster's raylets; when given, only Ray processes descending from one of them count
    (another Ray cluster on the machine, e.g. a second benchmark, is left out).

    Workers are found every `interval_s` (a walk over every process) and read every
    `sample_s` (their /proc status and title only: ~50 us a process), so a task's peak
    that lasts a few tens of milliseconds is seen; at 0.2 s it was often missed (a 1M
    build's add task peaked at 247 or 281 MB RssAnon in two runs of the same code)."""

    def __init__(self, interval_s: float = 0.2, raylets: set[int] | None = None, sample_s: float = 0.02):
        import psutil

        self.psutil, self.interval_s, self.sample_s = psutil, interval_s, sample_s
        self.raylets = raylets
        self._ours: dict[int, bool] = {}  # pid -> descends from one of `raylets`
        self._workers: set[int] = set()
        self.peak: dict[int, int] = {}
        self.driver_pid: int | None = None
        self.driver_peak = self.driver_peak_anon = 0
        self.peak_anon: dict[int, int] = {}
        self.by_task: dict[str, dict[str, int]] = {}  # task type -> peak rss / anon / file
        self.total_anon_peak = 0
        self.at_once: dict[str, int] = {}  # task type -> most processes at once
        # what a reused worker keeps: its RssAnon while idle, by the task type it ran last
        self._last_task: dict[int, str] = {}
        self.idle_after: dict[str, int] = {}  # task type -> largest idle RssAnon after it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_discovery = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_discovery:
                self._discover()
                next_discovery = time.monotonic() + self.interval_s
            self._sample()
            self._stop.wait(self.sample_s)

    def _discover(self) -> None:
        workers = set()
        for p in self.psutil.process_iter(["name", "cmdline"]):
            try:
                name, cmd = p.info["name"] or "", " ".join(p.info["cmdline"] or [])
                if p.pid != self.driver_pid and (name.startswith("ray::") or "default_worker.py" in cmd) \
                        and self._in_cluster(p):
                    workers.add(p.pid)
            except (self.psutil.Error, AttributeError):
                continue
        self._workers = workers

    def _sample(self) -> None:
        total_anon, running = 0, {}
        if self.driver_pid is not None and (driver := proc_sample(self.driver_pid)) is not None:
            _, rss, anon, _ = driver
            self.driver_peak, self.driver_peak_anon = max(self.driver_peak, rss), max(self.driver_peak_anon, anon)
            total_anon += anon
        for pid in self._workers:
            sample = proc_sample(pid)
            if sample is None:
                continue
            title, rss, anon, file = sample
            self.peak[pid] = max(self.peak.get(pid, 0), rss)
            self.peak_anon[pid] = max(self.peak_anon.get(pid, 0), anon)
            total_anon += anon
            if title.startswith("ray::IDLE") and pid in self._last_task:
                last = self._last_task[pid]
                self.idle_after[last] = max(self.idle_after.get(last, 0), anon)
            if title.startswith("ray::") and "IDLE" not in title:
                kind = task_type(title)
                self._last_task[pid] = kind
                running[kind] = running.get(kind, 0) + 1
                peak = self.by_task.setdefault(kind, {"rss": 0, "anon": 0, "file": 0})
                peak["rss"], peak["anon"] = max(peak["rss"], rss), max(peak["anon"], anon)
                peak["file"] = max(peak["file"], file)
        self.total_anon_peak = max(self.total_anon_peak, total_anon)
        for kind, n in running.items():
            self.at_once[kind] = max(self.at_once.get(kind, 0), n)

    def _in_cluster(self, p) -> bool:
        if self.raylets is None:
            return True
        if p.pid not in self._ours:
            self._ours[p.pid] = any(a.pid in self.raylets for a in p.parents())
        return self._ours[p.pid]

    def __enter__(self) -> WorkerRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def largest_mb(self) -> float:
        return max(self.peak.values(), default=0) / 2**20
