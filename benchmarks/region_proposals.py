"""Region proposals and region descriptors, grid vs segments, crops vs pooled (issue 20,
parts 1 and 5): figures printed and written to JSON; not a test.

Gallery ("training set"): the demo's source photos (diffrep.data.demo.load_source_photos).
Copies: a part of a gallery photo pasted into a drawn scene (diffrep.synthetic.paste_region)
with its bounding box covering a drawn share of the scene, binned <10%, 10-20%, 20-40%,
>40%, with a regular (ellipse) or irregular (random blob) mask. Nulls: drawn scenes and flat
drawings with nothing pasted.

Each method (METHODS: boxes and how they are described) embeds the queries' and the
gallery's regions with the real SSCD and
scores every query against every gallery image region to region (what the re-rank does to
its top candidates; here every gallery image is re-scored, so the figures are the method's
upper bound, independent of candidate retrieval). A copy is found when its best gallery
image is its source and the score is above the threshold (0.5, the region floor); a null
above it is a false accusation. Printed: share found per area bin and mask, the null
maxima, descriptor calls per image and queries/s (region embedding of the query included;
the gallery side is what the region store keeps).

Run: python -m benchmarks.region_proposals --out benchmarks/results/region-proposals.json
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace

import numpy as np

BINS = {"<10%": (0.04, 0.10), "10-20%": (0.10, 0.20), "20-40%": (0.20, 0.40), ">40%": (0.40, 0.60)}
# name -> RegionSpec settings: which boxes (proposals, scales) and how each region gets its
# descriptor (crops: one SSCD call per region; pooled: pooled from one feature map per image)
METHODS = {
    "grid": {"proposals": "grid"},
    "segments": {"proposals": "segments"},
    "pooled grid": {"proposals": "grid", "descriptors": "pooled"},
    "pooled dense grid": {"proposals": "grid", "descriptors": "pooled", "scales": (0.2, 0.3, 0.4, 0.5, 0.75)},
    "pooled dense 480": {"proposals": "grid", "descriptors": "pooled", "scales": (0.2, 0.3, 0.4, 0.5, 0.75),
                         "pooled_side": 480},
    "pooled finer 480": {"proposals": "grid", "descriptors": "pooled",
                         "scales": (0.134, 0.2, 0.267, 0.334, 0.5, 0.75), "pooled_side": 480},
    "pooled dense 480 + cropped segments": {"proposals": "segments", "descriptors": "pooled",
                                            "scales": (0.2, 0.3, 0.4, 0.5, 0.75), "pooled_side": 480},
    "pooled dense 480 + segments at 224": {"proposals": "segments", "descriptors": "pooled",
                                           "scales": (0.2, 0.3, 0.4, 0.5, 0.75), "pooled_side": 480,
                                           "segment_side": 224},
    "pooled dense 480 + segments at 160": {"proposals": "segments", "descriptors": "pooled",
                                           "scales": (0.2, 0.3, 0.4, 0.5, 0.75), "pooled_side": 480,
                                           "segment_side": 160},
    "pooled dense 416 + segments at 160": {"proposals": "segments", "descriptors": "pooled",
                                           "scales": (0.2, 0.3, 0.4, 0.5, 0.75), "pooled_side": 416,
                                           "segment_side": 160},
    # one pass at the descriptor's own side serves region 0 (the global descriptor) and the
    # pooled grid; only the segment crops cost passes of their own
    "pooled dense 320 + segments at 160": {"proposals": "segments", "descriptors": "pooled",
                                           "scales": (0.2, 0.3, 0.4, 0.5, 0.75), "segment_side": 160},
    "pooled dense 320 + segments at 224": {"proposals": "segments", "descriptors": "pooled",
                                           "scales": (0.2, 0.3, 0.4, 0.5, 0.75), "segment_side": 224},
    # the same queries against gallery regions from the feature map alone (one pass per
    # training image, no crops): what a re-rank costs per candidate
    "pooled dense 480 + cropped segments; gallery pooled": {
        "proposals": "segments", "descriptors": "pooled", "scales": (0.2, 0.3, 0.4, 0.5, 0.75),
        "pooled_side": 480, "gallery": {"proposals": "grid"}},
    "pooled dense 480 + cropped segments; gallery pooled from 0.3": {
        "proposals": "segments", "descriptors": "pooled", "scales": (0.2, 0.3, 0.4, 0.5, 0.75),
        "pooled_side": 480, "gallery": {"proposals": "grid", "scales": (0.3, 0.4, 0.5, 0.75)}},
}


def make_queries(photos: dict, per_cell: int, nulls: int, seed: int) -> tuple[list, list[dict]]:
    from diffrep.synthetic import drawn_scene, flat_drawing, paste_region

    rng = random.Random(seed)
    keys = sorted(photos)
    images, truth = [], []
    for bin_name, (lo, hi) in BINS.items():
        for irregular in (False, True):
            for _ in range(per_cell):
                source = rng.choice(keys)
                scene = drawn_scene(seed * 10_000 + len(images), size=384)
                img, box = paste_region(photos[source], scene, rng, rng.uniform(lo, hi), irregular)
                images.append(img)
                truth.append({"kind": "copy", "bin": bin_name, "mask": "irregular" if irregular else "ellipse",
                              "source": source, "box": box})
    for i in range(nulls):
        images.append(drawn_scene(seed * 10_000 + 5_000 + i, size=384) if i % 2 else flat_drawing(seed * 10_000 + i))
        truth.append({"kind": "null"})
    return images, truth


def evaluate(method: str, embedder, photos: dict, images: list, truth: list[dict],
             threshold: float, null_margin: float = 0.05, verify_band: float = 0.0) -> dict:
    """One method's figures; besides the fixed `threshold`, "found_calibrated" uses what a
    scan's calibration would (max(threshold, null max + null_margin): here the drawn nulls
    stand in for the index's own). With `verify_band`, "found_verified" adds what the
    scan's geometric rescue would: a best match scoring within `verify_band` below the
    calibrated threshold counts when geometry (verify_pair, the whole query against the
    gallery photo) verifies it; `nulls_verified` says how many nulls in that band did."""
    from diffrep.search.regions import RegionSpec, embed_regions, region_pair_scores

    settings = dict(METHODS[method])
    gallery_overrides = settings.pop("gallery", {})
    spec = RegionSpec(**settings)
    keys = sorted(photos)
    gallery = embed_regions(embedder, [photos[k] for k in keys], replace(spec, **gallery_overrides)).vectors
    t0 = time.perf_counter()
    queries = embed_regions(embedder, images, spec)
    embed_s = time.perf_counter() - t0
    calls = int(np.abs(queries.vectors).sum(axis=2).astype(bool).sum())
    scores, _ = region_pair_scores(queries.vectors, gallery)  # (Q, G)
    best = scores.argmax(axis=1)
    out: dict = {"regions_per_image": round(calls / len(images), 2),
                 "queries_per_s_embedding": round(len(images) / embed_s, 2), "found": {}}
    for bin_name in BINS:
        for mask in ("ellipse", "irregular"):
            rows = [i for i, t in enumerate(truth) if t.get("bin") == bin_name and t.get("mask") == mask]
            found = [keys[best[i]] == truth[i]["source"] and scores[i, best[i]] > threshold for i in rows]
            first = [keys[best[i]] == truth[i]["source"] for i in rows]
            out["found"][f"{bin_name} {mask}"] = {"copies": len(rows), "found": round(float(np.mean(found)), 3),
                                                  "source_first": round(float(np.mean(first)), 3)}
    nulls = [i for i, t in enumerate(truth) if t["kind"] == "null"]
    null_scores = scores[nulls].max(axis=1)
    out["null_max"] = round(float(null_scores.max()), 4)
    out["nulls_above_threshold"] = int((null_scores > threshold).sum())
    copies = [i for i, t in enumerate(truth) if t["kind"] == "copy"]
    calibrated = max(threshold, out["null_max"] + null_margin)
    out["calibrated_threshold"] = round(calibrated, 4)
    for key, thr in (("found_all", threshold), ("found_calibrated", calibrated)):
        out[key] = round(float(np.mean([keys[best[i]] == truth[i]["source"] and scores[i, best[i]] > thr
                                        for i in copies])), 3)
    for cell, f in out["found"].items():  # the same cells at the calibrated threshold
        bin_name, mask = cell.rsplit(" ", 1)
        rows = [i for i, t in enumerate(truth) if t.get("bin") == bin_name and t.get("mask") == mask]
        f["found_calibrated"] = round(float(np.mean([keys[best[i]] == truth[i]["source"]
                                                     and scores[i, best[i]] > calibrated for i in rows])), 3)
    if verify_band:
        verified_in_band(out, photos, images, truth, keys, scores, best, calibrated, verify_band)
    return out


def verified_in_band(out: dict, photos: dict, images: list, truth: list[dict], keys: list[str],
                     scores: np.ndarray, best: np.ndarray, threshold: float, band: float) -> None:
    """Into `out`: per cell `found_verified` (source first, and above `threshold` or in
    (threshold - band, threshold] and verified), `found_verified_all`, and the nulls in the
    band and how many of them verified (the scan's rescue is on only when none does)."""
    from diffrep.search.geometry import verify_pair

    lo = threshold - band
    t0, pairs = time.perf_counter(), 0

    def counted(i: int) -> bool:
        nonlocal pairs
        s = scores[i, best[i]]
        if s > threshold:
            return True
        if s <= lo:
            return False
        pairs += 1
        return verify_pair(images[i], photos[keys[best[i]]]).verified

    copies = [i for i, t in enumerate(truth) if t["kind"] == "copy"]
    hit = {i: keys[best[i]] == truth[i]["source"] and counted(i) for i in copies}
    for cell, f in out["found"].items():
        bin_name, mask = cell.rsplit(" ", 1)
        rows = [i for i in copies if truth[i]["bin"] == bin_name and truth[i]["mask"] == mask]
        f["found_verified"] = round(float(np.mean([hit[i] for i in rows])), 3)
    out["found_verified_all"] = round(float(np.mean(list(hit.values()))), 3)
    nulls = [i for i, t in enumerate(truth) if t["kind"] == "null" and lo < scores[i, best[i]] <= threshold]
    out["verify_band"] = [round(lo, 4), round(threshold, 4)]
    out["nulls_in_band"] = len(nulls)
    out["nulls_verified"] = int(sum(counted(i) for i in nulls))
    out["verify_s_per_pair"] = round((time.perf_counter() - t0) / max(pairs, 1), 4)


def main() -> None:
    from benchmarks.common import write_results
    from diffrep.data.demo import load_source_photos
    from diffrep.models import create_embedder, default_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per_cell", type=int, default=8, help="copies per area bin and mask")
    ap.add_argument("--nulls", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verify_band", type=float, default=0.0,
                    help="also count best matches this far below the calibrated threshold that geometry verifies")
    ap.add_argument("--out", default="bench-results/region-proposals.json")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"any of: {', '.join(METHODS)}")
    args = ap.parse_args()
    photos = {k: v.convert("RGB") for k, v in load_source_photos().items()}
    embedder = create_embedder("sscd_onnx", weights=default_weights("sscd_onnx"))
    images, truth = make_queries(photos, args.per_cell, args.nulls, args.seed)
    results = {"benchmark": "region_proposals", "args": vars(args), "gallery_photos": len(photos),
               "copies": sum(t["kind"] == "copy" for t in truth), "nulls": args.nulls, "methods": {}}
    for method in args.methods.split(","):
        r = results["methods"][method] = evaluate(method, embedder, photos, images, truth, args.threshold,
                                                  verify_band=args.verify_band)
        print(f"{method}: {r['regions_per_image']} regions/image, {r['queries_per_s_embedding']} queries/s; "
              f"found {r['found_all']} of copies; null max {r['null_max']} "
              f"({r['nulls_above_threshold']} above {args.threshold}); at the calibrated "
              f"{r['calibrated_threshold']}: found {r['found_calibrated']}", flush=True)
        if args.verify_band:
            print(f"  with verification in {r['verify_band']}: found {r['found_verified_all']}; "
                  f"nulls in the band {r['nulls_in_band']}, verified {r['nulls_verified']}", flush=True)
        for cell, f in r["found"].items():
            print(f"    {cell:>18}: found {f['found']:.3f} (calibrated {f['found_calibrated']:.3f}"
                  f"{', verified ' + format(f['found_verified'], '.3f') if args.verify_band else ''}), "
                  f"source first {f['source_first']:.3f}", flush=True)
    write_results(args.out, results)


if __name__ == "__main__":
    main()
