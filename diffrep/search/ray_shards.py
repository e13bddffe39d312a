"""Shard actors: the Ray backend of Searcher. Each actor (`ShardGroup`) holds a run of
consecutive index shards, verified and memory-mapped in its own process; a query batch
goes, in one call per actor, to the actors whose shards own its probed lists (every actor
for an index built before list partitioning).

One shard per actor is the default. `shards_per_actor` > 1 gives fewer, larger actors:
where the cluster has fewer CPUs than the index has shards, K one-shard actors share the
CPUs as fractions and interleave on them (context switches, caches), while ceil(K / g)
actors of g shards each get whole CPUs; per batch an actor is called once whatever the
number of its shards asked. Memory: an actor maps its g shards (file-backed pages,
released by the kernel under pressure) and holds one batch's results.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from diffrep.search.index import IndexHandle
from diffrep.search.lists import ListRouter
from diffrep.search.shards import ShardBackend, ShardSearcher, SharedQuantizer, open_shards


def shard_groups(num_shards: int, num_actors: int) -> list[list[int]]:
    """Shards 0..num_shards-1 in `num_actors` runs of consecutive shards, sizes differing
    by at most one (the first runs the larger)."""
    num_actors = max(1, min(num_actors, num_shards))
    base, extra = divmod(num_shards, num_actors)
    out, start = [], 0
    for a in range(num_actors):
        size = base + (a < extra)
        out.append(list(range(start, start + size)))
        start += size
    return out


def actor_count(num_shards: int, shards_per_actor: int) -> int:
    """Actors for `num_shards` shards at most `shards_per_actor` each."""
    return math.ceil(num_shards / max(1, shards_per_actor))


class ShardGroup:
    """The Ray actor class of RayShards: one or more shards (ShardSearcher each) in one
    process. Every method takes and returns lists, one entry per shard asked."""

    def __init__(self, urls: list[str], names: list[str], key: str, manifest: dict | None,
                 base: str | None, threads: int = 0):
        self.shards = [ShardSearcher(u, key, manifest, base, n, threads, defer=True)
                       for u, n in zip(urls, names, strict=True)]
        self.quantizer = SharedQuantizer()
        self._opened = False

    def open(self) -> int:
        """Verify and memory-map every shard (see ShardSearcher.open), one coarse
        quantizer shared by them (SharedQuantizer); their vector count. A restarted
        actor opens on its first call."""
        total, quantizer = open_shards(self.shards)
        self.quantizer.release()  # opened again: no shard uses the one before
        self.quantizer, self._opened = quantizer, True
        return total

    def fan_out(self, method: str, queries: np.ndarray, *args) -> list:
        """`method` ("search" / "range_search") of every shard, on the whole batch."""
        if not self._opened:
            self.open()
        return [getattr(s, method)(queries, *args) for s in self.shards]

    def each(self, method: str, arg, calls: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> list:
        """`method` ("search_lists" / "range_search_lists") of the shards asked: calls are
        (position of the shard in this group, queries, lists, coarse)."""
        if not self._opened:
            self.open()
        return [getattr(self.shards[i], method)(q, arg, lists, coarse) for i, q, lists, coarse in calls]

    def ntotal(self) -> int:
        return sum(s.ntotal() for s in self.shards)


class RayShards(ShardBackend):
    """Ray actors over an index's shards, `shards_per_actor` consecutive shards each; each
    batch goes to the actors owning its probed lists (every actor for an index built
    before list partitioning, or with route=False)."""

    def __init__(self, handle: IndexHandle, num_cpus: float = 1, threads: int = 1, route: bool = True,
                 shards_per_actor: int = 1):
        import ray

        names = handle.shard_files()
        actor = ray.remote(ShardGroup).options(num_cpus=num_cpus, max_restarts=3, max_task_retries=3)
        self.ray = ray
        self.groups = shard_groups(len(names), actor_count(len(names), shards_per_actor))
        self.actors = [actor.remote([handle.shard_url(names[i]) for i in g], [names[i] for i in g],
                                    handle.manifest["key"], handle.manifest, handle.layout.base, threads)
                       for g in self.groups]
        self.router = ListRouter.of(handle) if route else None
        try:  # each actor verifies its shards' sha256 now: a tampered file stops the job here
            ray.get([a.open.remote() for a in self.actors])
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_actors(cls, actors: list, handle: IndexHandle | None = None, route: bool = True) -> RayShards:
        """A backend over shard actors created elsewhere (handles passed to Ray tasks); with
        the index's `handle`, routed by list (each actor's shards are the consecutive run
        shard_groups gives for its place in `actors`)."""
        import ray

        self = cls.__new__(cls)
        self.ray, self.actors = ray, list(actors)
        self.groups = shard_groups(len(handle.shard_files()), len(self.actors)) if handle is not None else None
        self.router = ListRouter.of(handle) if handle is not None and route else None
        return self

    def close(self) -> None:
        """Kill the shard actors (their CPUs go back to the cluster)."""
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []

    def num_shards(self) -> int:
        return sum(map(len, self.groups)) if self.groups is not None else len(self.actors)

    def _fan_out(self, method, q, *args):
        ref = self.ray.put(q)
        per_actor = self.ray.get([a.fan_out.remote(method, ref, *args) for a in self.actors])
        return [r for results in per_actor for r in results]

    def _owner(self) -> dict[int, tuple[int, int]]:
        """shard -> (its actor, its place in the actor's group)."""
        return {s: (a, i) for a, g in enumerate(self.groups) for i, s in enumerate(g)}

    def _stream(self, runs, make_job, method, arg, in_flight: int = 2):
        """(job, result) of each (shard, rows) run as it completes: one run per call, at
        most `in_flight` calls queued per actor (so every actor stays busy while the
        driver merges), each run's job made only when it is sent."""
        owner = self._owner()
        queues: dict[int, deque] = {}
        for shard, rows in runs:
            queues.setdefault(owner[shard][0], deque()).append((shard, rows))
        pending: dict = {}

        def send(actor: int) -> None:
            shard, rows = queues[actor].popleft()
            job = make_job(shard, rows)
            call = [(owner[shard][1], job.queries, job.lists, job.coarse)]
            pending[self.actors[actor].each.remote(method, arg, call)] = (actor, job)

        for actor, queue in queues.items():
            for _ in range(min(in_flight, len(queue))):
                send(actor)
        while pending:
            [ref], _ = self.ray.wait(list(pending), num_returns=1)
            actor, job = pending.pop(ref)
            if queues[actor]:
                send(actor)
            yield job, self.ray.get(ref)[0]

    def _each(self, jobs, method, arg):
        owner = self._owner()
        calls: dict[int, list] = {}
        order: dict[int, list[int]] = {}
        for n, j in enumerate(jobs):
            a, i = owner[j.shard]
            calls.setdefault(a, []).append((i, j.queries, j.lists, j.coarse))
            order.setdefault(a, []).append(n)
        refs = {a: self.actors[a].each.remote(method, arg, c) for a, c in calls.items()}
        out: list = [None] * len(jobs)
        for a, results in zip(refs, self.ray.get(list(refs.values())), strict=True):
            for n, r in zip(order[a], results, strict=True):
                out[n] = r
        return out
