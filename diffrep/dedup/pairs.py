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


def by_list(router: ListRouter, handle: IndexHandle, ids: np.ndarray, nprobe: int, batch: int
            ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """`ids` ordered by their nearest list, with their coarse assignment in that order
    ((probed lists, coarse similarities), one quantizer search per id, made here in
    batches of `batch`). Lists are numbered by locality (diffrep.index.locality) and
    shards own runs of them, so a batch of consecutive queries probes a run of near
    lists held by one or two shards; in id order every batch asks every shard. The price:
    a batch holds whole duplicate groups (their members share lists), so its hits come in
    bursts, and the slice's vectors are read twice."""
    if not len(ids):
        return ids, None
    probed, coarse = [], []
    for start in range(0, len(ids), batch):
        _, p, c = router.assign(handle.vectors(ids[start:start + batch]), nprobe)
        probed.append(p)
        coarse.append(c)
    probed_all, coarse_all = np.concatenate(probed), np.concatenate(coarse)
    order = np.argsort(probed_all[:, 0], kind="stable")
    return ids[order], (probed_all[order], coarse_all[order])


def dedup_slice(root: str, model: str, slice_id: int, threshold: float, margin: float,
                query_batch: int, partition_ids: int, shard_actors: list | None = None,
                nprobe: int | None = None, progress_interval_s: float = 60.0) -> dict:
    """Range-search the slice's vectors against the whole index (exact re-rank); write the
    slice's routed edges, then its marker last. Logs its own progress (query batches,
    queries/s, ETA) every `progress_interval_s`: a slice of 500k queries can search for
    many minutes. Each query's probes are those the add recorded (ListRouter.assign_stored;
    for an index built before it recorded them, or a larger nprobe: the coarse
    quantizer's). On several shards the queries go in batches of the same lists (one
    shard: in id order). Memory: one query batch's candidates plus the routed writer's
    buffer (streamed: not the slice's hits), and the slice's probes (memory-mapped; in
    batch order on several shards: 32 bytes per query; an older index: its coarse
    assignment, 12 bytes per query and probe). Returns the marker."""
    t0 = time.monotonic()
    setup_logging()  # this runs in a Ray worker: its lines reach the driver's output
    layout = DedupLayout(root, model)
    handle = open_index(root, model, verify_files=False)  # the driver verified the index
    backend = RayShards.from_actors(shard_actors, handle) if shard_actors else LocalShards(handle)
    searcher = Searcher(handle, backend, nprobe=nprobe)
    spec = next(s for s in handle.slices if s.slice_id == slice_id)
    hits = 0
    queries = np.arange(spec.id_start, spec.id_start + spec.count, dtype=np.int64)
    router, several = backend.router, len(handle.shard_files()) > 1
    assigned = probes = None
    if router is not None:
        probes = handle.probes(slice_id)
        if probes is not None and not router.can_use_stored(probes.shape[1], searcher.nprobe):
            probes = None
    if probes is not None:  # the add's own probes: no quantizer search
        if several:  # one shard: no calls to save, and id order spreads a group's hits
            order = np.argsort(probes[:, 0], kind="stable")
            queries, probes = queries[order], probes[order]
    elif router is not None and several:
        queries, assigned = by_list(router, handle, queries, searcher.nprobe, query_batch)
    starts = range(0, len(queries), query_batch)
    progress = Progress(f"dedup slice {slice_id}", len(starts), unit="batches", item="queries")
    with RoutedWriter(layout.slice_edges(slice_id), EDGE_SCHEMA) as edges:
        for start in starts:
            ids = queries[start:start + query_batch]
            vectors = handle.vectors(ids)
            batch_assigned = None
            if probes is not None:
                batch_assigned = router.assign_stored(vectors, probes[start:start + query_batch], searcher.nprobe)
            elif assigned is not None:
                batch_assigned = tuple(a[start:start + query_batch] for a in assigned)
            found = searcher.range_search(vectors, threshold, margin=margin, exact=True, ordered=False,
                                          assigned=batch_assigned)
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
