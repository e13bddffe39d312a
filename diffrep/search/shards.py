"""Shard backends of a Searcher: `ShardSearcher` (one shard file, verified and
memory-mapped), `ShardBackend` (search and range search over shards, routed by IVF list
when the index has a router, else fanned out to every shard) and `LocalShards` (every
shard in this process, for small indexes and tests). diffrep.search.ray_shards.RayShards
is the same backend over Ray actors.

Memory: each shard is memory-mapped, not read; one batch's results in flight.
"""

from __future__ import annotations

import faiss
import numpy as np

from diffrep.index.build import read_index, search_params
from diffrep.index.coarse import stored_ef
from diffrep.index.manifest import verify
from diffrep.index.probes import centroids_view
from diffrep.progress import PartTimes
from diffrep.search.index import IndexHandle
from diffrep.search.lists import (
    Assignment,
    ListRouter,
    RoutingStats,
    range_search_lists,
    search_lists,
    split_index,
)


class ShardSearcher:
    """One shard file, verified against the manifest and memory-mapped. Used in-process,
    and inside the Ray actors of RayShards (ShardGroup). `search` / `range_search` run the shard's own
    coarse quantizer (the fan-out of indexes built before list partitioning); the `_lists`
    methods scan only the lists a ListRouter assigned (diffrep.search.lists)."""

    def __init__(self, url: str, key: str, manifest: dict | None = None, base: str | None = None,
                 name: str | None = None, threads: int = 0, defer: bool = False):
        self._where = (url, manifest, base, name, threads)
        self.key = key
        self._index = self._ivf = self._ef = None
        if not defer:
            self.open()

    @property
    def index(self):
        if self._index is None:  # a restarted actor opens again on its first call
            self.open()
        return self._index

    @property
    def ivf(self):
        self.index  # noqa: B018 - opens the shard if not yet open
        return self._ivf

    def open(self) -> int:
        """Verify the shard file (with a manifest) and memory-map it; returns its vector
        count. An actor opens in a method call, not in its constructor, so that a tampered
        file comes back as the IndexIntegrityError itself (an error raised in an actor's
        constructor arrives as the actor's death)."""
        url, manifest, base, name, threads = self._where
        if manifest is not None:
            verify(base, manifest, [name])
        if threads:
            faiss.omp_set_num_threads(threads)
        self._index = read_index(url, mmap=True)
        self._ivf = split_index(self._index)[1]
        self._ef = stored_ef(self._index)
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        faiss.ParameterSpace().set_index_parameters(self.index, search_params(self.key, nprobe, self._ef))
        return self.index.search(np.ascontiguousarray(queries, np.float32), k)

    def range_search(self, queries: np.ndarray, radius: float, nprobe: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        faiss.ParameterSpace().set_index_parameters(self.index, search_params(self.key, nprobe, self._ef))
        return self.index.range_search(np.ascontiguousarray(queries, np.float32), radius)

    def search_lists(self, queries: np.ndarray, k: int, lists: np.ndarray, coarse: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        return search_lists(self.ivf, queries, k, lists, coarse)

    def range_search_lists(self, queries: np.ndarray, radius: float, lists: np.ndarray,
                           coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return range_search_lists(self.ivf, queries, radius, lists, coarse)

    def ntotal(self) -> int:
        return int(self.index.ntotal)


class SharedQuantizer:
    """One coarse quantizer for the shards of one index opened in one process. Each shard
    file carries its own copy (nlist x dim floats and HNSW links: 15 MB at 30,000 x 64,
    ~0.6 GB at 2^18 x 512), read into memory though a routed search only reads its
    centroids (for PQ residuals). `adopt` each shard as it is opened: the first one's copy
    becomes the shared one, a later one with equal centroids is pointed at it and its own
    copy freed, so a process holds at most two copies at any time. `release` it once no
    shard uses it (the shards were opened again, or are gone)."""

    def __init__(self):
        self.index: faiss.Index | None = None

    def adopt(self, ivf: faiss.IndexIVF) -> bool:
        """Share the shard's quantizer; False (the shard keeps its own) where the centroids
        differ or are not stored flat."""
        try:
            centroids = centroids_view(ivf.quantizer)
        except TypeError:  # neither a flat nor an HNSW-flat quantizer
            return False
        if self.index is None:  # the first shard's copy becomes the shared one, freed by release()
            if ivf.own_fields:
                self.index, ivf.own_fields = ivf.quantizer, False
            else:  # owned elsewhere: share a copy
                self.index = faiss.clone_index(ivf.quantizer)
                ivf.quantizer = self.index
            self._centroids = centroids_view(self.index)
        elif np.array_equal(centroids, self._centroids):
            own, owned = ivf.quantizer, ivf.own_fields
            ivf.quantizer, ivf.own_fields = self.index, False
            if owned:  # freed here; its proxy does not own it, so nothing frees it twice
                faiss.Index.__swig_destroy__(own)
        else:
            return False
        return True

    def release(self) -> None:
        """Free the shared copy (no shard may use it any more)."""
        if self.index is not None:
            faiss.Index.__swig_destroy__(self.index)
            self.index = None


def open_shards(shards: list[ShardSearcher]) -> tuple[int, SharedQuantizer]:
    """Open (ShardSearcher.open) each shard in turn, each adopting one shared coarse
    quantizer as it opens: (their vector count, the quantizer)."""
    quantizer, total = SharedQuantizer(), 0
    for shard in shards:
        total += shard.open()
        quantizer.adopt(shard.ivf)
    return total, quantizer


class ShardBackend:
    """A backend's search and range search: routed by list when the index has a router,
    else fanned out to every shard. Either way one (sims, ids) or (lims, sims, ids) per
    shard asked, in the batch's shape."""

    router: ListRouter | None = None

    @property
    def stats(self) -> RoutingStats:
        """Shard calls and quantizer searches so far (a fan-out: every shard, each
        searching its own quantizer for every query)."""
        if self.router is not None:
            return self.router.stats
        if not hasattr(self, "_fan_out_stats"):
            self._fan_out_stats = RoutingStats()
        return self._fan_out_stats

    def _count_fan_out(self, n: int) -> None:
        shards = self.num_shards()
        self.stats.count(n, quantizer_searches=n * shards, shard_calls=shards, query_shard_pairs=n * shards)

    @property
    def times(self) -> PartTimes:
        """Wall seconds by part of the searches so far: assign (coarse assignment and
        planning), shards (waiting for shard calls), merge (top-k merge), rerank (Searcher)."""
        if not hasattr(self, "_times"):
            self._times = PartTimes()
        return self._times

    def assign(self, queries: np.ndarray, nprobe: int) -> Assignment | None:
        """The queries' coarse assignment (ListRouter.assign) for a later search(...,
        assigned=): made ahead, e.g. in another thread while the shards search the last
        window. None on an index that fans out (each shard assigns its own)."""
        if self.router is None:
            return None
        with self.times.part("assign"):
            return self.router.assign(np.ascontiguousarray(queries, np.float32), nprobe)

    def search(self, queries, k, nprobe, batch: int | None = None,
               assigned: Assignment | None = None):
        """Per-shard top-k results to merge (one, already merged, when routed). With
        `batch` and more queries than that on a list-partitioned index, the queries are a
        window searched shard by shard (ListRouter.shard_runs: calls of up to `batch` rows
        each) and merged per query; memory: one (queries, k) result, plus the calls in flight.
        `assigned`: the queries' assign() made already."""
        q = np.ascontiguousarray(queries, np.float32)
        if self.router is None:
            self._count_fan_out(len(q))
            with self.times.part("shards"):
                return self._fan_out("search", q, k, nprobe)
        if batch is not None and len(q) > batch:
            return [self._search_runs(q, k, nprobe, batch, assigned)]
        with self.times.part("assign"):
            jobs = self.router.plan(q, nprobe, None if assigned is None else assigned[1:])
        with self.times.part("shards"):
            results = self._each(jobs, "search_lists", k)
        with self.times.part("merge"):
            return [ListRouter.merge_topk(len(q), jobs, results, k)]

    def _search_runs(self, q: np.ndarray, k: int, nprobe: int, batch: int,
                     assigned: Assignment | None) -> tuple[np.ndarray, np.ndarray]:
        with self.times.part("assign"):
            x, probed, coarse = self.router.assign(q, nprobe) if assigned is None else assigned
            runs = self.router.shard_runs(probed, batch)
        best_s = np.full((len(q), k), -np.inf, np.float32)
        best_i = np.full((len(q), k), -1, np.int64)
        results = self._stream(runs, lambda s, rows: self.router.job(s, rows, x, probed, coarse),
                               "search_lists", k)
        while True:
            with self.times.part("shards"):
                done = next(results, None)
            if done is None:
                return best_s, best_i
            with self.times.part("merge"):
                ListRouter.merge_rows(best_s, best_i, *done, k)

    def range_search(self, queries, radius, nprobe, assigned=None, shard=None):
        q = np.ascontiguousarray(queries, np.float32)
        if self.router is None:
            if shard is not None:
                raise ValueError("a search of one shard needs a list-partitioned index")
            self._count_fan_out(len(q))
            return self._fan_out("range_search", q, radius, nprobe)
        jobs = self.router.plan(q, nprobe, assigned, shard)
        return ListRouter.scatter_range(len(q), jobs, self._each(jobs, "range_search_lists", radius))


class LocalShards(ShardBackend):
    """Every shard in this process (verification done by open_index). route=False fans
    every query out to every shard even when the index is list-partitioned."""

    def __init__(self, handle: IndexHandle, route: bool = True):
        key = handle.manifest["key"]
        self.shards = [ShardSearcher(handle.shard_url(n), key, defer=True) for n in handle.shard_files()]
        _, self.quantizer = open_shards(self.shards)
        self.router = ListRouter.of(handle) if route else None

    def num_shards(self) -> int:
        return len(self.shards)

    def _fan_out(self, method, q, *args):
        return [getattr(s, method)(q, *args) for s in self.shards]

    def _each(self, jobs, method, arg):
        return [getattr(self.shards[j.shard], method)(j.queries, arg, j.lists, j.coarse) for j in jobs]

    def _stream(self, runs, make_job, method, arg):
        """(job, result) of each (shard, rows) run, one run at a time."""
        for shard, rows in runs:
            job = make_job(shard, rows)
            yield job, getattr(self.shards[shard], method)(job.queries, arg, job.lists, job.coarse)


def wants_shard_actors(mode: str, handle: IndexHandle) -> bool:
    """The jobs' `shard_actors` setting: "always", "never", or "auto" (actors when the
    index has more than one shard)."""
    return mode == "always" or (mode == "auto" and len(handle.shard_files()) > 1)
