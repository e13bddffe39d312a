"""Executors run a function over work items and decide where: in this process, or as
Ray tasks spread over the cluster (datatrove's split between blocks and executors).

The function must be importable (a module-level function); shared arguments are sent
once (one Ray object) and passed by keyword to every call.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Sequence
from typing import Any

from diffrep import faults
from diffrep.progress import Progress
from diffrep.resources import STALL_WARNING_S, StallWatch


def release_memory() -> None:
    """Give the heap a finished task freed back to the OS. pyarrow's pool and glibc's
    malloc arenas keep freed memory for reuse, so without this a Ray worker process that
    is reused for task after task keeps the high-water mark of every task it ran."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def run_and_release(fn: Callable, *args, **kwargs) -> Any:
    """`fn(*args, **kwargs)`, then release_memory() (the body of every Ray task)."""
    try:
        return fn(*args, **kwargs)
    finally:
        release_memory()


class LocalExecutor:
    """Runs items one after another in this process."""

    def workers(self) -> int:
        """Items that run at once."""
        return 1

    def map(self, fn: Callable, items: Sequence[tuple], shared: dict[str, Any] | None = None,
            progress: Progress | None = None, count: Callable[[Any], int] | None = None) -> list:
        results = []
        for args in items:
            results.append(fn(*args, **(shared or {})))
            if progress:
                progress.update(count(results[-1]) if count else 0)
                progress.report(every_s=10.0)
        if progress:
            progress.finish()
        return results


class RayExecutor:
    """Runs items as Ray tasks (`num_cpus` each), retried on errors and node deaths.

    At most `workers()` tasks are submitted at a time (`max_in_flight` lowers it), the
    next when one ends: Ray gives back the CPUs of a task blocked in `ray.get` (a dedup or
    scan task waiting on the shard actors), so with every item submitted at once it starts
    more tasks than there are CPUs, each holding its working memory (measured: 10 dedup
    slice tasks of 1.7 GB at once on 2 CPUs at 10M vectors).

    Each task releases the memory it freed when it ends (release_memory), so reused
    workers do not creep.

    When no task has finished for `stall_warning_s` seconds and no further one can start
    (its CPUs are not free), a WARNING says what the tasks need against what is free."""

    def __init__(self, num_cpus: float = 1, max_attempts: int = 3, progress_interval_s: float = 10.0,
                 stall_warning_s: float = STALL_WARNING_S, max_in_flight: int | None = None):
        self.num_cpus, self.max_attempts = num_cpus, max_attempts
        self.progress_interval_s, self.stall_warning_s = progress_interval_s, stall_warning_s
        self.max_in_flight = max_in_flight

    def workers(self) -> int:
        """Tasks the whole cluster runs at once (its CPUs over `num_cpus`), at least 1."""
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 0) // self.num_cpus))

    def map(self, fn: Callable, items: Sequence[tuple], shared: dict[str, Any] | None = None,
            progress: Progress | None = None, count: Callable[[Any], int] | None = None) -> list:
        import ray

        remote = ray.remote(run_and_release).options(num_cpus=self.num_cpus, max_retries=self.max_attempts - 1,
                              retry_exceptions=True, name=getattr(fn, "__name__", "task"))
        shared_refs = {k: ray.put(v) for k, v in (shared or {}).items()}
        window = max(1, min(self.workers(), self.max_in_flight or len(items)))
        position: dict[Any, int] = {}
        results: list[Any] = [None] * len(items)
        pending: list = []
        queued = 0

        def submit() -> None:
            nonlocal queued
            while queued < len(items) and len(pending) < window:
                ref = remote.remote(fn, *items[queued], **shared_refs)
                position[ref] = queued
                pending.append(ref)
                queued += 1

        submit()
        watch = StallWatch(f"{getattr(fn, '__name__', 'tasks')} tasks", self.stall_warning_s,
                           demand={"CPU": self.num_cpus})
        while pending:
            done, pending = ray.wait(pending, num_returns=1,
                                     timeout=min(self.progress_interval_s, self.stall_warning_s))
            if done:
                watch.progressed()
            watch.check(len(pending) + len(items) - queued)
            for ref in done:
                results[position[ref]] = ray.get(ref)  # raises after max_attempts
                if progress:
                    progress.update(count(results[position[ref]]) if count else 0)
                faults.unit_finished()
            submit()
            if progress:
                progress.report(every_s=self.progress_interval_s)
        if progress:
            progress.finish()
        return results
