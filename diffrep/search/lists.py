"""One coarse assignment per query batch, sent only to the shards that own the probed lists.

Shards of a list-partitioned index (diffrep.index.lists) each own a run of IVF lists. The
router searches the coarse quantizer once for the whole batch (the trained empty index of
the manifest: nlist centroids, the HNSW links when the key has them, the pre-transform;
a fixed size whatever the corpus), groups every (query, probed list) by the shard that
owns the list, and gives each shard only its queries with their probed lists, the others
masked (-1). Each shard then scans exactly those lists (faiss's search_preassigned and
range_search_preassigned); each shard's top-k is merged into the rows it was asked for
(one (batch, k) result, whatever the shard count), and its range hits come back in the
batch's shape, as a fan-out's do.

Per query, the shards asked are at most the lists it probes (plus one per probed list
that straddles a cut), not the shard count. Indexes committed before list partitioning
have no list ranges: `ListRouter.of` returns None and searches fan out as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import faiss
import numpy as np

from diffrep import storage
from diffrep.index.build import deserialize, search_params
from diffrep.index.coarse import apply_transforms, pre_transforms, stored_ef
from diffrep.index.probes import centroids_view, stored_assignment
from diffrep.index.vectors import merge_topk
from diffrep.search.index import IndexHandle

# a query batch's coarse assignment (ListRouter.assign): transformed queries, probed lists
# (Q, nprobe) int64, coarse similarities
Assignment = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class ShardJob:
    """What one shard searches for a batch: `rows` (sorted) of the batch, their
    transformed vectors, and their probed lists (-1 where another shard owns the list)
    with the coarse similarities."""

    shard: int
    rows: np.ndarray
    queries: np.ndarray
    lists: np.ndarray
    coarse: np.ndarray


@dataclass
class RoutingStats:
    """Counts since the router was made: batches, queries, quantizer searches (one per
    query), shard calls, and (query, shard) pairs asked."""

    batches: int = 0
    queries: int = 0
    quantizer_searches: int = 0
    shard_calls: int = 0
    query_shard_pairs: int = 0
    per_batch_calls: list[int] = field(default_factory=list, repr=False)
    # the search job assigns one window in a thread while another plans the last one's calls
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_searches(self, queries: int) -> None:
        """Quantizer searches made for `queries` queries (ListRouter.assign)."""
        with self._lock:
            self.quantizer_searches += queries

    def count(self, queries: int, quantizer_searches: int, shard_calls: int, query_shard_pairs: int,
              batches: int = 1) -> None:
        """One batch of queries, or `batches` of them planned at once (their calls per
        batch kept as the mean, rounded up)."""
        with self._lock:
            self.batches += batches
            self.queries += queries
            self.quantizer_searches += quantizer_searches
            self.shard_calls += shard_calls
            self.query_shard_pairs += query_shard_pairs
            self.per_batch_calls.append(-(-shard_calls // max(batches, 1)))
            if len(self.per_batch_calls) > 1024:  # keep the maximum, not a list that grows
                self.per_batch_calls = [max(self.per_batch_calls)]

    def add(self, other: dict) -> None:
        """Add another's as_dict() (e.g. a task's) to these counts."""
        for key in ("batches", "queries", "quantizer_searches", "shard_calls", "query_shard_pairs"):
            setattr(self, key, getattr(self, key) + other.get(key, 0))
        self.per_batch_calls = [max(self.per_batch_calls + [other.get("max_shard_calls_per_batch", 0)])]

    def as_dict(self) -> dict:
        return {"batches": self.batches, "queries": self.queries,
                "quantizer_searches": self.quantizer_searches, "shard_calls": self.shard_calls,
                "query_shard_pairs": self.query_shard_pairs,
                "max_shard_calls_per_batch": max(self.per_batch_calls, default=0),
                "shard_calls_per_batch": round(self.shard_calls / max(self.batches, 1), 2),
                "quantizer_searches_per_query": round(self.quantizer_searches / max(self.queries, 1), 2),
                "shards_per_query": round(self.query_shard_pairs / max(self.queries, 1), 2)}


def split_index(index: faiss.Index) -> tuple[list, faiss.IndexIVF]:
    """(the pre-transform's vector transforms, in order; the IVF index inside)."""
    return pre_transforms(index), faiss.extract_index_ivf(index)


class ListRouter:
    """Coarse assignment and per-shard routing for one list-partitioned index."""

    def __init__(self, trained: faiss.Index, key: str, ranges: list[tuple[int, int]]):
        self.index, self.key = trained, key
        self.transforms, self.ivf = split_index(trained)
        try:  # a view of the quantizer's storage (no copy): what stored probes are scored against
            self.centroids = centroids_view(self.ivf.quantizer)
        except TypeError:
            self.centroids = None
        self.first = np.array([r[0] for r in ranges], np.int64)
        self.last = np.array([r[1] for r in ranges], np.int64)
        self.stats = RoutingStats()
        self.ef = stored_ef(trained)  # the build's calibrated efSearch (None: not HNSW)
        self._nprobe = None

    @classmethod
    def of(cls, handle: IndexHandle) -> ListRouter | None:
        """The router of a committed index (its trained.index, verified by open_index),
        or None for an index whose shards are not partitioned by list."""
        if handle.manifest.get("partition") != "lists":
            return None
        trained = deserialize(np.frombuffer(storage.read_bytes(handle.layout.trained), np.uint8))
        ranges = [(s["first_list"], s["last_list"]) for s in handle.manifest["shards"]]
        return cls(trained, handle.manifest["key"], ranges)

    def transform(self, queries: np.ndarray) -> np.ndarray:
        """The queries through the index's pre-transforms (the quantizer's input)."""
        return apply_transforms(self.transforms, queries)

    def assign(self, queries: np.ndarray, nprobe: int) -> Assignment:
        """(transformed queries, probed lists (Q, nprobe) int64, coarse similarities); one
        quantizer search per query, counted in `stats`."""
        if nprobe != self._nprobe:
            faiss.ParameterSpace().set_index_parameters(self.index, search_params(self.key, nprobe, self.ef))
            self._nprobe = nprobe
        x = self.transform(queries)
        coarse, probed = self.ivf.quantizer.search(x, min(nprobe, self.ivf.nlist))
        self.stats.count_searches(len(x))
        return x, probed, coarse

    def can_use_stored(self, stored_probes: int, nprobe: int) -> bool:
        """Whether indexed vectors' stored probes (diffrep.index.probes; `stored_probes`
        per vector) serve a search at `nprobe`: enough of them, and centroids to score
        them by inner product."""
        return (self.centroids is not None and self.ivf.metric_type == faiss.METRIC_INNER_PRODUCT
                and stored_probes >= min(nprobe, self.ivf.nlist))

    def assign_stored(self, queries: np.ndarray, probes: np.ndarray, nprobe: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(probed lists, coarse similarities) of indexed vectors from their stored probes
        (the add's own quantizer search): no quantizer search. Check can_use_stored first."""
        return stored_assignment(self.transform(queries), probes, self.centroids, min(nprobe, self.ivf.nlist))

    def plan(self, queries: np.ndarray, nprobe: int,
             assigned: tuple[np.ndarray, np.ndarray] | None = None, shard: int | None = None
             ) -> list[ShardJob]:
        """The shard jobs of one batch: one quantizer search for every query, then each
        shard gets the queries that probe one of its lists. `assigned`: the queries'
        (probed lists, coarse similarities) made already (the dedup job's: from
        assign_stored, or an assign() of its whole slice). `shard`: only that shard's job,
        for a run of shard_runs (counted there, not here)."""
        if assigned is None:
            x, probed, coarse = self.assign(queries, nprobe)
        else:
            x, (probed, coarse) = self.transform(queries), assigned
        jobs = []
        for s in range(len(self.first)) if shard is None else [shard]:
            rows = np.nonzero(self.owns(s, probed).any(axis=1))[0]
            if len(rows):
                jobs.append(self.job(s, rows, x, probed, coarse))
        if shard is None:
            self.stats.count(len(x), quantizer_searches=0, shard_calls=len(jobs),  # searches: in assign
                             query_shard_pairs=sum(len(j.rows) for j in jobs))
        return jobs

    def owns(self, shard: int, probed: np.ndarray) -> np.ndarray:
        """Which of `probed` (lists, any shape) the shard owns."""
        return (probed >= self.first[shard]) & (probed <= self.last[shard])

    def job(self, shard: int, rows: np.ndarray, x: np.ndarray, probed: np.ndarray, coarse: np.ndarray
            ) -> ShardJob:
        """The shard's job for `rows` of transformed queries `x` with their probed lists and
        coarse similarities: the lists of other shards masked (-1)."""
        lists = probed[rows]
        return ShardJob(shard, rows, x[rows], np.where(self.owns(shard, lists), lists, -1), coarse[rows])

    def shard_runs(self, probed: np.ndarray, batch: int) -> list[tuple[int, np.ndarray]]:
        """A whole query set's shard calls: dedup's slice (each (query, hit) is found by the
        one shard that owns the hit's list, so no merge per query) and a top-k search's
        window of batches (merged per query over the window: ShardBackend.search in diffrep.search.shards).
        `probed`: (queries, nprobe) lists, -1 for none. Returns (shard, rows) runs: for each
        shard in turn, the rows that probe one of its lists, in their order, at most `batch`
        per run. Every (query, owner shard) pair is in exactly one run, so the calls are
        about queries x shards per query / batch, plus one per shard, and each carries a
        full batch; a batch-by-batch plan() pays a call for every shard that any query of
        the batch touches (20.8 of 30 shards at 30M, docs/scaling.md). Memory: ~60 bytes per
        (query, probe), transient, and 8 per (query, owner) returned. Counted in `stats` as ceil(queries / batch) batches."""
        n = len(probed)
        lists = probed.reshape(-1)
        valid = lists >= 0
        row = np.repeat(np.arange(n, dtype=np.int64), probed.shape[1])[valid]
        lists = lists[valid]
        # a list's owners: shards lo..hi-1 (two where a cut splits a large list)
        lo = np.searchsorted(self.last, lists, side="left")
        owners = np.searchsorted(self.first, lists, side="right") - lo
        offset = np.arange(owners.sum()) - np.repeat(np.cumsum(owners) - owners, owners)
        owner = np.repeat(lo, owners) + offset
        pairs = np.unique(owner * n + np.repeat(row, owners))  # by owner, then row: each (query, owner) once
        bounds = np.searchsorted(pairs, np.arange(len(self.first) + 1, dtype=np.int64) * n)
        runs = [(s, pairs[first:end][start:start + batch] - s * n)
                for s, (first, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
                for start in range(0, end - first, batch)]
        self.stats.count(n, quantizer_searches=0, shard_calls=len(runs), query_shard_pairs=len(pairs),
                         batches=-(-n // batch))
        return runs

    @staticmethod
    def merge_topk(n: int, jobs: list[ShardJob], results: list[tuple[np.ndarray, np.ndarray]],
                   k: int) -> tuple[np.ndarray, np.ndarray]:
        """The batch's (sims, ids) (n, k): each shard's top-k merged into the rows it was
        asked for, one job at a time (ties: smaller id first; rows no shard was asked:
        -inf / -1). Memory and work follow the (query, shard) pairs, not the shards: one
        (n, k) result, where a per-shard (n, k) each merged at once cost shards x n x k
        (8,192 x 100 x 30 entries sorted per batch at 30 shards)."""
        best_s = np.full((n, k), -np.inf, np.float32)
        best_i = np.full((n, k), -1, np.int64)
        for job, result in zip(jobs, results, strict=True):
            ListRouter.merge_rows(best_s, best_i, job, result, k)
        return best_s, best_i

    @staticmethod
    def merge_rows(best_s: np.ndarray, best_i: np.ndarray, job: ShardJob,
                   result: tuple[np.ndarray, np.ndarray], k: int) -> None:
        """Merge one shard's (sims, ids) top-k (faiss's: sorted by similarity) into
        `best_s` / `best_i` (n, k), in place, at the job's rows. A row that holds nothing
        yet takes the shard's hits as they are when they have no tied similarities (the
        order a merge would give: most rows of a search, all of them at one shard); the
        others are merged (ties: smaller id first; no result last)."""
        sims, ids = result
        sims = np.where(ids < 0, -np.inf, sims)
        rows = job.rows
        direct = (best_i[rows, 0] < 0) & ~(sims[:, 1:] == sims[:, :-1]).any(axis=1)
        best_s[rows[direct]], best_i[rows[direct]] = sims[direct], ids[direct]
        if not direct.all():
            rest, part = rows[~direct], (sims[~direct], ids[~direct])
            best_s[rest], best_i[rest] = merge_topk([(best_s[rest], best_i[rest]), part], k)

    @staticmethod
    def scatter_range(n: int, jobs: list[ShardJob], results: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
                      ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each shard's (lims, sims, ids) in the batch's shape (rows are sorted, so the
        hits stay in query order)."""
        out = []
        for job, (lims, sims, ids) in zip(jobs, results, strict=True):
            counts = np.zeros(n, np.int64)
            counts[job.rows] = np.diff(lims)
            out.append((np.concatenate([[0], np.cumsum(counts)]), sims, ids))
        return out


def search_lists(ivf: faiss.IndexIVF, queries: np.ndarray, k: int, lists: np.ndarray,
                 coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of `queries` within the given lists of one shard (a ShardJob's)."""
    ivf.nprobe = lists.shape[1]
    return ivf.search_preassigned(np.ascontiguousarray(queries, np.float32), k, lists, coarse)


def range_search_lists(ivf: faiss.IndexIVF, queries: np.ndarray, radius: float, lists: np.ndarray,
                       coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every entry above `radius` within the given lists of one shard: (lims, sims, ids)."""
    ivf.nprobe = lists.shape[1]
    return ivf.range_search_preassigned(np.ascontiguousarray(queries, np.float32), radius, lists, coarse)
