"""The baseline of paper 1 (Fig. 4/9): for random training images, the top-1 similarity to
the rest of the training set, self excluded. Computed once per index and cached."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffrep import storage
from diffrep.scan.layout import ScanLayout
from diffrep.search import Searcher

log = logging.getLogger("diffrep")


def index_hash(searcher: Searcher) -> str:
    """sha256 of the index's manifest: a new or grown index gets a new baseline."""
    return hashlib.sha256(storage.read_bytes(searcher.handle.layout.manifest)).hexdigest()


def self_excluded_top1(searcher: Searcher, ids: np.ndarray, candidates: int = 10,
                       batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(neighbour id, exact similarity) of each training id's best match among the other
    training images. Duplicates under other ids count: they are the rest of the set."""
    handle = searcher.handle
    best_ids = np.full(len(ids), -1, np.int64)
    best_sims = np.full(len(ids), np.nan, np.float32)
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        hits = searcher.search(handle.vectors(chunk), k=min(2, handle.ntotal), rerank="exact",
                               candidates=candidates)
        for i, qid in enumerate(chunk):
            others = np.nonzero((hits.ids[i] != qid) & (hits.ids[i] >= 0))[0]
            if len(others):
                best_ids[start + i] = hits.ids[i, others[0]]
                best_sims[start + i] = hits.sims[i, others[0]]
    return best_ids, best_sims


def load_or_compute(layout: ScanLayout, searcher: Searcher, n: int, seed: int,
                    candidates: int) -> pa.Table:
    """Table (id, key, neighbour_id, similarity) of the baseline sample, from the cache
    when this index already has one of this size and seed."""
    handle = searcher.handle
    url = layout.baseline(handle.model, index_hash(searcher), n, seed)
    if storage.exists(url):
        log.info("scan: baseline from cache %s", url)
        return pq.read_table(url)
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(handle.ntotal, size=min(n, handle.ntotal), replace=False))
    neighbour, sims = self_excluded_top1(searcher, ids, candidates)
    table = pa.table({"id": ids, "key": handle.lookup(ids)["key"],
                      "neighbour_id": neighbour, "similarity": sims})
    storage.write_parquet(url, table)
    log.info("scan: baseline of %d training images: median top-1 %.3f (cached at %s)",
             len(ids), float(np.nanmedian(sims)) if len(ids) else float("nan"), url)
    return table
