"""Region (object-level) matching for image queries (paper 1, sec. 3).

A generation replicates when it contains an object of a training image, and one global
descriptor of the whole generation misses an object pasted into part of it. So a query
image also gets region descriptors: boxes on a multi-scale grid and around its own
segments, each described with the index's own descriptor, either cropped and embedded or
pooled from the image's one feature map (RegionSpec.descriptors). The region score of a
(query, training image) pair is the best similarity of any of the query's regions to the
training image's (global, stored) descriptor, and the box of that region is kept. The
whole image is region 0, so the region score is never below the global similarity.

The index does not change: only queries get region descriptors. The extra cost is one
descriptor call per cropped region (`RegionSpec.count()` per query with crops, 14-22,
instead of 1; fewer when crops are blank, RegionSpec.min_std), or with pooled regions one
feature map per image and its segment crops (up to 8), and one search per region of
`per_region` candidates.

Boxes are normalised (x0, y0, x1, y1) in [0, 1] of the query image's width and height.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

FULL_BOX = (0.0, 0.0, 1.0, 1.0)
PROPOSALS = ("grid", "segments")
DESCRIPTORS = ("crops", "pooled")
# Default crop sides per descriptor kind: crops cost a descriptor call each (14 grid
# regions), pooled regions cost none of their own, so finer scales find smaller parts
# (docs/benchmarks.md, "Pooled region descriptors": 108 grid regions).
CROP_SCALES = (0.5, 0.75)
POOLED_SCALES = (0.2, 0.3, 0.4, 0.5, 0.75)
# The region score's replication floor per descriptor kind: the largest null score of the
# default scoring (the re-rank) on photos, rounded up to 0.05 (benchmarks/regions.py:
# copybench's gallery, its copy sets' unrelated pairs, novel drawings; crops 0.47,
# pooled 0.60: many small pooled boxes give a chance match more tries).
REGION_FLOORS = {"crops": 0.5, "pooled": 0.65}
# A match reports the bounding box of its regions scoring within this of the best one
# (match_boxes).
BOX_SLACK = 0.05


@dataclass(frozen=True)
class RegionSpec:
    """Which regions a query gets and how many candidates each one brings.

    scales: crop side as a fraction of the image's side (width and height alike); each
        scale tiles the image with crops that overlap their neighbours by `overlap`.
    per_region: approximate candidates searched per region (its union with the global
        candidates is re-ranked exactly).
    rerank: distinct top candidates per query re-scored region to region when the searcher
        has the training images' regions (diffrep.search.training_regions); 0: never.
    rerank_distinct: a candidate whose stored descriptor is at least this similar to one
        already counted is re-scored too but does not count toward `rerank`. When a patch
        of a training image is pasted on another photo, that photo's near-duplicates take
        the top of the ranking; the patch's source comes after them.
    rerank_max: candidates re-scored per query at most (the cost bound).
    min_std: a crop whose grey levels (0-255) have a standard deviation below this is
        blank (a white margin, a flat fill, clear sky) and gets no descriptor: a zero vector,
        similarity 0 to everything. Blank crops of two unrelated images are the same image,
        and on icons and diagrams they made every image a region copy of every other
        (region-to-region score 1.0). Region 0, the whole image, is always embedded.
    proposals: "segments" (the grid below and up to `max_segments` boxes around the
        image's own segments, diffrep.search.proposals: for small, elongated and irregular
        objects; found 0.58 of pasted copies against the grid's 0.41, docs/benchmarks.md)
        or "grid" (the grid only, the same boxes for every image).
    descriptors: "crops" (each region cropped and embedded: one descriptor call per
        region) or "pooled" (every region pooled from the image's one feature map,
        diffrep.models.pooled, R-MAC style: one call per image whatever the number of
        regions; SSCD's ONNX models).
    pooled_side: with pooled descriptors, the side (px) images are resized to for their
        feature map (SSCD: a cell per 32 px); 0: the descriptor's own input size (320).
    segment_side: with pooled descriptors, the side (px) each segment crop is resized to
        and described at (its own feature map pooled whole); 0: the descriptor's own input
        size. A segment box is a small part of the image: at 320 px most of the pass
        re-describes pixels the crop never had.
    """

    scales: tuple[float, ...] = (0.5, 0.75)
    overlap: float = 0.5
    per_region: int = 10
    rerank: int = 3
    rerank_distinct: float = 0.6
    rerank_max: int = 10
    min_std: float = 8.0
    proposals: str = "segments"
    max_segments: int = 8
    descriptors: str = "crops"
    pooled_side: int = 0
    segment_side: int = 0

    def __post_init__(self) -> None:
        if self.proposals not in PROPOSALS:
            raise ValueError(f"region proposals must be one of {PROPOSALS}, not {self.proposals!r}")
        if self.descriptors not in DESCRIPTORS:
            raise ValueError(f"region descriptors must be one of {DESCRIPTORS}, not {self.descriptors!r}")
        if self.max_segments < 0:
            raise ValueError("max_segments must be >= 0")
        if not self.scales or not all(0 < s < 1 for s in self.scales):
            raise ValueError(f"region scales must be in (0, 1), not {self.scales}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"region overlap must be in [0, 1), not {self.overlap}")
        if self.per_region < 1:
            raise ValueError("per_region must be >= 1")
        if self.min_std < 0:
            raise ValueError(f"region min_std must be >= 0, not {self.min_std}")
        if self.rerank < 0 or self.rerank_max < self.rerank:
            raise ValueError(f"need 0 <= rerank <= rerank_max, not {self.rerank}, {self.rerank_max}")

    @property
    def floor(self) -> float:
        """The region score's replication floor for these descriptors (REGION_FLOORS)."""
        return REGION_FLOORS[self.descriptors]

    def boxes(self) -> np.ndarray:
        """(R, 4) float32 normalised boxes: the whole image first, then each scale's grid."""
        out = [FULL_BOX]
        for s in self.scales:
            stride = s * (1 - self.overlap)
            n = math.ceil(round((1 - s) / stride, 6)) + 1 if stride > 0 else 1
            starts = np.linspace(0.0, 1 - s, n)
            out += [(x, y, x + s, y + s) for y in starts for x in starts]
        return np.round(np.asarray(out, np.float32), 4)

    def count(self) -> int:
        """Regions per image, the whole image included (descriptor calls per image, at
        most: blank crops and missing segment boxes cost none)."""
        return len(self.boxes()) + (self.max_segments if self.proposals == "segments" else 0)

    def image_boxes(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """(count(), 4) boxes of this image and (count(),) bool: which are real (segment
        slots the image does not fill hold the whole image's box and are not embedded)."""
        grid = self.boxes()
        if self.proposals == "grid":
            return grid, np.ones(len(grid), bool)
        from diffrep.search.proposals import segment_boxes

        segments = segment_boxes(image, self.max_segments)
        pad = np.tile(np.asarray(FULL_BOX, np.float32), (self.max_segments - len(segments), 1))
        valid = np.r_[np.ones(len(grid) + len(segments), bool), np.zeros(len(pad), bool)]
        return np.concatenate([grid, segments, pad]).astype(np.float32), valid


def pixel_boxes(size: tuple[int, int], boxes: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Normalised `boxes` as pixel (left, top, right, bottom) of an image of `size` (w, h):
    edges rounded, inside the image, at least one pixel wide and high."""
    w, h = size
    out = []
    for x0, y0, x1, y1 in boxes:
        left, top = min(round(x0 * w), w - 1), min(round(y0 * h), h - 1)
        out.append((left, top, min(w, max(round(x1 * w), left + 1)), min(h, max(round(y1 * h), top + 1))))
    return out


def crop_regions(image: Image.Image, boxes: np.ndarray) -> list[Image.Image]:
    """The image's crops at normalised `boxes` (pixel edges rounded)."""
    full = (0, 0, *image.size)
    return [image if px == full else image.crop(px) for px in pixel_boxes(image.size, boxes)]


@dataclass
class RegionQueries:
    """Region descriptors of Q query images: vectors (Q, R, dim) float32, L2-normalised
    (zero: no descriptor), region 0 being the whole image (the query's global descriptor);
    boxes (Q, R, 4), each image's own."""

    vectors: np.ndarray
    boxes: np.ndarray
    spec: RegionSpec

    @property
    def global_vectors(self) -> np.ndarray:
        """(Q, dim): region 0, the global descriptor of each query."""
        return np.ascontiguousarray(self.vectors[:, 0])


def box_stds(image: Image.Image, boxes: np.ndarray) -> np.ndarray:
    """(n,) float64: the standard deviation of the grey levels (0-255) inside each
    normalised box (pixel edges as crop_regions rounds them), from one summed-area table
    of the image and of its squares: O(1) per box, no crop made."""
    grey = np.asarray(image.convert("L"), np.float64)
    table = np.zeros((grey.shape[0] + 1, grey.shape[1] + 1, 2))
    table[1:, 1:, 0] = grey.cumsum(0).cumsum(1)
    table[1:, 1:, 1] = (grey * grey).cumsum(0).cumsum(1)
    px = np.asarray(pixel_boxes(image.size, boxes), np.int64).reshape(-1, 4)
    x0, y0, x1, y1 = px.T
    sums = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]  # (n, 2)
    n = ((x1 - x0) * (y1 - y0)).astype(np.float64)
    mean = sums[:, 0] / n
    return np.sqrt(np.clip(sums[:, 1] / n - mean * mean, 0.0, None))


def embed_regions(embedder, images: Sequence[Image.Image], spec: RegionSpec,
                  batch_size: int = 32) -> RegionQueries:
    """Embed every region of every image with `embedder` (the index's descriptor): crops
    embedded one by one, or pooled from each image's feature map (spec.descriptors);
    blank crops (RegionSpec.min_std) get zero vectors."""
    r = spec.count()
    out = np.zeros((len(images), r, embedder.dim), np.float32)
    boxes = np.zeros((len(images), r, 4), np.float32)
    rgbs, keep = [], np.zeros((len(images), r), bool)
    for i, img in enumerate(images):
        rgb = img.convert("RGB")
        rgbs.append(rgb)
        boxes[i], valid = spec.image_boxes(rgb)
        keep[i] = valid & (box_stds(rgb, boxes[i]) >= spec.min_std)
        keep[i, 0] = True  # the whole image, blank or not
    cropped = keep.copy()
    if spec.descriptors == "pooled" and len(images):
        if not hasattr(embedder, "embed_pooled"):
            raise ValueError(f"region descriptors 'pooled' need a descriptor with a pooled feature "
                             f"map (sscd_onnx, sscd_distilled_onnx), not {embedder.name}: set "
                             "region_descriptors: crops")
        # the grid is pooled; segment boxes (few, fitted to small objects that a map of
        # 10-15 cells a side blurs) are still cropped and embedded, and so is region 0 at
        # another side than the descriptor's own: it is the query's global descriptor
        pooled_mask = keep.copy()
        pooled_mask[:, len(spec.boxes()):] = False
        pooled_mask[:, 0] &= spec.pooled_side == 0
        cropped &= ~pooled_mask
        pooled = embedder.embed_pooled(rgbs, [boxes[i][pooled_mask[i]] for i in range(len(images))],
                                       batch_size=batch_size, side=spec.pooled_side)
        for i, vectors in enumerate(pooled):
            out[i][pooled_mask[i]] = vectors
    if cropped.any():  # cropped only where a crop is embedded, in keep's order
        crops = [c for i, rgb in enumerate(rgbs) for c in crop_regions(rgb, boxes[i][cropped[i]])]
        flat = out.reshape(keep.size, -1)
        if spec.descriptors == "pooled" and spec.segment_side:
            # segment crops described at segment_side, each its own map pooled whole;
            # region 0 stays embedded as the index's vectors were
            segments = cropped.copy()
            segments[:, 0] = False
            mine = segments[cropped]  # per crop in `crops`
            pooled = embedder.embed_pooled([c for c, m in zip(crops, mine, strict=True) if m],
                                           [np.asarray([FULL_BOX], np.float32)] * int(mine.sum()),
                                           batch_size=batch_size, side=spec.segment_side)
            if pooled:
                flat[segments.ravel()] = np.concatenate(pooled)
            crops = [c for c, m in zip(crops, mine, strict=True) if not m]
            cropped &= ~segments
        if crops:
            flat[cropped.ravel()] = embedder.embed_images(crops, batch_size=batch_size)
    return RegionQueries(out, boxes, spec)


def near_best(per_region: np.ndarray, slack: float = BOX_SLACK) -> np.ndarray:
    """(..., R) bool: the regions scoring within `slack` of the best of per_region (..., R)."""
    return per_region >= per_region.max(axis=-1, keepdims=True) - slack


def match_boxes(boxes: np.ndarray, near: np.ndarray) -> np.ndarray:
    """The box a match reports: boxes (Q, R, 4) of the query regions, near (Q, k, R) from
    region_scores -> (Q, k, 4), the bounding box of the regions scoring within BOX_SLACK
    of the best. Many small pooled boxes inside a copied object score about as well as each
    other and better than a box that also holds its surroundings: the best one alone
    would report a fragment of the object (and give geometric verification a fragment to
    match); their union covers it."""
    b = np.asarray(boxes, np.float32)[:, None]  # (Q, 1, R, 4)
    lo = np.where(near[..., None], b, np.inf).min(axis=2)
    hi = np.where(near[..., None], b, -np.inf).max(axis=2)
    out = np.concatenate([lo[..., :2], hi[..., 2:]], axis=-1)
    return np.where(near.any(axis=-1)[..., None], out, 0.0).astype(np.float32)


def region_scores(region_vectors: np.ndarray, candidates: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Best region-to-image similarity. region_vectors (Q, R, d), candidates (Q, C, d) or
    (C, d) shared by all queries -> (scores (Q, C) float32, near (Q, C, R) bool: the
    regions within BOX_SLACK of the best, whose union is the match's box, match_boxes)."""
    r = np.asarray(region_vectors, np.float32)
    c = np.asarray(candidates, np.float32)
    sims = np.einsum("qrd,cd->qcr", r, c) if c.ndim == 2 else np.einsum("qrd,qcd->qcr", r, c)
    return sims.max(axis=2), near_best(sims)


def union_candidates(global_ids: np.ndarray, region_ids: np.ndarray) -> np.ndarray:
    """Per query, the distinct ids of its global (Q, a) and region (Q, b) candidates,
    padded with -1 to a common width (Q, U)."""
    rows = [np.unique(np.concatenate([g, r])) for g, r in zip(global_ids, region_ids, strict=True)]
    rows = [u[u >= 0] for u in rows]
    width = max((len(u) for u in rows), default=0)
    out = np.full((len(rows), max(width, 1)), -1, np.int64)
    for i, u in enumerate(rows):
        out[i, :len(u)] = u
    return out


def region_pair_scores(query_regions: np.ndarray, candidate_regions: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Best region-to-region similarity: query_regions (Q, R, d); candidate_regions
    (Q, C, S, d), or (C, S, d) shared by all queries, the candidates' own region
    descriptors (region 0: the whole image) -> (scores (Q, C) float32, near (Q, C, R), as
    region_scores). Never below region_scores against the candidates' whole images."""
    q = np.asarray(query_regions, np.float32)
    c = np.asarray(candidate_regions, np.float32)
    sims = np.einsum("qrd,csd->qcrs" if c.ndim == 3 else "qrd,qcsd->qcrs", q, c)
    per_region = sims.max(axis=3)  # (Q, C, R): each query region's best candidate region
    return per_region.max(axis=2), near_best(per_region)


def rerank_choice(ids: np.ndarray, score: np.ndarray, vectors: np.ndarray, spec: RegionSpec
                  ) -> np.ndarray:
    """(Q, C) bool: the candidates to re-score. Per query, candidates in order of region
    score (ids (Q, C), -1: none; vectors (Q, C, d) their stored descriptors, or (C, d)
    shared): each is taken, and counts unless it is a near-duplicate (similarity >=
    spec.rerank_distinct) of one already counted, until spec.rerank count or
    spec.rerank_max are taken."""
    chosen = np.zeros(ids.shape, bool)
    if spec.rerank == 0:
        return chosen
    vecs = np.asarray(vectors, np.float32)
    order = np.argsort(-score, axis=1, kind="stable")[:, :spec.rerank_max]
    for q, row in enumerate(order):
        row = row[ids[q, row] >= 0]
        v = vecs[q, row] if vecs.ndim == 3 else vecs[row]
        sims = v @ v.T
        counted: list[int] = []
        for j, col in enumerate(row):
            chosen[q, col] = True
            if not counted or sims[j, counted].max() < spec.rerank_distinct:
                counted.append(j)
                if len(counted) == spec.rerank:
                    break
    return chosen


def rerank_pairs(query_regions: np.ndarray, ids: np.ndarray, score: np.ndarray, near: np.ndarray,
                 candidate_regions: Callable[[np.ndarray], np.ndarray], chosen: np.ndarray) -> int:
    """In place: each query's `chosen` candidates (Q, C) bool, e.g. from rerank_choice; ids
    (Q, C), -1: none; score (Q, C) and near (Q, C, R) from region_scores) get the
    region-to-region score when it is higher (it is never lower but for the stored
    descriptor's rounding: the whole training image is its region 0), and its regions near
    the best. candidate_regions: ids (U,) -> (U, R, d), called once. Returns the pairs
    re-scored."""
    rows, cols = np.nonzero(chosen & (ids >= 0))
    if not len(rows):
        return 0
    uniq, inv = np.unique(ids[rows, cols], return_inverse=True)
    cand = np.asarray(candidate_regions(uniq), np.float32)
    sims = np.einsum("nrd,nsd->nrs", np.asarray(query_regions, np.float32)[rows], cand[inv]).max(axis=2)
    pair = sims.max(axis=1)
    better = pair > score[rows, cols]
    score[rows[better], cols[better]] = pair[better]
    near[rows[better], cols[better]] = near_best(sims[better])
    return len(rows)
