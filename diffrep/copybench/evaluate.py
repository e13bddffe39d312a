"""Scoring descriptors on the copy sets: inner product on pooled descriptors, and
split-product on patch tokens for models that have them; a Table-1-shaped summary."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from diffrep.copybench.copysets import GalleryItem, Query
from diffrep.copybench.metrics import CopyMetrics, evaluate
from diffrep.models.base import Embedder, call_by_shape
from diffrep.search.regions import RegionSpec

log = logging.getLogger("diffrep")


@dataclass
class Features:
    pooled: np.ndarray                 # (N, dim) L2-normalised
    tokens: np.ndarray | None = None   # (N, T, d) per-token L2-normalised


def extract(embedder: Embedder, images: list, batch_size: int, tokens: bool) -> Features:
    prepared = [embedder.prepare(img) for img in images]
    pooled, toks = [], []
    for i in range(0, len(prepared), batch_size):
        batch = prepared[i:i + batch_size]
        if tokens:
            p, t = call_by_shape(embedder.embed_prepared_tokens, batch)
            pooled.append(p)
            toks.append(t.astype(np.float16))
        else:
            pooled.append(call_by_shape(embedder.embed_prepared, batch))
    return Features(np.concatenate(pooled), np.concatenate(toks) if tokens else None)


def split_product_scores(q_tokens: np.ndarray, g_tokens: np.ndarray, block: int = 256) -> np.ndarray:
    """(Q, T, d) x (G, T, d) -> (Q, G): max over token positions of the inner product of
    corresponding tokens (paper 1's split-product, one chunk per patch). One batched
    matmul per token position (T x (Q, d) @ (d, G)), in blocks of queries."""
    g = np.ascontiguousarray(g_tokens.astype(np.float32).transpose(1, 2, 0))   # (T, d, G)
    out = np.empty((len(q_tokens), g.shape[2]), np.float32)
    for start in range(0, len(q_tokens), block):
        q = np.ascontiguousarray(q_tokens[start:start + block].astype(np.float32).transpose(1, 0, 2))
        out[start:start + block] = np.matmul(q, g).max(axis=0)
    return out


def score_sets(gallery: list[GalleryItem], query_sets: dict[str, list[Query]], gallery_feats: Features,
               query_feats: dict[str, Features]) -> dict[str, dict[str, CopyMetrics]]:
    """{similarity: {set: metrics}} for inner product, and split-product when tokens exist."""
    index = {g.key: i for i, g in enumerate(gallery)}
    groups = np.array([g.group for g in gallery])
    out: dict[str, dict[str, CopyMetrics]] = {"inner_product": {}}
    if gallery_feats.tokens is not None:
        out["split_product"] = {}
    for name, queries in query_sets.items():
        source = np.array([index[q.source_key] for q in queries])
        other = mixed_in_groups(queries, index, groups)
        qf = query_feats[name]
        out["inner_product"][name] = evaluate(qf.pooled @ gallery_feats.pooled.T, source,
                                              groups[source], groups, other)
        if gallery_feats.tokens is not None:
            out["split_product"][name] = evaluate(split_product_scores(qf.tokens, gallery_feats.tokens),
                                                  source, groups[source], groups, other)
    return out


def mixed_in_groups(queries: list[Query], index: dict[str, int], groups: np.ndarray) -> np.ndarray:
    """(Q,) the photo each query's other content came from, "" when none."""
    return np.array([groups[index[q.other_key]] if q.other_key else "" for q in queries], dtype=object)


def average_ranks(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per row, its rank (1 = best mAP) in each set's column, averaged over sets."""
    rows = list(table)
    sets = list(next(iter(table.values()))) if rows else []
    ranks = {r: [] for r in rows}
    for s in sets:
        values = np.array([table[r][s] for r in rows])
        for r, v in zip(rows, values, strict=True):
            ranks[r].append(1 + int((values > v).sum()) + ((values == v).sum() - 1) / 2)
    return {r: float(np.mean(v)) for r, v in ranks.items()}


def score_regions(gallery: list[GalleryItem], query_sets: dict[str, list[Query]],
                  gallery_feats: Features, region_vectors: dict[str, np.ndarray],
                  gallery_regions: np.ndarray | None = None, spec: RegionSpec | None = None
                  ) -> dict[str, CopyMetrics]:
    """{set: metrics} of object-level matching as Searcher.search(regions=...) does it:
    each (query, gallery item) scored by the best similarity of any of the query's regions
    (region_vectors[set]: (Q, R, dim), from diffrep.search.regions.embed_regions) to the
    item's global descriptor; with gallery_regions (G, R, dim), the items that
    diffrep.search.regions.rerank_choice picks with `spec` are re-scored region to region."""
    from diffrep.search.regions import region_scores, rerank_choice, rerank_pairs

    index = {g.key: i for i, g in enumerate(gallery)}
    groups = np.array([g.group for g in gallery])
    out = {}
    for name, queries in query_sets.items():
        source = np.array([index[q.source_key] for q in queries])
        scores, best = region_scores(region_vectors[name], gallery_feats.pooled)
        if gallery_regions is not None and spec is not None and spec.rerank:
            ids = np.broadcast_to(np.arange(len(gallery)), scores.shape)
            rerank_pairs(region_vectors[name], ids, scores, best, lambda i: gallery_regions[i],
                         rerank_choice(ids, scores, gallery_feats.pooled, spec))
        out[name] = evaluate(scores, source, groups[source], groups,
                             mixed_in_groups(queries, index, groups))
    return out
