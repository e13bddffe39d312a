"""Search results as a table: one row per (query, rank)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from diffrep.search.index import IndexHandle
from diffrep.search.searcher import Hits


def hits_table(handle: IndexHandle, query_keys: list[str], hits: Hits) -> pa.Table:
    """query_key, rank (0 = best), id, key, url, caption, similarity; no-result slots dropped.
    With region matching, similarity is the region score (the ranking's), and the table
    also has global_similarity and box (normalised x0, y0, x1, y1 of the best region)."""
    q, k = hits.ids.shape
    ids = hits.ids.ravel()
    valid = ids >= 0
    meta = handle.lookup(ids[valid])
    columns = {
        "query_key": pa.array(np.repeat(np.asarray(query_keys, dtype=object), k)[valid].tolist(), pa.string()),
        "rank": pa.array(np.tile(np.arange(k), q)[valid], pa.int32()),
        "id": pa.array(ids[valid], pa.int64()),
        "key": meta["key"], "url": meta["url"], "caption": meta["caption"],
        "similarity": pa.array(hits.sims.ravel()[valid], pa.float32()),
    }
    if hits.boxes is not None:
        columns["global_similarity"] = pa.array(hits.global_sims.ravel()[valid], pa.float32())
        columns["box"] = pa.array(list(hits.boxes.reshape(-1, 4)[valid]), pa.list_(pa.float32()))
    return pa.table(columns)
