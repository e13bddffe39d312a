"""One query slice of the corpus self-search: every pair above the threshold."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from diffrep import storage
from diffrep.dedup.components import forest, write_forest
from diffrep.dedup.layout import DedupLayout
from diffrep.search import LocalShards, RayShards, Searcher, open_index

PAIR_SCHEMA = pa.schema([("id_a", pa.int64()), ("id_b", pa.int64()), ("similarity", pa.float32())])


def canonical_pairs(query_ids: np.ndarray, hit_ids: np.ndarray, sims: np.ndarray) -> pa.Table:
    """(id_a < id_b, similarity) from query->hit matches, self-matches dropped, each pair once."""
    keep = query_ids != hit_ids
    a = np.minimum(query_ids[keep], hit_ids[keep])
    b = np.maximum(query_ids[keep], hit_ids[keep])
    s = sims[keep]
    if len(a):
        order = np.lexsort((-s, b, a))
        a, b, s = a[order], b[order], s[order]
        first = np.ones(len(a), bool)
        first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        a, b, s = a[first], b[first], s[first]
    return pa.table({"id_a": a, "id_b": b, "similarity": s.astype(np.float32)}, schema=PAIR_SCHEMA)


def dedup_slice(root: str, model: str, slice_id: int, threshold: float, margin: float,
                query_batch: int, shard_actors: list | None = None) -> dict:
    """Range-search the slice's vectors against the whole index (exact re-rank), write the
    slice's pairs and component forest, then its marker. Returns the marker's content."""
    t0 = time.monotonic()
    layout = DedupLayout(root, model)
    handle = open_index(root, model, verify_files=False)  # the driver verified the index
    backend = RayShards.from_actors(shard_actors) if shard_actors else LocalShards(handle)
    searcher = Searcher(handle, backend)
    spec = next(s for s in handle.slices if s.slice_id == slice_id)
    tables = []
    for start in range(spec.id_start, spec.id_start + spec.count, query_batch):
        ids = np.arange(start, min(start + query_batch, spec.id_start + spec.count), dtype=np.int64)
        hits = searcher.range_search(handle.vectors(ids), threshold, margin=margin, exact=True)
        tables.append(canonical_pairs(ids[hits.query], hits.ids, hits.sims))
    pairs = pa.concat_tables(tables) if tables else PAIR_SCHEMA.empty_table()
    storage.write_parquet(layout.slice_pairs(slice_id), pairs)
    nodes, roots = forest(pairs["id_a"].to_numpy(), pairs["id_b"].to_numpy())
    write_forest(layout.slice_forest(slice_id), nodes, roots)
    marker = {"slice": slice_id, "queries": spec.count, "pairs": pairs.num_rows,
              "seconds": round(time.monotonic() - t0, 3)}
    storage.write_json(layout.slice_done(slice_id), marker)
    return marker
