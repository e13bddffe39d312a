"""The region-score threshold from an index's own nulls (object-level matching, issue 20).

A region score is the best of many crop-to-image similarities, so it runs high between
images that share nothing when the images are simple: on ~220 icons, screenshots and
diagrams the fixed threshold 0.5 flagged 6 of 12 unrelated images (icons at 0.50-0.76,
random colour drawings at 0.56-0.59 against a folder icon) while no global score passed 0.45.
A fixed number cannot be right for photos and for logos alike, so the decision threshold
comes from scores that are known to be nulls, measured on the index itself:

- **baseline**: random training images region-scored against the rest of the training set
  with each one's own duplicates left out (neighbours whose global similarity is above the
  global replication threshold: a near-copy is not a null; and, above the region floor,
  neighbours that share a part with it pixel for pixel, as geometry finds it:
  Verification.identical_region, e.g. two images with one pasted logo);
- **unrelated**: images that exist in no corpus (seeded procedural flat drawings and drawn
  scenes, `unrelated_images`) region-scored against the whole index, duplicates left out
  the same way.

threshold = max(floor, highest null + margin). The configured threshold stays the floor,
and `RegionCalibration.reason` says in a sentence which one decided and why.

Memory: the nulls are a few thousand floats at most (sample sizes are config, not corpus).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from diffrep.search.regions import RegionSpec, embed_regions

NULL_NEIGHBOURS = 10  # hits per null query: the first that is neither itself nor a duplicate


@dataclass(frozen=True)
class RegionCalibration:
    """threshold: what decides a region match (cosine similarity); floor: the configured
    threshold; margin: added to the highest null; nulls: per null set its count, max, 99th
    percentile and share above the floor; decided_by: "floor", "<null set> null" or
    "fixed" (calibration off); reason: one sentence for the log and the report."""

    threshold: float
    floor: float
    margin: float
    nulls: dict
    decided_by: str
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def describe_null(scores: np.ndarray, floor: float) -> dict:
    s = np.asarray(scores, np.float64)
    s = s[~np.isnan(s)]
    if not len(s):
        return {"count": 0}
    return {"count": int(len(s)), "max": round(float(s.max()), 4),
            "p99": round(float(np.quantile(s, 0.99)), 4),
            "above_floor": int((s > floor).sum())}


def calibrate(floor: float, margin: float, nulls: dict[str, np.ndarray]) -> RegionCalibration:
    """The region threshold from `nulls` ({set name: region scores of pairs that are not
    copies}; NaN: no score): max(floor, highest null + margin)."""
    stats = {name: describe_null(s, floor) for name, s in nulls.items()}
    scored = {name: d["max"] for name, d in stats.items() if d["count"]}
    if not scored:
        return RegionCalibration(floor, floor, margin, stats, "floor",
                                 f"region threshold {floor:g}: the floor (no null "
                                 f"scores to calibrate on)")
    worst = max(scored, key=scored.get)
    raised = round(scored[worst] + margin, 4)
    summary = "; ".join(f"{name}: {d['count']} images, max {d['max']:.3f}"
                        for name, d in stats.items() if d["count"])
    if raised <= floor:
        return RegionCalibration(floor, floor, margin, stats, "floor",
                                 f"region threshold {floor:g}: the floor; every "
                                 f"null of this index is below it by more than the margin "
                                 f"{margin:g} ({summary})")
    return RegionCalibration(raised, floor, margin, stats, f"{worst} null",
                             f"region threshold {raised:.3f}, raised from the floor {floor:g}: "
                             f"the highest {worst} null ({scored[worst]:.3f}) plus the margin "
                             f"{margin:g}. On this index images that copy nothing reach region "
                             f"scores above {floor:g} ({summary}), so a match must beat them")


def fixed(threshold: float) -> RegionCalibration:
    """Calibration off: the configured threshold decides."""
    return RegionCalibration(threshold, threshold, 0.0, {}, "fixed",
                             f"region threshold {threshold:g}: configured (calibration off)")


def unrelated_images(n: int, seed: int, side: int = 256) -> list[tuple[str, Image.Image]]:
    """`n` (name, image) that copy nothing: alternately a flat drawing (icon-like: the case
    that fools region scores on graphics) and a drawn scene, seeded."""
    from diffrep.synthetic import drawn_scene, flat_drawing

    out = []
    for i in range(n):
        s = seed * 100_003 + i
        out.append((f"unrelated/flat_drawing/{s}", flat_drawing(s, side)) if i % 2 == 0
                   else (f"unrelated/drawn_scene/{s}", drawn_scene(s, side)))
    return out


def _shares_a_region(handle, image: Image.Image, hits, i: int, others: np.ndarray,
                     duplicate: np.ndarray, above: float) -> np.ndarray:
    """(len(others),) bool: the hits of query `i` (positions `others` in hits), in order,
    that share an identical region with `image` (diffrep.search.geometry), verified while
    they score above `above` and are not already duplicates, up to the first that does
    not share one (it is the null; those after it are not needed)."""
    from diffrep.search.geometry import verify_pair

    shared = np.zeros(len(others), bool)
    above_ids = hits.ids[i, others[(hits.sims[i, others] > above) & ~duplicate]]
    if not len(above_ids):
        return shared
    keys = dict(zip(above_ids.tolist(), handle.lookup(above_ids, columns=["key"])["key"].to_pylist(),
                    strict=True))
    for pos, j in enumerate(others):
        if duplicate[pos]:
            continue
        if not hits.sims[i, j] > above:
            break
        key = keys[int(hits.ids[i, j])]
        train = handle.corpus_images(hits.ids[i, j:j + 1], [key])  # one at a time: most stop at the first
        if key not in train or not verify_pair(image, train[key], query_box=hits.boxes[i, j]).identical_region:
            break
        shared[pos] = True
    return shared


def region_nulls(searcher, embedder, spec: RegionSpec, images: Sequence[Image.Image],
                 self_ids: np.ndarray, duplicate_above: float, candidates: int,
                 chunk: int = 32, on_chunk: Callable[[int], None] | None = None,
                 leave_out_duplicates: bool = True, shared_above: float | None = None) -> dict:
    """Each image region-scored against the index the way a generation is (Searcher.search
    with regions: exact re-rank and the region re-rank). self_ids (n,): the image's own
    training id, -1 for none. Returns arrays of n: `neighbour_id`, `similarity` (global)
    and `region_similarity`, `box` of its best hit other than itself (duplicates count,
    as in paper 1's baseline), and `null_region_similarity`, `null_neighbour_id`,
    `null_box` of its best hit that is neither itself nor a duplicate (global similarity > duplicate_above;
    NaN / -1 when all NULL_NEIGHBOURS hits are), `duplicate_hits` (int: hits above
    duplicate_above). leave_out_duplicates=False: images that copy nothing by construction,
    whose best hit is a null whatever its global similarity. `on_chunk` is called with each
    chunk's size. Training images' own region descriptors go to the searcher's
    candidate_regions cache (TrainingRegions.remember), so that each is embedded once, not
    again as its own top candidate."""
    handle = searcher.handle
    n = len(images)
    out = {"neighbour_id": np.full(n, -1, np.int64), "similarity": np.full(n, np.nan, np.float32),
           "region_similarity": np.full(n, np.nan, np.float32), "box": [None] * n,
           "null_neighbour_id": np.full(n, -1, np.int64),
           "null_region_similarity": np.full(n, np.nan, np.float32), "null_box": [None] * n,
           "duplicate_hits": np.zeros(n, np.int32), "shared_hits": np.zeros(n, np.int32)}
    k = min(NULL_NEIGHBOURS, handle.ntotal)
    remember = getattr(searcher.candidate_regions, "remember", None)  # TrainingRegions has it
    for start in range(0, n, chunk):
        regions = embed_regions(embedder, images[start:start + chunk], spec)
        own = self_ids[start:start + chunk] >= 0
        if remember is not None and own.any():  # each is its own top candidate: embed it once
            remember(self_ids[start:start + chunk][own], regions.vectors[own])
        hits = searcher.search(regions.global_vectors, k=k, rerank="exact",
                               candidates=max(candidates, k), regions=regions)
        for i in range(len(regions.vectors)):
            row = start + i
            others = np.nonzero((hits.ids[i] != self_ids[row]) & (hits.ids[i] >= 0))[0]
            if not len(others):
                continue
            j = others[0]
            out["neighbour_id"][row] = hits.ids[i, j]
            out["similarity"][row] = hits.global_sims[i, j]
            out["region_similarity"][row] = hits.sims[i, j]
            out["box"][row] = hits.boxes[i, j].tolist()
            duplicate = hits.global_sims[i, others] > duplicate_above
            out["duplicate_hits"][row] = int(duplicate.sum())
            if not leave_out_duplicates:
                duplicate[:] = False
            elif shared_above is not None:
                shared = _shares_a_region(handle, images[row], hits, i, others, duplicate, shared_above)
                out["shared_hits"][row] = int(shared.sum())
                duplicate |= shared
            if (~duplicate).any():
                j = others[~duplicate][0]
                out["null_neighbour_id"][row] = hits.ids[i, j]
                out["null_region_similarity"][row] = hits.sims[i, j]
                out["null_box"][row] = hits.boxes[i, j].tolist()
        if on_chunk is not None:
            on_chunk(len(regions.vectors))
    return out
