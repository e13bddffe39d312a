"""The baseline of paper 1 (Fig. 4/9): for random training images, the top-1 similarity to
the rest of the training set, self excluded; with object-level matching, the same
region-scored and the region threshold's nulls (diffrep.search.calibration). Computed once
per index and cached."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from diffrep import storage
from diffrep.progress import Progress
from diffrep.scan.layout import ScanLayout
from diffrep.search import Searcher
from diffrep.search.calibration import (
    RegionCalibration,
    calibrate,
    fixed,
    region_nulls,
    unrelated_images,
)
from diffrep.search.geometry import IDENTICAL_AGREEMENT, Verification
from diffrep.search.region_rule import RegionRule, decide_rescue, null_outcomes
from diffrep.search.regions import RegionSpec

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
    tars is what keeps it cheap at LAION scale. Holds the chosen shards' ids only (from
    the embedding files' id ranges), not one entry per training image."""
    rng = np.random.default_rng(seed)
    stored = handle.stored
    ends = np.append(stored.first_id[1:], stored.ntotal)
    ranges: dict[str, list[tuple[int, int]]] = {}
    for name, first, end in zip(stored.files, stored.first_id.tolist(), ends.tolist(), strict=True):
        ranges.setdefault(name, []).append((first, end))
    shards = sorted(ranges)
    chosen = rng.choice(len(shards), size=min(max_shards, len(shards)), replace=False)
    pool = np.sort(np.concatenate([np.arange(a, b, dtype=np.int64) for i in chosen
                                   for a, b in ranges[shards[i]]]))
    return np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))


def _region_tag(searcher: Searcher, spec: RegionSpec, duplicate_above: float) -> str:
    """Every setting a region null depends on, for its cache name."""
    # "shared": neighbours sharing an identical region above the floor are duplicates too
    tag = ("-regions-" + "_".join(f"{s:g}" for s in spec.scales) + f"-dup{duplicate_above:g}"
           f"-shared{spec.floor:g}a{IDENTICAL_AGREEMENT:g}")
    if spec.proposals != "grid":
        tag += f"-{spec.proposals}{spec.max_segments}"
    if spec.descriptors != "crops":
        tag += f"-{spec.descriptors}{spec.pooled_side or ''}"
    if searcher.candidate_regions is not None:  # every setting of the re-rank's choice
        tag += f"-rerank{spec.rerank}d{spec.rerank_distinct:g}m{spec.rerank_max}"
    return tag


def _null_table(ids: np.ndarray, keys: list[str], nulls: dict) -> pa.Table:
    """region_nulls' arrays as a table; a missing score (NaN) is stored as null."""
    return pa.table({"id": ids, "key": pa.array(keys, pa.string()), **{
        k: pa.array(v, pa.list_(pa.float32())) if k in ("box", "null_box") else pa.array(v, from_pandas=True)
        for k, v in nulls.items()}})


def load_or_compute_regions(layout: ScanLayout, searcher: Searcher, embedder, spec: RegionSpec,
                            n: int, seed: int, candidates: int, duplicate_above: float,
                            max_shards: int = 4, progress_interval_s: float = 10.0) -> pa.Table:
    """The baseline region-scored the way generations are (diffrep.search.calibration.
    region_nulls): for random training images, the best region score against the rest of
    the training set (self excluded; `region_similarity`, with its neighbour, global
    `similarity` and box) and against the rest without its duplicates (global similarity
    above `duplicate_above`; `null_region_similarity`, a null of the region threshold's
    calibration). Cached per index, size, seed and region settings under
    <root>/scans/_baseline/ (ScanLayout.baseline), so a second scan of the same index,
    whatever its run name, reads it back. Logs a progress line with an ETA at most every
    `progress_interval_s` seconds while it computes."""
    handle = searcher.handle
    url = layout.baseline(handle.model, index_hash(searcher), n, seed,
                          _region_tag(searcher, spec, duplicate_above))
    if storage.exists(url):
        log.info("scan: region baseline from cache %s", url)
        return storage.read_table(url)
    ids = region_sample(handle, n, seed, max_shards)
    keys = handle.lookup(ids, columns=["key"])["key"].to_pylist()
    images = handle.corpus_images(ids, keys)
    have = [i for i, key in enumerate(keys) if key in images]
    ids, keys = ids[have], [keys[i] for i in have]
    progress = Progress("scan region baseline", -(-len(ids) // REGION_CHUNK), unit="chunks",
                        item="training images")
    log.info("scan: region baseline of %d training images (once per index; cached for later "
             "scans at %s)", len(ids), url)

    def step(done: int) -> None:
        progress.update(done)
        progress.report(progress_interval_s)

    nulls = region_nulls(searcher, embedder, spec, [images[k] for k in keys], ids,
                         duplicate_above, candidates, REGION_CHUNK, step, shared_above=spec.floor)
    progress.finish()
    table = _null_table(ids, keys, nulls)
    storage.write_parquet(url, table)
    log.info("scan: region baseline of %d training images: median region score %.3f, without "
             "their duplicates %.3f; %d neighbour(s) left out as sharing an identical region with "
             "them (cached at %s)", len(ids), _nan(np.nanmedian, nulls["region_similarity"]),
             _nan(np.nanmedian, nulls["null_region_similarity"]), int(nulls["shared_hits"].sum()), url)
    return table


def load_or_compute_unrelated(layout: ScanLayout, searcher: Searcher, embedder, spec: RegionSpec,
                              n: int, seed: int, candidates: int, duplicate_above: float) -> pa.Table:
    """`n` images that copy nothing (diffrep.search.calibration.unrelated_images)
    region-scored against the index; the second null of the calibration. Nothing is left
    out: a drawing has no duplicate in any corpus, so even a hit above the global
    threshold is a null (its `duplicate_hits` still counts those). Table as
    load_or_compute_regions' (id -1, key naming the drawing), cached beside it."""
    handle = searcher.handle
    url = layout.baseline(handle.model, index_hash(searcher), n, seed,
                          _region_tag(searcher, spec, duplicate_above) + "-unrelated")
    if storage.exists(url):
        return storage.read_table(url)
    named = unrelated_images(n, seed)
    nulls = region_nulls(searcher, embedder, spec, [img for _, img in named],
                         np.full(len(named), -1, np.int64), duplicate_above, candidates,
                         leave_out_duplicates=False)
    table = _null_table(np.full(len(named), -1, np.int64), [name for name, _ in named], nulls)
    storage.write_parquet(url, table)
    log.info("scan: %d unrelated images against the index: highest region score %.3f (cached "
             "at %s)", len(named), _nan(np.nanmax, nulls["null_region_similarity"]), url)
    return table


def _nan(reduce, x: np.ndarray) -> float:
    """reduce(x) of a NaN-aware numpy reduction; NaN when x has no number."""
    return float(reduce(x)) if len(x) and not np.isnan(x).all() else float("nan")


@dataclass
class RegionNulls:
    """The scan's region baseline, its unrelated images and the threshold they give."""

    baseline: pa.Table
    unrelated: pa.Table | None
    calibration: RegionCalibration


def region_baseline(cfg, match, layout: ScanLayout, searcher: Searcher) -> RegionNulls | None:
    """The scan's region baseline and region threshold (ScanConfig cfg, MatchSettings
    match), None when scan.regions is off. Embeds with the descriptor the generations get.
    With scan.region_calibrate the threshold is max(floor, highest null +
    scan.region_null_margin) over the baseline without duplicates and
    scan.region_unrelated unrelated images (diffrep.search.calibration)."""
    spec = match.regions
    if spec is None:
        return None
    from diffrep.models import create_embedder

    embedder = create_embedder(match.model, weights=match.weights, device="cpu")
    searcher = match.searcher(searcher.handle, searcher.backend, embedder)
    base = load_or_compute_regions(layout, searcher, embedder, spec, cfg.baseline_size,
                                   cfg.baseline_seed, cfg.candidates, cfg.threshold,
                                   cfg.region_baseline_shards, cfg.progress_interval_s)
    floor = spec.floor if cfg.region_threshold is None else cfg.region_threshold
    if not cfg.region_calibrate:
        return RegionNulls(base, None, fixed(floor))
    unrelated = (load_or_compute_unrelated(layout, searcher, embedder, spec, cfg.region_unrelated,
                                           cfg.baseline_seed, cfg.candidates, cfg.threshold)
                 if cfg.region_unrelated else None)
    nulls = {"baseline": base["null_region_similarity"].to_numpy(zero_copy_only=False)}
    if unrelated is not None:
        nulls["unrelated"] = unrelated["null_region_similarity"].to_numpy(zero_copy_only=False)
    calibration = calibrate(floor, cfg.region_null_margin, nulls)
    log.info("scan: %s", calibration.reason)
    return RegionNulls(base, unrelated, calibration)


def region_rule(cfg, nulls: RegionNulls, handle) -> RegionRule:
    """What decides a region match (diffrep.search.region_rule) for the scan: the
    calibrated threshold, scan.region_verify's veto, and scan.region_rescue_band's rescue,
    on only when none of this index's own nulls in the band verifies geometrically."""
    threshold = nulls.calibration.threshold
    if not cfg.region_rescue_band:
        return RegionRule(threshold, veto=cfg.region_verify)
    lo = threshold - cfg.region_rescue_band
    tested = {"baseline": verify_nulls_in_band(handle, nulls.baseline, lo, threshold)}
    if nulls.unrelated is not None:
        drawn = dict(unrelated_images(len(nulls.unrelated), cfg.baseline_seed))
        tested["unrelated"] = verify_nulls_in_band(handle, nulls.unrelated, lo, threshold, drawn)
    verified, sharing = null_outcomes(tested)
    rescue_from, record = decide_rescue(threshold, cfg.region_rescue_band, verified, sharing=sharing)
    log.info("scan: geometric rescue %s: %s", "on" if record["enabled"] else "off", record["reason"])
    return RegionRule(threshold, veto=cfg.region_verify, rescue_from=rescue_from, rescue=record)


def verify_nulls_in_band(handle, table: pa.Table, lo: float, hi: float,
                         drawn: dict | None = None) -> list[Verification]:
    """Geometric verification (diffrep.search.geometry.verify_pair, as a generation's
    region match is verified) of each null of `table` (a region baseline or unrelated
    table) scoring in (lo, hi]: the null image's matched box against its null neighbour.
    `drawn`: {key: image} of unrelated images (None: the nulls are training images, read
    from the corpus). A Verification per null; one whose images cannot be read is left out
    (and so not counted)."""
    from diffrep.search.geometry import verify_pair

    sims = table["null_region_similarity"].to_numpy(zero_copy_only=False).astype(np.float64)
    rows = np.nonzero((sims > lo) & (sims <= hi))[0]
    if not len(rows):
        return []
    sub = table.take(pa.array(rows)).to_pylist()
    neighbours = np.array([r["null_neighbour_id"] for r in sub], np.int64)
    neighbour_keys = handle.lookup(neighbours, columns=["key"])["key"].to_pylist()
    train = handle.corpus_images(neighbours, neighbour_keys)
    queries = drawn if drawn is not None else handle.corpus_images(
        np.array([r["id"] for r in sub], np.int64), [r["key"] for r in sub])
    out = []
    for r, key in zip(sub, neighbour_keys, strict=True):
        if r["key"] in queries and key in train:
            out.append(verify_pair(queries[r["key"]], train[key], query_box=r.get("null_box")))
    return out
