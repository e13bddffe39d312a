"""Geometric verification of a candidate copy (issue 20): local features of the query (or
its matched region) and of the training image, matched with Lowe's ratio test, and a
similarity transform (rotation, uniform scale, translation) fitted with RANSAC, and if
that fails, the same with the training image mirrored (a flipped copy). A real copy,
whole or pasted, shares many features in one consistent geometry; an unrelated image that
only looks alike to a global descriptor (a flat icon, a texture) does not.

Gives the inlier count and two boxes in the query, normalised (x0, y0, x1, y1): where the
training image's frame lands under the fitted transform, and the box of the inlier
features (the part of the query that really matches).

Memory and cost: two images of at most `max_side` pixels and their features; SIFT at
512 px costs tens of milliseconds per pair on one core (benchmarks/verify.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

METHODS = ("sift", "orb", "akaze")
IDENTICAL_AGREEMENT = 0.85  # pixel_agreement of a shared part: 0.97-0.99 for a photo pasted
# plain, mirrored, blurred or posterized (tests/test_geometry.py), 0.89-0.99 for one
# watermark overlaid on two photos (the demo corpus: the text's surroundings differ); at
# most 0.43 for the chance fits of 30 unrelated photo pairs. Copybench's augmented segmix
# copies spread over -0.1..1.0, so a low agreement is no evidence against a copy
MIN_TEXTURE_STD = 8.0  # grey levels: a flatter patch has no pixel agreement to measure


@dataclass(frozen=True)
class Verification:
    """The outcome for one (query, training image) pair."""

    verified: bool
    inliers: int
    matches: int  # feature matches passing the ratio test
    box: tuple[float, float, float, float] | None  # the training frame mapped into the query
    inlier_box: tuple[float, float, float, float] | None  # the inlier features' extent
    scale: float | None  # training-image pixels to query pixels
    mirrored: bool = False  # the fit is of the training image flipped left to right
    # normalised cross-correlation of the query and the training image mapped onto it,
    # over the inlier features' extent (None: no fit, or too little texture there)
    pixel_agreement: float | None = None

    @property
    def identical_region(self) -> bool:
        """Verified, and the matched part agrees pixel for pixel once mapped (pixel_agreement
        >= IDENTICAL_AGREEMENT; normalised, so up to brightness and contrast): one image
        holds a part of the other, resized, flipped, re-encoded or lightly blurred. Two
        training images sharing one pasted icon (0.996) or one watermark (0.892) do; a
        solarized paste and a chance agreement of features do not."""
        return self.verified and self.pixel_agreement is not None and self.pixel_agreement >= IDENTICAL_AGREEMENT


def _gray(image: Image.Image, max_side: int) -> tuple[np.ndarray, float]:
    """8-bit grayscale, longer side at most max_side; and the factor applied."""
    img = image.convert("L")
    factor = min(1.0, max_side / max(img.size))
    if factor < 1.0:
        img = img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))),
                         Image.Resampling.BILINEAR)
    return np.asarray(img, np.uint8), factor


def _detector(method: str):
    import cv2

    if method == "sift":
        return cv2.SIFT_create(nfeatures=2000), cv2.NORM_L2
    if method == "orb":
        return cv2.ORB_create(nfeatures=2000), cv2.NORM_HAMMING
    if method == "akaze":
        return cv2.AKAZE_create(), cv2.NORM_HAMMING
    raise ValueError(f"method must be one of {METHODS}, not {method!r}")


def _fit(kt, dt, kq, dq, norm: int, ratio: float, reprojection_px: float):
    """Ratio-test matches of training features to query features, one per query feature,
    and the similarity transform RANSAC fits to them: (matrix or None, inlier mask or
    None, the matches' query points or None, number of matches)."""
    import cv2

    if dq is None or dt is None or len(kq) < 2 or len(kt) < 2:
        return None, None, None, 0
    pairs = cv2.BFMatcher(norm).knnMatch(dt, dq, k=2)
    good = [m for m, *rest in pairs if rest and m.distance < ratio * rest[0].distance]
    best: dict[int, object] = {}  # one training feature per query feature (repeated patterns
    for m in good:  # would otherwise pile many matches onto one query point)
        if m.trainIdx not in best or m.distance < best[m.trainIdx].distance:
            best[m.trainIdx] = m
    good = list(best.values())
    if len(good) < 3:
        return None, None, None, len(good)
    src = np.float32([kt[m.queryIdx].pt for m in good])
    dst = np.float32([kq[m.trainIdx].pt for m in good])
    matrix, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                               ransacReprojThreshold=reprojection_px,
                                               maxIters=2000, confidence=0.995)
    # a transform that shrinks or blows the training image up by more than 20x is not a copy
    if matrix is None or not 0.05 <= float(np.sqrt(abs(np.linalg.det(matrix[:, :2])))) <= 20:
        return None, None, dst, len(good)
    return matrix, mask.ravel().astype(bool), dst, len(good)


def verify_pair(query: Image.Image, training: Image.Image, query_box=None, method: str = "sift",
                min_inliers: int = 15, ratio: float = 0.75, max_side: int = 512,
                reprojection_px: float = 4.0, few_inliers: int = 6,
                few_inlier_share: float = 0.6, mirror: bool = True) -> Verification:
    """Verify that `training` (or part of it) appears in `query` (within `query_box`, a
    normalised box of the query, when given: a region match's). `verified` when RANSAC
    keeps at least `min_inliers` matches under one similarity transform, or, for images
    with little texture (a smooth photo yields a handful of features), at least
    `few_inliers` that are `few_inlier_share` of all the matches (chance agreements are a
    small share of their matches). With `mirror`, a pair that does not verify is tried
    again with the training image flipped left to right (`Verification.mirrored`): copies
    are often flipped, copy descriptors such as SSCD are trained to ignore it, and local
    features are not (on copybench's segmix copies it doubles the share verified, 36 -> 72
    of 126, with none of 630 unrelated pairs verified: docs/benchmarks.md)."""
    qx0 = qy0 = 0.0
    qw, qh = query.size
    if query_box is not None:  # search the region, with a margin of 10% of its size
        x0, y0, x1, y1 = (float(v) for v in query_box)
        mx, my = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
        x0, y0, x1, y1 = max(0.0, x0 - mx), max(0.0, y0 - my), min(1.0, x1 + mx), min(1.0, y1 + my)
        crop = (round(x0 * qw), round(y0 * qh), max(round(x0 * qw) + 1, round(x1 * qw)),
                max(round(y0 * qh) + 1, round(y1 * qh)))
        qx0, qy0 = crop[0], crop[1]
        query = query.crop(crop)
    q, qf = _gray(query, max_side)
    t, tf = _gray(training, max_side)
    detector, norm = _detector(method)
    kq, dq = detector.detectAndCompute(q, None)
    if dq is None or len(kq) < 2:
        return Verification(False, 0, 0, None, None, None)

    def is_verified(n_in: int, n_good: int) -> bool:
        return n_in >= min_inliers or (n_in >= few_inliers and n_in >= few_inlier_share * n_good)

    tried = []
    for flipped in (False, True) if mirror else (False,):
        kt, dt = detector.detectAndCompute(t[:, ::-1].copy() if flipped else t, None)
        fit = _fit(kt, dt, kq, dq, norm, ratio, reprojection_px)
        n_in = int(fit[1].sum()) if fit[0] is not None else 0
        tried.append((is_verified(n_in, fit[3]), n_in, flipped, fit))
        if tried[-1][0]:
            break
    verified, n_in, flipped, (matrix, inlier, dst, n_good) = max(tried, key=lambda x: (x[0], x[1]))
    if matrix is None:
        return Verification(False, 0, n_good, None, None, None, flipped)

    def to_query(points: np.ndarray) -> np.ndarray:  # query-crop pixels at qf -> full query, normalised
        full = points / qf + np.array([qx0, qy0], np.float32)
        return full / np.array([qw, qh], np.float32)

    th, tw = t.shape  # a flipped frame has the same corners
    corners = np.float32([[0, 0], [tw, 0], [tw, th], [0, th]])
    mapped = to_query(corners @ matrix[:, :2].T + matrix[:, 2])
    box = tuple(float(np.clip(v, 0.0, 1.0)) for v in (*mapped.min(0), *mapped.max(0)))
    pts = to_query(dst[inlier]) if n_in else None
    inlier_box = tuple(float(v) for v in (*pts.min(0), *pts.max(0))) if pts is not None else None
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2])))) * tf / qf
    agreement = _pixel_agreement(q, t[:, ::-1] if flipped else t, matrix, dst[inlier]) if n_in else None
    return Verification(verified, n_in, n_good, box, inlier_box, scale, flipped, agreement)


def _pixel_agreement(q: np.ndarray, t: np.ndarray, matrix: np.ndarray, points: np.ndarray) -> float | None:
    """Normalised cross-correlation of grey query `q` and grey training image `t` mapped
    onto it by `matrix` (training -> query pixels), over the box of `points` (the inlier
    features, query pixels); None when the box holds under 64 mapped pixels or either side
    is flat there (standard deviation under MIN_TEXTURE_STD)."""
    import cv2

    h, w = q.shape
    mapped = cv2.warpAffine(np.ascontiguousarray(t, np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ones(t.shape, np.float32), matrix, (w, h), flags=cv2.INTER_NEAREST) > 0.5
    x0, y0 = np.floor(points.min(0)).astype(int)
    x1, y1 = np.ceil(points.max(0)).astype(int) + 1
    sel = np.zeros((h, w), bool)
    sel[max(0, y0):y1, max(0, x0):x1] = True
    sel &= inside
    if sel.sum() < 64:
        return None
    a, b = q.astype(np.float32)[sel], mapped[sel]
    if a.std() < MIN_TEXTURE_STD or b.std() < MIN_TEXTURE_STD:
        return None
    a, b = a - a.mean(), b - b.mean()
    return round(float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())), 4)
