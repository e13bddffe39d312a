"""One query slice of the corpus self-search: every pair above the threshold."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from diffrep import storage
from diffrep.dedup.components import forest, write_forest
from diffrep.dedup.layout import DedupLayout
from diffrep.search import LocalShards, RayShards, Searcher, open_index

PAIR_SCHEMA = pa.schema([("key_a", pa.string()), ("key_b", pa.string()), ("similarity", pa.float32()),
                         ("id_a", pa.int64()), ("id_b", pa.int64())])
COUNT_SCHEMA = pa.schema([("id", pa.int64()), ("duplicate_count", pa.int32())])


def dedup_slice(root: str, model: str, slice_id: int, threshold: float, margin: float,
                query_batch: int, shard_actors: list | None = None, nprobe: int | None = None) -> dict:
    """Range-search the slice's vectors against the whole index (exact re-rank); write the
    slice's pairs, duplicate counts and component forest, then its marker last.

    Each pair is written once, by the query with the smaller id (so pair files need no
    global de-duplication); counts and components use every match of the slice's queries.
    Returns the marker's content.
    """
    t0 = time.monotonic()
    layout = DedupLayout(root, model)
    handle = open_index(root, model, verify_files=False)  # the driver verified the index
    backend = RayShards.from_actors(shard_actors) if shard_actors else LocalShards(handle)
    searcher = Searcher(handle, backend, nprobe=nprobe)
    spec = next(s for s in handle.slices if s.slice_id == slice_id)
    queries, hits, sims = [], [], []
    for start in range(spec.id_start, spec.id_start + spec.count, query_batch):
        ids = np.arange(start, min(start + query_batch, spec.id_start + spec.count), dtype=np.int64)
        found = searcher.range_search(handle.vectors(ids), threshold, margin=margin, exact=True)
        keep = ids[found.query] != found.ids
        queries.append(ids[found.query][keep])
        hits.append(found.ids[keep])
        sims.append(found.sims[keep])
    q = np.concatenate(queries) if queries else np.zeros(0, np.int64)
    h = np.concatenate(hits) if hits else np.zeros(0, np.int64)
    s = np.concatenate(sims) if sims else np.zeros(0, np.float32)

    mine = q < h
    a, b, sim = q[mine], h[mine], s[mine]
    ends = handle.lookup(np.concatenate([a, b]))
    storage.write_parquet(layout.slice_pairs(slice_id), pa.table({
        "key_a": ends["key"].slice(0, len(a)), "key_b": ends["key"].slice(len(a)),
        "similarity": pa.array(sim, pa.float32()), "id_a": pa.array(a, pa.int64()),
        "id_b": pa.array(b, pa.int64())}, schema=PAIR_SCHEMA))
    ids, counts = np.unique(q, return_counts=True)
    storage.write_parquet(layout.slice_counts(slice_id), pa.table(
        {"id": ids, "duplicate_count": counts.astype(np.int32)}, schema=COUNT_SCHEMA))
    nodes, roots = forest(q, h)
    write_forest(layout.slice_forest(slice_id), nodes, roots)
    marker = {"slice": slice_id, "queries": spec.count, "pairs": int(len(a)),
              "seconds": round(time.monotonic() - t0, 3)}
    storage.write_json(layout.slice_done(slice_id), marker)
    return marker
