"""One query slice of the corpus self-search: every neighbour above the threshold, routed
to the partitions of both ends.

With an approximate index a pair (a, b) may be found by a's search, by b's, or by both;
so the slice emits each hit in both directions, (query, hit) to the query's partition and
(hit, query) to the hit's, and the partition step keeps each undirected pair once. Pairs
and duplicate counts are then those of the union of both sides' searches, whichever side
found the pair.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from diffrep import storage
from diffrep.dedup.layout import DedupLayout
from diffrep.logs import setup_logging
from diffrep.progress import Progress
from diffrep.routing import RoutedWriter, partition_of
from diffrep.search import LocalShards, RayShards, Searcher, open_index
from diffrep.search.index import IndexHandle
from diffrep.search.lists import ListRouter

EDGE_SCHEMA = pa.schema([("src", pa.int64()), ("dst", pa.int64()), ("similarity", pa.float32())])


def assign_slice(router: ListRouter, handle: IndexHandle, ids: np.ndarray, nprobe: int, batch: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The coarse assignment of `ids` (probed lists, coarse similarities), one quantizer
    search per id, made in batches of `batch`: for an index built before the add recorded
    its probes (diffrep.index.probes), or a dedup nprobe above them."""
    probed, coarse = [], []
    for start in range(0, len(ids), batch):
        _, p, c = router.assign(handle.vectors(ids[start:start + batch]), nprobe)
        probed.append(p)
        coarse.append(c)
    if not probed:
        return np.zeros((0, nprobe), np.int64), np.zeros((0, nprobe), np.float32)
    return np.concatenate(probed), np.concatenate(coarse)


def dedup_slice(root: str, model: str, slice_id: int, threshold: float, margin: float,
                query_batch: int, partition_ids: int, shard_actors: list | None = None,
                nprobe: int | None = None, progress_interval_s: float = 60.0) -> dict:
    """Range-search the slice's vectors against the whole index (exact re-rank); write the
    slice's routed edges, then its marker last. Logs its own progress (shard calls,
    queries/s, ETA) every `progress_interval_s`: a slice of 500k queries can search for
    many minutes.

    Each query's probes are those the add recorded (ListRouter.assign_stored; for an index
    built before it recorded them, or a larger nprobe: the coarse quantizer's). On a
    list-partitioned index the slice is searched shard by shard (ListRouter.shard_runs):
    each call asks one shard for up to `query_batch` queries that probe its lists, so the
    calls grow with the queries' shards per query, not with the shard count. On several
    shards the queries are first ordered by their own list (lists are numbered by
    locality, so a shard's queries are mostly one run of near lists; in id order a
    group's hits spread instead). Memory: one call's candidates plus the routed writer's
    buffer (streamed: not the slice's hits), the slice's probes (memory-mapped; an older
    index: its coarse assignment, 12 bytes per query and probe; on several shards the
    probes used, in list order: 4 bytes per query and probe) and its shard runs (8 bytes per query and shard it
    probes; planning them: ~60 bytes per query and probe, transient). Returns the marker."""
    t0 = time.monotonic()
    setup_logging()  # this runs in a Ray worker: its lines reach the driver's output
    layout = DedupLayout(root, model)
    handle = open_index(root, model, verify_files=False)  # the driver verified the index
    backend = RayShards.from_actors(shard_actors, handle) if shard_actors else LocalShards(handle)
    searcher = Searcher(handle, backend, nprobe=nprobe)
    spec = next(s for s in handle.slices if s.slice_id == slice_id)
    hits = 0
    queries = np.arange(spec.id_start, spec.id_start + spec.count, dtype=np.int64)
    router = backend.router
    probes = assigned = None
    if router is None:  # an id-sharded index: every call fans out to every shard
        runs = [(None, np.arange(s, min(s + query_batch, len(queries)))) for s in range(0, len(queries), query_batch)]
    else:
        probes = handle.probes(slice_id)
        if probes is not None and not router.can_use_stored(probes.shape[1], searcher.nprobe):
            probes = None
        if probes is None:
            assigned = assign_slice(router, handle, queries, searcher.nprobe, query_batch)
        probed = probes[:, :min(searcher.nprobe, router.ivf.nlist)] if probes is not None else assigned[0]
        # runs hold the slice's rows (id order); on several shards they come in list order
        order = np.argsort(probed[:, 0], kind="stable") if len(handle.shard_files()) > 1 else None
        if order is None:
            runs = router.shard_runs(probed, query_batch)
        else:
            runs = [(s, order[rows]) for s, rows in router.shard_runs(probed[order], query_batch)]
    progress = Progress(f"dedup slice {slice_id}", len(runs), unit="shard calls", item="query probes")
    with RoutedWriter(layout.slice_edges(slice_id), EDGE_SCHEMA) as edges:
        for shard, rows in runs:
            ids = queries[rows]
            vectors = handle.vectors(ids)
            batch_assigned = None
            if probes is not None:  # the add's own probes: no quantizer search
                batch_assigned = router.assign_stored(vectors, probes[rows], searcher.nprobe)
            elif assigned is not None:
                batch_assigned = (assigned[0][rows], assigned[1][rows])
            found = searcher.range_search(vectors, threshold, margin=margin, exact=True, ordered=False,
                                          assigned=batch_assigned, shard=shard)
            keep = ids[found.query] != found.ids
            q, h, s = ids[found.query][keep], found.ids[keep], found.sims[keep]
            src = np.concatenate([q, h])
            edges.write(pa.table({"src": src, "dst": np.concatenate([h, q]),
                                  "similarity": np.concatenate([s, s])}, schema=EDGE_SCHEMA),
                        partition_of(src, partition_ids))
            hits += len(q)
            progress.update(len(ids))
            if time.monotonic() - t0 >= progress_interval_s:  # a short slice logs nothing
                progress.report(every_s=progress_interval_s)
    marker = {"slice": slice_id, "queries": spec.count, "hits": hits,
              "seconds": round(time.monotonic() - t0, 3), "routing": backend.stats.as_dict()}
    storage.write_json(layout.slice_done(slice_id), marker)
    return marker
