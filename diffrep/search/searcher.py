"""Top-k and range search over every shard of an index, merged into one ranking.

Shards are searched by a backend (diffrep.search.shards): `LocalShards` (memory-mapped in
this process, for small indexes and tests) or `RayShards` (diffrep.search.ray_shards: Ray actors, each verifying
and memory-mapping its own shards). Either routes each query batch only to the shards that
own the IVF lists it probes (diffrep.search.lists: one coarse assignment per batch).
Candidates can be re-ranked exactly from the stored embeddings (inner product) or patch
tokens (split-product), so reported similarities are true ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from diffrep.index.vectors import best_first, merge_topk
from diffrep.search.index import IndexHandle
from diffrep.search.lists import (
    Assignment,
)
from diffrep.search.regions import (
    RegionQueries,
    match_boxes,
    region_scores,
    rerank_choice,
    rerank_pairs,
    union_candidates,
)
from diffrep.search.shards import LocalShards, ShardBackend
from diffrep.similarity import split_product

Rerank = Literal["none", "exact", "split_product"]
# Keys whose codes are the vectors themselves (float32 of the stored embeddings): their
# similarities are already the true ones, so range search needs no margin or re-rank.
EXACT_CODES = re.compile(r"IVF\d+(_HNSW\d+)?,Flat")
RERANK_BLOCK = 65536  # pairs re-ranked at once by range_search


@dataclass
class Hits:
    """Top-k per query: ids (Q, k) int64 (-1: none), similarities (Q, k) float32.

    With region matching (Searcher.search(regions=...)), `sims` are region scores (best
    region-to-image similarity, the ranking's), `global_sims` (Q, k) the whole query's
    similarity to the same images and `boxes` (Q, k, 4) the box of each match (match_boxes), normalised
    (x0, y0, x1, y1); without it both are None.
    """

    ids: np.ndarray
    sims: np.ndarray
    global_sims: np.ndarray | None = None
    boxes: np.ndarray | None = None

    def rows(self, start: int, end: int) -> Hits:
        """The hits of queries start..end-1."""
        cut = lambda a: None if a is None else a[start:end]  # noqa: E731
        return Hits(self.ids[start:end], self.sims[start:end], cut(self.global_sims), cut(self.boxes))


@dataclass
class RangeHits:
    """Every (query, id) pair with similarity above the threshold, sorted by query then
    decreasing similarity (in no order with range_search(ordered=False))."""

    query: np.ndarray
    ids: np.ndarray
    sims: np.ndarray


def check_rerank(rerank: str, query_tokens: np.ndarray | None = None, tokens_now: bool = True) -> None:
    """Raise ValueError for an unknown re-rank, or (with `tokens_now`: the tokens are
    needed in this call) split_product without query tokens."""
    if rerank not in ("none", "exact", "split_product"):
        raise ValueError(f"rerank must be none, exact or split_product, not {rerank!r}")
    if tokens_now and rerank == "split_product" and query_tokens is None:
        raise ValueError("split_product re-rank needs query_tokens (Q, T, d)")


class Searcher:
    """Search an index through a shard backend, with optional exact re-rank.

    candidate_regions (e.g. diffrep.search.training_regions.TrainingRegions): ids (n,) ->
    the training images' own region descriptors (n, R, dim); with it, region searches
    re-score the candidates diffrep.search.regions.rerank_choice picks region to region."""

    def __init__(self, handle: IndexHandle, backend: ShardBackend | None = None,
                 nprobe: int | None = None,
                 candidate_regions: Callable[[np.ndarray], np.ndarray] | None = None):
        self.handle = handle
        self.backend = backend or LocalShards(handle)
        self.nprobe = nprobe or int(handle.infos.get("nprobe") or 1)
        self.candidate_regions = candidate_regions
        self.exact_codes = bool(EXACT_CODES.fullmatch(handle.manifest["key"]))

    def _check(self, queries: np.ndarray) -> np.ndarray:
        q = np.asarray(queries, np.float32)
        if q.ndim != 2 or q.shape[1] != self.handle.dim:
            raise ValueError(f"queries have shape {q.shape}; the index of {self.handle.model} "
                             f"holds {self.handle.dim}-dim vectors")
        return q

    def search(self, queries: np.ndarray, k: int = 10, rerank: Rerank = "none",
               candidates: int = 0, query_tokens: np.ndarray | None = None,
               regions: RegionQueries | None = None, batch: int | None = None) -> Hits:
        """Top-k of each query over all shards.

        rerank="exact" ranks max(k, candidates) approximate candidates by their true inner
        product with the stored embeddings; "split_product" by split-product of patch
        tokens (query_tokens: (Q, T, d)). Similarities returned are those of the ranking.

        regions (diffrep.search.regions.embed_regions of the same queries): object-level
        matching. The global candidates and each region's `per_region` candidates are
        ranked by region score, the best exact similarity of any region of the query to
        the stored embedding (rerank is then always exact); with the searcher's
        candidate_regions, the candidates rerank_choice picks (the top `regions.spec.rerank`
        distinct ones) are then scored by the best similarity of any region of the query
        to any region of the training image; see Hits.

        batch: more queries than this are a window whose shard calls are planned together
        (each call up to `batch` queries; see ShardBackend.search) and re-ranked `batch` at a time.
        """
        q = self._check(queries)
        if regions is not None:
            return self._region_search(q, regions, k, max(k, candidates))
        check_rerank(rerank, query_tokens)  # before the shards are searched
        return self.ranked(q, self.candidates(q, k, rerank, candidates, batch), k, rerank, query_tokens, batch)

    def assign(self, queries: np.ndarray) -> Assignment | None:
        """The queries' coarse assignment at this searcher's nprobe, to pass to a later
        candidates(..., assigned=) of the same queries (None where the index fans out)."""
        return self.backend.assign(self._check(queries), self.nprobe)

    def candidates(self, queries: np.ndarray, k: int, rerank: Rerank = "none", candidates: int = 0,
                   batch: int | None = None,
                   assigned: Assignment | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """search()'s first stage, the shards' approximate top-k merged: (sims, ids) of
        max(k, candidates) per query when re-ranked, else k. `assigned`: assign() of the
        same queries, made ahead."""
        q = self._check(queries)
        check_rerank(rerank, tokens_now=False)
        return self._topk(q, max(k, candidates) if rerank != "none" else k, batch, assigned)

    def ranked(self, queries: np.ndarray, found: tuple[np.ndarray, np.ndarray], k: int,
               rerank: Rerank = "none", query_tokens: np.ndarray | None = None,
               batch: int | None = None) -> Hits:
        """search()'s second stage: the candidates `found` (candidates()) of `queries`
        re-ranked (`batch` queries at a time) and cut to k."""
        q = self._check(queries)
        check_rerank(rerank, query_tokens)
        sims, ids = found
        if rerank == "none":
            return Hits(ids, sims)
        step = batch or len(q)
        true = np.empty(ids.shape, np.float32)
        with self.backend.times.part("rerank"):
            for s in range(0, len(q), step):
                true[s:s + step] = self._true_sims(q[s:s + step], ids[s:s + step]) if rerank == "exact" else \
                    self._split_sims(np.asarray(query_tokens[s:s + step], np.float32), ids[s:s + step])
        order = best_first(true, ids)[:, :k]
        return Hits(np.take_along_axis(ids, order, 1), np.take_along_axis(true, order, 1))

    def _topk(self, q: np.ndarray, k: int, batch: int | None = None,
              assigned: Assignment | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(sims, ids) (Q, k) over every shard: a routed backend's result is merged
        already (ListRouter.merge_rows); a fan-out's per-shard results are merged here."""
        parts = self.backend.search(q, k, self.nprobe, batch, assigned)
        return parts[0] if self.backend.router is not None else merge_topk(parts, k)

    def range_search(self, queries: np.ndarray, threshold: float, margin: float = 0.1,
                     exact: bool = True, ordered: bool = True,
                     assigned: tuple[np.ndarray, np.ndarray] | None = None,
                     shard: int | None = None) -> RangeHits:
        """Every neighbour with similarity > threshold. The approximate search takes
        candidates down to threshold - margin (PQ distances err both ways); with exact=True
        the threshold then applies to true inner products from the stored embeddings
        (an index of exact codes, IVF*,Flat, already gives them: no margin, no re-read).
        `assigned`: the queries' coarse assignment already made (ListRouter.assign), on a
        list-partitioned index; `shard`: search that shard's lists only (a run of
        ListRouter.shard_runs)."""
        q = self._check(queries)
        if self.exact_codes:
            exact = False
        radius = threshold - margin if exact else threshold
        qs, ids, sims = [], [], []
        for lims, dist, lab in self.backend.range_search(q, radius, self.nprobe, assigned, shard):
            counts = np.diff(lims).astype(np.int64)
            qs.append(np.repeat(np.arange(len(q)), counts))
            ids.append(lab.astype(np.int64))
            sims.append(dist.astype(np.float32))
        query = np.concatenate(qs) if qs else np.zeros(0, np.int64)
        ids_ = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        sims_ = np.concatenate(sims) if sims else np.zeros(0, np.float32)
        if exact and len(ids_):
            sims_ = self._pair_sims(q, query, ids_)
        keep = sims_ > threshold
        query, ids_, sims_ = query[keep], ids_[keep], sims_[keep]
        if not ordered:  # callers that route hits onward (dedup) need no order
            return RangeHits(query, ids_, sims_)
        order = np.lexsort((ids_, -sims_, query))
        return RangeHits(query[order], ids_[order], sims_[order])

    def _region_search(self, q: np.ndarray, regions: RegionQueries, k: int, n_cand: int) -> Hits:
        nq, nr, dim = regions.vectors.shape
        if nq != len(q) or dim != q.shape[1]:
            raise ValueError(f"region vectors {regions.vectors.shape} do not match queries {q.shape}")
        _, g_ids = self._topk(q, n_cand)
        per = regions.spec.per_region
        flat = np.ascontiguousarray(regions.vectors.reshape(nq * nr, dim), np.float32)
        live = flat.any(axis=1)  # blank crops have zero vectors (RegionSpec.min_std): no search
        r_ids = np.full((nq * nr, per), -1, np.int64)
        if live.any():
            _, found = self._topk(flat[live], per)
            r_ids[np.nonzero(live)[0], :found.shape[1]] = found
        ids = union_candidates(g_ids, r_ids.reshape(nq, nr * per))
        vecs = np.zeros(ids.shape + (dim,), np.float32)
        valid = ids >= 0
        if valid.any():
            uniq, inv = np.unique(ids[valid], return_inverse=True)
            vecs[valid] = self.handle.vectors(uniq)[inv]
        score, near = region_scores(regions.vectors, vecs)
        glob = np.einsum("qd,qcd->qc", q, vecs)
        score, glob = np.where(valid, score, -np.inf), np.where(valid, glob, -np.inf)
        if self.candidate_regions is not None and regions.spec.rerank > 0:
            rerank_pairs(regions.vectors, ids, score, near, self.candidate_regions,
                         rerank_choice(ids, score, vecs, regions.spec))
        order = np.lexsort((ids, -glob, -score), axis=-1)[:, :k]
        take = lambda a: np.take_along_axis(a, order, 1)  # noqa: E731
        boxes = match_boxes(regions.boxes, np.take_along_axis(near, order[..., None], 1))  # (Q, k, 4)
        ids_k = take(ids)
        if ids_k.shape[1] < k:  # fewer candidates than k: pad as "no result"
            pad = k - ids_k.shape[1]
            return Hits(np.pad(ids_k, ((0, 0), (0, pad)), constant_values=-1),
                        np.pad(take(score), ((0, 0), (0, pad)), constant_values=-np.inf),
                        np.pad(take(glob), ((0, 0), (0, pad)), constant_values=-np.inf),
                        np.pad(boxes, ((0, 0), (0, pad), (0, 0))))
        return Hits(ids_k, take(score).astype(np.float32), take(glob).astype(np.float32), boxes)

    def _pair_sims(self, q: np.ndarray, query: np.ndarray, ids: np.ndarray,
                   block: int = RERANK_BLOCK) -> np.ndarray:
        """Exact similarity of each pair (q[query[i]], stored vector ids[i]). Each distinct
        stored vector is read once; memory: those vectors plus one block of `block` pairs'
        gathered vectors (a batch whose queries share a large duplicate group can have
        millions of pairs: gathered at once, 2 x 256 bytes each at 64 dims). Dedup's pairs
        repeat their ids (groups of up to thousands): read through StoredVectors.dots,
        every pair's row from the memory map, dedup took 5-8% longer at 3M and 10M."""
        uniq, inv = np.unique(ids, return_inverse=True)
        vecs = self.handle.vectors(uniq)
        out = np.empty(len(ids), np.float32)
        for s in range(0, len(ids), block):
            out[s:s + block] = np.einsum("nd,nd->n", q[query[s:s + block]], vecs[inv[s:s + block]])
        return out

    def _true_sims(self, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact similarity of each query (Q, dim) to its candidates `ids` (Q, C), -inf
        where an id is -1."""
        valid = ids >= 0
        out = np.full(ids.shape, -np.inf, np.float32)
        rows, _ = np.nonzero(valid)
        out[valid] = self.handle.dots(ids[valid], q, rows)
        return out

    def _split_sims(self, q_tokens: np.ndarray, ids: np.ndarray) -> np.ndarray:
        out = np.full(ids.shape, -np.inf, np.float32)
        for i in range(len(ids)):
            valid = ids[i] >= 0
            if valid.any():
                out[i, valid] = split_product(q_tokens[i], self.handle.tokens(ids[i, valid]))
        return out
