"""Geometric verification (diffrep.search.geometry) per pair (a benchmark, not a test):
cost and outcome per feature method on real photos (scikit-image's), figures printed and
written to JSON.

Positives: each photo pasted into each other photo at 5%, 10%, 20% and 40% of the
scene's area (rectangular pastes, JPEG 75), verified against the pasted photo. Nulls:
every ordered pair of distinct photos, and pairs of flat drawings (shapes in flat colours
on white: what a descriptor confuses on icons). Per method: share verified per area bin,
false share on each null kind, the most inliers of any null, milliseconds per pair (p50).

Mirrors: copybench's segmix copies (an irregular part of a gallery photo, augmented, flipped
half the time, pasted into another photo) against their source, and five unrelated gallery
images per copy, with SIFT, without and with the mirrored try (`verify_pair(mirror=...)`).

Run: python -m benchmarks.verify --out bench-results/verify.json
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
from PIL import Image
from skimage import data

from benchmarks.common import write_results
from diffrep.search.geometry import METHODS, verify_pair
from diffrep.synthetic import flat_drawing

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field",
          "immunohistochemistry", "stereo_motorcycle"]
AREAS = [0.05, 0.1, 0.2, 0.4]


def photo(name: str, size=(480, 360)) -> Image.Image:
    img = getattr(data, name)()
    if isinstance(img, tuple):
        img = img[0]
    return Image.fromarray(img).convert("RGB").resize(size, Image.Resampling.BILINEAR)


def jpeg(img: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def pasted(scene: Image.Image, source: Image.Image, area: float, rng) -> Image.Image:
    w = round(np.sqrt(area * scene.width * scene.height * source.width / source.height))
    h = round(w * source.height / source.width)
    out = scene.copy()
    out.paste(source.resize((w, h)), (int(rng.integers(0, scene.width - w)), int(rng.integers(0, scene.height - h))))
    return jpeg(out)


def segmix_mirrors(unrelated_per_copy: int = 5, seed: int = 0) -> dict:
    """Share of copybench's segmix copies verified against their source, and of unrelated
    (copy, gallery image) pairs verified, with and without mirrors (SIFT)."""
    from diffrep.copybench.copysets import make_gallery, make_queries
    from diffrep.data.demo import load_source_photos

    gallery = make_gallery(load_source_photos(True), 3, seed)
    index = {g.key: i for i, g in enumerate(gallery)}
    copies = make_queries(gallery, "segmix", seed)
    rng = np.random.default_rng(seed)
    nulls = []
    for q in copies:
        held = {gallery[index[q.source_key]].group} | ({gallery[index[q.other_key]].group} if q.other_key else set())
        others = [j for j in rng.permutation(len(gallery)) if gallery[j].group not in held]
        nulls += [(q.image, gallery[j].image) for j in others[:unrelated_per_copy]]
    out = {"copies": len(copies), "unrelated_pairs": len(nulls)}
    for mirror in (False, True):
        t = time.perf_counter()
        found = [verify_pair(q.image, gallery[index[q.source_key]].image, mirror=mirror) for q in copies]
        per_pair = (time.perf_counter() - t) / len(copies)
        false = [verify_pair(a, b, mirror=mirror).verified for a, b in nulls]
        out["with_mirrors" if mirror else "without_mirrors"] = {
            "copies_verified": int(sum(v.verified for v in found)),
            "verified_mirrored": int(sum(v.verified and v.mirrored for v in found)),
            "unrelated_verified": int(sum(false)), "ms_per_copy_pair": round(1000 * per_pair, 1)}
    # how far verification could go: inliers of each pair's best fit, direct or mirrored,
    # whatever the rule (a pair that does not verify tries both and keeps the larger)
    copy_inliers = [verify_pair(q.image, gallery[index[q.source_key]].image, min_inliers=10**6,
                                few_inliers=10**6).inliers for q in copies]
    null_inliers = [verify_pair(a, b, min_inliers=10**6, few_inliers=10**6).inliers for a, b in nulls]
    out["inliers"] = {
        "copies_quantiles": {str(q): float(np.quantile(copy_inliers, q)) for q in (0.25, 0.5, 0.75, 1.0)},
        "unrelated_max": int(max(null_inliers)),
        "at_least": {str(k): {"copies": int(sum(n >= k for n in copy_inliers)),
                              "unrelated": int(sum(n >= k for n in null_inliers))} for k in (4, 5, 6, 8, 10, 15)}}
    print("segmix mirrors", out, flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None)
    p.add_argument("--segmix_only", action="store_true", help="only copybench's segmix copies and their nulls")
    args = p.parse_args()
    if args.segmix_only:
        write_results(args.out, {"segmix_mirrors": segmix_mirrors()})
        return 0
    photos = {n: photo(n) for n in PHOTOS}
    rng = np.random.default_rng(0)
    positives = [(area, pasted(photos[b], photos[a], area, rng), photos[a])
                 for a in PHOTOS for b in PHOTOS if a != b for area in AREAS]
    unrelated = [(photos[a], photos[b]) for a in PHOTOS for b in PHOTOS if a != b]
    drawings = [(flat_drawing(s), flat_drawing(s + 1000)) for s in range(40)]
    results = {"pairs": {"positives": len(positives), "unrelated_photos": len(unrelated),
                         "flat_drawings": len(drawings)}, "methods": {}}
    for method in METHODS:
        times, found = [], {a: [] for a in AREAS}
        for area, query, training in positives:
            t = time.perf_counter()
            v = verify_pair(query, training, method=method)
            times.append(time.perf_counter() - t)
            found[area].append(v.verified)
        nulls = {}
        for kind, pairs in (("unrelated_photos", unrelated), ("flat_drawings", drawings)):
            outcomes = [verify_pair(q, tr, method=method) for q, tr in pairs]
            nulls[kind] = {"false_share": round(float(np.mean([o.verified for o in outcomes])), 4),
                           "max_inliers": max(o.inliers for o in outcomes)}
        results["methods"][method] = {
            "found_by_area": {f"{int(a * 100)}%": round(float(np.mean(v)), 3) for a, v in found.items()},
            "nulls": nulls, "ms_per_pair_p50": round(1000 * float(np.median(times)), 1),
            "ms_per_pair_p90": round(1000 * float(np.percentile(times, 90)), 1)}
        print(method, results["methods"][method], flush=True)
    results["segmix_mirrors"] = segmix_mirrors()
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
