"""Retrieval metrics of copy detection: each query has exactly one source in the gallery;
gallery items from the same photo as the source (other crops) are left out of its ranking,
neither positive nor negative. So are the items of the photo a mixed query took its other
content from (cutmix's background, segmix's host image): the query copies that photo too,
often more of it than of the source, and paper 1's IN-Cutmix takes those images from
outside the gallery."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CopyMetrics:
    map: float          # mean over queries of average precision (= 1 / rank of the source)
    micro_ap: float     # AP of all (query, candidate) pairs ranked together by similarity
    recall_at_1: float  # share of queries whose top candidate is the source


def evaluate(scores: np.ndarray, source: np.ndarray, query_group: np.ndarray,
             gallery_group: np.ndarray, other_group: np.ndarray | None = None) -> CopyMetrics:
    """scores (Q, G) similarities; source (Q,) gallery index of each query's source;
    query_group (Q,) and gallery_group (G,) photo ids used to exclude same-photo items;
    other_group (Q,): the photo each query mixed in ("" or None: none), excluded too."""
    q = np.arange(len(scores))
    valid = query_group[:, None] != gallery_group[None, :]
    if other_group is not None:
        valid &= np.asarray(other_group)[:, None] != gallery_group[None, :]
    valid[q, source] = True
    positive = np.zeros_like(valid)
    positive[q, source] = True
    s = np.where(valid, scores, -np.inf)
    src = s[q, source]
    # rank of the source: 1 + candidates scoring strictly higher (+ half the ties, as the
    # expected rank under a random tie order)
    higher = (s > src[:, None]).sum(1)
    ties = (s == src[:, None]).sum(1) - 1
    rank = 1 + higher + ties / 2
    ap = 1.0 / rank
    flat_scores = scores[valid]
    flat_pos = positive[valid]
    order = np.argsort(-flat_scores, kind="stable")
    hits = flat_pos[order]
    precision_at_hits = np.cumsum(hits)[hits] / (np.nonzero(hits)[0] + 1)
    micro = float(precision_at_hits.sum() / max(hits.sum(), 1))
    return CopyMetrics(float(ap.mean()), micro, float(np.mean(higher + ties == 0)))
