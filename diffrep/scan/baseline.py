"""The baseline of paper 1 (Fig. 4/9): for random training images, the top-1 similarity to
the rest of the training set, self excluded. Computed once per index and cached."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pyarrow as pa

from diffrep import storage
from diffrep.progress import Progress
from diffrep.scan.layout import ScanLayout
from diffrep.search import Searcher
from diffrep.search.regions import RegionSpec, embed_regions

log = logging.getLogger("diffrep")
REGION_CHUNK = 32  # training images region-embedded and searched per step


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
        return storage.read_table(url)
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(handle.ntotal, size=min(n, handle.ntotal), replace=False))
    neighbour, sims = self_excluded_top1(searcher, ids, candidates)
    table = pa.table({"id": ids, "key": handle.lookup(ids, columns=["key"])["key"],
                      "neighbour_id": neighbour, "similarity": sims})
    storage.write_parquet(url, table)
    log.info("scan: baseline of %d training images: median top-1 %.3f (cached at %s)",
             len(ids), float(np.nanmedian(sims)) if len(ids) else float("nan"), url)
    return table


def region_sample(handle, n: int, seed: int, max_shards: int) -> np.ndarray:
    """Sorted ids of up to `n` random training images drawn from at most `max_shards`
    random embedding shards: the region baseline needs pixels, and reading a few input
    tars is what keeps it cheap at LAION scale."""
    rng = np.random.default_rng(seed)
    by_shard: dict[str, list[int]] = {}
    for shard, _, sel in handle.locate(np.arange(handle.ntotal)):
        by_shard.setdefault(shard, []).extend(sel.tolist())
    shards = sorted(by_shard)
    chosen = rng.choice(len(shards), size=min(max_shards, len(shards)), replace=False)
    pool = np.sort(np.concatenate([np.asarray(by_shard[shards[i]], np.int64) for i in chosen]))
    return np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))


def load_or_compute_regions(layout: ScanLayout, searcher: Searcher, embedder, spec: RegionSpec,
                            n: int, seed: int, candidates: int, max_shards: int = 4,
                            progress_interval_s: float = 10.0) -> pa.Table:
    """The baseline region-scored the way generations are (diffrep.search.regions): for
    random training images, the best region-to-image score against the rest of the
    training set (self excluded), its neighbour and box. Table (id, key, neighbour_id,
    similarity (global, same neighbour), region_similarity, box); cached per index,
    size, seed and region scales, under <root>/scans/_baseline/ (ScanLayout.baseline), so
    a second scan of the same index, whatever its run name, reads it back. Logs a progress
    line with an ETA at most every `progress_interval_s` seconds while it computes."""

    handle = searcher.handle
    tag = "-regions-" + "_".join(f"{s:g}" for s in spec.scales)
    if searcher.candidate_regions is not None:  # every setting of the re-rank's choice
        tag += f"-rerank{spec.rerank}d{spec.rerank_distinct:g}m{spec.rerank_max}"
    url = layout.baseline(handle.model, index_hash(searcher), n, seed, tag)
    if storage.exists(url):
        log.info("scan: region baseline from cache %s", url)
        return storage.read_table(url)
    ids = region_sample(handle, n, seed, max_shards)
    keys = handle.lookup(ids, columns=["key"])["key"].to_pylist()
    images = handle.corpus_images(ids, keys)
    have = [i for i, key in enumerate(keys) if key in images]
    ids, keys = ids[have], [keys[i] for i in have]
    out = {"neighbour_id": np.full(len(ids), -1, np.int64),
           "similarity": np.full(len(ids), np.nan, np.float32),
           "region_similarity": np.full(len(ids), np.nan, np.float32),
           "box": [None] * len(ids)}
    chunk_size = REGION_CHUNK
    progress = Progress("scan region baseline", -(-len(ids) // chunk_size), unit="chunks",
                        item="training images")
    log.info("scan: region baseline of %d training images (once per index; cached for later "
             "scans at %s)", len(ids), url)
    for start in range(0, len(ids), chunk_size):
        chunk = ids[start:start + chunk_size]
        regions = embed_regions(embedder, [images[k] for k in keys[start:start + chunk_size]], spec)
        hits = searcher.search(regions.global_vectors, k=min(3, handle.ntotal), rerank="exact",
                               candidates=candidates, regions=regions)
        for i, qid in enumerate(chunk):
            others = np.nonzero((hits.ids[i] != qid) & (hits.ids[i] >= 0))[0]
            if len(others):
                j, row = others[0], start + i
                out["neighbour_id"][row] = hits.ids[i, j]
                out["similarity"][row] = hits.global_sims[i, j]
                out["region_similarity"][row] = hits.sims[i, j]
                out["box"][row] = hits.boxes[i, j].tolist()
        progress.update(len(chunk))
        progress.report(progress_interval_s)
    progress.finish()
    table = pa.table({"id": ids, "key": pa.array(keys, pa.string()), **{
        k: (pa.array(v, pa.list_(pa.float32())) if k == "box" else v) for k, v in out.items()}})
    storage.write_parquet(url, table)
    log.info("scan: region baseline of %d training images: median region score %.3f (cached at %s)",
             len(ids), float(np.nanmedian(out["region_similarity"])) if len(ids) else float("nan"), url)
    return table


def region_baseline(cfg, match, layout: ScanLayout, searcher: Searcher) -> pa.Table | None:
    """The scan's region baseline (ScanConfig cfg, MatchSettings match), None when
    scan.regions is off. Embeds with the descriptor the generations get."""
    spec = match.region_spec()
    if spec is None:
        return None
    from diffrep.models import create_embedder

    embedder = create_embedder(match.model, weights=match.weights, device="cpu")
    searcher = match.searcher(searcher.handle, searcher.backend, embedder)
    return load_or_compute_regions(layout, searcher, embedder, spec, cfg.baseline_size,
                                   cfg.baseline_seed, cfg.candidates, cfg.region_baseline_shards,
                                   cfg.progress_interval_s)
