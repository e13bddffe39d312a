"""Calibration of the region-score threshold (figures printed and written to JSON; not a test).

Region scores (diffrep.search.regions: best similarity of any grid crop of a query to a
training image) are higher than global similarities by construction, so their
replication threshold comes from data. On copybench's gallery (crops of real photos, the
"training set") and its copy sets, with the real SSCD:

- null scores, from images that copy nothing of the image they are scored against:
  * baseline: each training image region-scored against the rest of the training set,
    other crops of its own photo excluded (they are its duplicates);
  * copy sets: each query against the training images of photos it holds nothing of
    (neither its source's nor the mixed-in photo's);
  * novel drawings (diffrep.scan.demo.novel_image) against every training image;
- positive scores: each query against its source, per set.

The threshold is the largest null score, rounded up to the next 0.05: every novel image
stays below it. Printed beside it: the share of each set's copies above it (region score)
and above 0.5 (global similarity), and the null quantiles.

Run: python -m benchmarks.regions --out bench-results/regions.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

SETS = ("cutmix", "segmix", "segmix_background", "diagonal_image", "plain")


def quantiles(x: np.ndarray) -> dict:
    return {str(q): round(float(np.quantile(x, q)), 4) for q in (0.5, 0.9, 0.99, 1.0)}


def calibrate(model: str, crops_per_photo: int, novel: int, seed: int) -> dict:
    from diffrep.copybench.copysets import make_gallery, make_queries
    from diffrep.data.demo import load_source_photos
    from diffrep.models import create_embedder, default_weights
    from diffrep.scan.demo import novel_image
    from diffrep.search.regions import RegionSpec, embed_regions, region_scores

    spec = RegionSpec()
    embedder = create_embedder(model, weights=default_weights(model))
    photos = load_source_photos(True)
    gallery = make_gallery(photos, crops_per_photo, seed)
    groups = np.array([g.group for g in gallery])
    index = {g.key: i for i, g in enumerate(gallery)}
    t0 = time.perf_counter()
    g_regions = embed_regions(embedder, [g.image for g in gallery], spec)
    g_vecs = g_regions.global_vectors
    t_gallery = time.perf_counter() - t0
    nulls: dict[str, np.ndarray] = {}
    scores, _ = region_scores(g_regions.vectors, g_vecs)
    nulls["baseline"] = np.where(groups[:, None] == groups[None, :], -1, scores).max(1)
    drawings = [novel_image(seed * 1000 + 700 + i) for i in range(novel)]
    scores, _ = region_scores(embed_regions(embedder, drawings, spec).vectors, g_vecs)
    nulls["novel"] = scores.max(1)
    positives, global_pos, unrelated = {}, {}, []
    for name in SETS:
        queries = make_queries(gallery, name, seed)
        rq = embed_regions(embedder, [q.image for q in queries], spec)
        scores, _ = region_scores(rq.vectors, g_vecs)
        src = np.array([index[q.source_key] for q in queries])
        positives[name] = scores[np.arange(len(src)), src]
        global_pos[name] = (rq.global_vectors * g_vecs[src]).sum(1)
        related = groups[None, :] == groups[src][:, None]
        others = [groups[index[q.other_key]] if q.other_key else "" for q in queries]
        related |= groups[None, :] == np.array(others)[:, None]
        unrelated.append(np.where(related, -1, scores).max(1))
    nulls["copy_sets_unrelated"] = np.concatenate(unrelated)
    worst = max(float(v.max()) for v in nulls.values())
    threshold = math.ceil(worst * 20 - 1e-9) / 20
    out = {"model": model, "regions_per_query": spec.count(), "scales": list(spec.scales),
           "gallery": len(gallery), "photos": len(photos), "novel_drawings": novel,
           "gallery_region_embed_s": round(t_gallery, 2),
           "null_quantiles": {k: quantiles(v) for k, v in nulls.items()},
           "null_count": {k: int(len(v)) for k, v in nulls.items()},
           "largest_null": round(worst, 4), "threshold": threshold,
           "copies_above": {name: {"region_score_above_threshold": round(float((p > threshold).mean()), 3),
                                   "global_above_0.5": round(float((global_pos[name] > 0.5).mean()), 3),
                                   "region_score_quantiles": quantiles(p)}
                            for name, p in positives.items()}}
    print(f"region threshold for {model}: {threshold} (largest null score {worst:.3f})")
    for k, v in out["null_quantiles"].items():
        print(f"  null {k:>20} (n={out['null_count'][k]}): {v}")
    print("  | set | copies with region score > threshold | copies with global similarity > 0.5 |")
    for name, c in out["copies_above"].items():
        print(f"  | {name} | {c['region_score_above_threshold']:.3f} | {c['global_above_0.5']:.3f} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results/regions.json")
    parser.add_argument("--model", default="sscd_onnx")
    parser.add_argument("--crops_per_photo", type=int, default=3)
    parser.add_argument("--novel", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = calibrate(args.model, args.crops_per_photo, args.novel, args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
