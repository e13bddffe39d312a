"""Search results as a table: one row per (query, rank)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from diffrep.search.index import IndexHandle
from diffrep.search.searcher import Hits


def hits_table(handle: IndexHandle, query_keys: list[str], hits: Hits) -> pa.Table:
    """query_key, rank (0 = best), id, key, url, caption, similarity; no-result slots dropped."""
    q, k = hits.ids.shape
    ids = hits.ids.ravel()
    valid = ids >= 0
    meta = handle.lookup(ids[valid])
    return pa.table({
        "query_key": pa.array(np.repeat(np.asarray(query_keys, dtype=object), k)[valid].tolist(), pa.string()),
        "rank": pa.array(np.tile(np.arange(k), q)[valid], pa.int32()),
        "id": pa.array(ids[valid], pa.int64()),
        "key": meta["key"], "url": meta["url"], "caption": meta["caption"],
        "similarity": pa.array(hits.sims.ravel()[valid], pa.float32()),
    })
