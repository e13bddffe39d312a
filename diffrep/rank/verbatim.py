"""Ground truth for verbatim memorization (paper 2, sec. 4), on pixels.

Distance: root-mean-square difference of images resized to 256x256, RGB in [0, 1]
(optionally over a mask of pixels). delta_V = 0.12 here matches the reference code's
threshold on the summed squared error; written into every output that uses it.

- matching verbatim (MV): min over the J generations of the distance to the caption's own
  training image <= delta_v;
- retrieval verbatim (RV): min distance to a retrieved training neighbour <= delta;
- template verbatim (TV): min masked distance to one of the k nearest neighbours <= delta,
  the mask removing the pixels that vary inside that neighbour's near-duplicate group
  (a template: fixed layout, varying content);
- untested: none of the above, and no near-duplicate group was available to build a
  template mask from, so TV could not be tested (diffrep.rank.truth.label_caption).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

SIZE = 256
LABELS = ("MV", "RV", "TV", "none")
#: not MV or RV, and the template test could not run (no near-duplicate group, so no mask):
#: neither a copy nor shown not to be one
UNTESTED = "untested"
VERBATIM = ("MV", "RV", "TV")


def to_unit(image: Image.Image | np.ndarray, size: int = SIZE) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1] (bicubic resize, aspect not kept)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
    img = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, np.float32) / 255.0


def rms_distance(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """RMS pixel difference of two unit images, over `mask` (H, W) pixels when given."""
    sq = np.square(a - b).mean(axis=-1)
    if mask is not None:
        if not mask.any():
            return float("inf")
        sq = sq[mask]
    return float(np.sqrt(sq.mean()))


def stable_mask(group: Sequence[np.ndarray], tolerance: float = 0.1) -> np.ndarray:
    """Pixels that do not vary across a near-duplicate group's unit images: per-pixel
    standard deviation (max over channels) <= tolerance. One image: every pixel."""
    stack = np.stack(group)
    return stack.std(axis=0).max(axis=-1) <= tolerance


@dataclass
class Verdict:
    label: str
    matching_distance: float | None
    retrieval_distance: float | None
    template_distance: float | None


def _min_dist(gens: Sequence[np.ndarray], refs: Sequence[np.ndarray],
              masks: Sequence[np.ndarray | None] | None = None) -> float | None:
    if not refs or not gens:
        return None
    masks = masks or [None] * len(refs)
    return min(rms_distance(g, r, m) for g in gens for r, m in zip(refs, masks, strict=True))


def judge(generations: Sequence[np.ndarray], own: Sequence[np.ndarray],
          neighbours: Sequence[np.ndarray], templates: Sequence[tuple[np.ndarray, np.ndarray]],
          delta_v: float = 0.12, delta: float = 0.12) -> Verdict:
    """Label one caption from its J generations (unit images), its own training image(s)
    (empty when unavailable), retrieved neighbours, and (image, stable mask) templates.
    MV > RV > TV > none."""
    dm = _min_dist(generations, list(own))
    dr = _min_dist(generations, list(neighbours))
    dt = _min_dist(generations, [t for t, _ in templates], [m for _, m in templates])
    if dm is not None and dm <= delta_v:
        label = "MV"
    elif dr is not None and dr <= delta:
        label = "RV"
    elif dt is not None and dt <= delta:
        label = "TV"
    else:
        label = "none"
    return Verdict(label, dm, dr, dt)


def nearest_template(generations: Sequence[np.ndarray],
                     templates: Sequence[tuple[np.ndarray, np.ndarray]]) -> int | None:
    """Index of the template with the smallest masked distance to any generation."""
    if not templates:
        return None
    return int(np.argmin([min(rms_distance(g, im, m) for g in generations) for im, m in templates]))


def precision_vs_found(scores: np.ndarray, verbatim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Captions ranked by score (descending, ties by position): for each cut-off n, the
    number of verbatims found in the top n and the precision found / n."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hits = np.asarray(verbatim, bool)[order]
    found = np.cumsum(hits)
    return found, found / np.arange(1, len(hits) + 1)
