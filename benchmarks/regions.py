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
  * novel drawings (diffrep.synthetic.drawn_scene) against every training image;
- positive scores: each query against its source, per set (copybench's sets and
  pasted-object copies as the demo's planted folder makes them).

Three scorings: `image` (each query region against the whole training image's stored
descriptor), `rerank` (what Searcher.search does by default: then each query's top 3
distinct candidates, with the near-duplicates of those before them, re-scored region to
region with the training images' own grid crops; diffrep.search.regions.rerank_choice) and
`pairs_all`
(region to region against every training image: an upper bound of the null).

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
import random
import shutil
import tempfile
import time
from dataclasses import replace

import numpy as np

from benchmarks.common import write_results
from diffrep.search.regions import RegionSpec, embed_regions

SETS = ("cutmix", "segmix", "segmix_background", "diagonal_image", "plain")


BINS = np.round(np.arange(0, 1.0001, 0.05), 2)  # histogram edges of the scores


def quantiles(x: np.ndarray) -> dict:
    return {str(q): round(float(np.quantile(x, q)), 4) for q in (0.5, 0.9, 0.99, 1.0)}


def histogram(x: np.ndarray) -> list[int]:
    """Counts of `x` in BINS (scores below 0 in the first bin, 1.0 in the last)."""
    return np.histogram(np.clip(x, 0, 1), BINS)[0].tolist()


def job_spec(model: str, descriptors: str) -> RegionSpec:
    """The region spec the jobs use for `model` by default, with `descriptors` (auto: as the
    jobs resolve it)."""
    from diffrep.search.config import SearchConfig

    return SearchConfig(region_descriptors=descriptors).region_spec(model)


def calibrate(model: str, crops_per_photo: int, novel: int, seed: int, spec: RegionSpec,
              verify_band: float = 0.0, verify_top: int = 1) -> dict:
    from diffrep.copybench.copysets import make_gallery, make_queries
    from diffrep.data.demo import load_source_photos
    from diffrep.models import create_embedder, default_weights
    from diffrep.search.regions import (
        region_pair_scores,
        region_scores,
        rerank_choice,
        rerank_pairs,
    )
    from diffrep.synthetic import drawn_scene, paste_object

    embedder = create_embedder(model, weights=default_weights(model))
    photos = load_source_photos(True)
    gallery = make_gallery(photos, crops_per_photo, seed)
    groups = np.array([g.group for g in gallery])
    index = {g.key: i for i, g in enumerate(gallery)}
    t0 = time.perf_counter()
    g_regions = embed_regions(embedder, [g.image for g in gallery], spec).vectors
    t_gallery = time.perf_counter() - t0
    # each scoring: query regions (Q, R, d) -> scores (Q, gallery)
    # each scoring: query regions (Q, R, d), excluded (Q, gallery) bool or None -> scores
    # (Q, gallery), excluded items at -1 (excluded before the re-rank picks its top: a null
    # score is that of the best image the query holds nothing of, re-ranked as it would be)
    def image(r: np.ndarray, excluded: np.ndarray | None) -> np.ndarray:
        scores = region_scores(r, g_regions[:, 0])[0]
        return scores if excluded is None else np.where(excluded, -1, scores)

    def with_rerank(r: np.ndarray, excluded: np.ndarray | None) -> np.ndarray:  # as Searcher.search
        scores, best = region_scores(r, g_regions[:, 0])
        if excluded is not None:
            scores = np.where(excluded, -1, scores).astype(np.float32)
        ids = np.broadcast_to(np.arange(len(gallery)), scores.shape)
        rerank_pairs(r, ids, scores, best, lambda i: g_regions[i],
                     rerank_choice(ids, scores, g_regions[:, 0], spec))
        return scores if excluded is None else np.where(excluded, -1, scores)

    def pairs_all(r: np.ndarray, excluded: np.ndarray | None) -> np.ndarray:
        scores = region_pair_scores(r, g_regions)[0]
        return scores if excluded is None else np.where(excluded, -1, scores)

    scorings = {"image": image, "rerank": with_rerank, "pairs_all": pairs_all}

    def top(row: np.ndarray) -> list[tuple[int, float]]:  # a null's best verify_top (index, score)
        order = np.argsort(-row, kind="stable")[:verify_top]
        return [(int(j), float(row[j])) for j in order]
    drawing_images = [drawn_scene(seed * 1000 + 700 + i) for i in range(novel)]
    drawings = embed_regions(embedder, drawing_images, spec).vectors
    rng = random.Random(seed)
    query_sets = {name: make_queries(gallery, name, seed) for name in SETS}
    query_regions = {name: embed_regions(embedder, [q.image for q in qs], spec).vectors
                     for name, qs in query_sets.items()}
    pasted = [paste_object(g.image, drawn_scene(seed * 1000 + 500 + i, size=384), rng)[0]
              for i, g in enumerate(gallery)]
    query_regions["pasted_object"] = embed_regions(embedder, pasted, spec).vectors
    sources = {name: np.array([index[q.source_key] for q in qs]) for name, qs in query_sets.items()}
    sources["pasted_object"] = np.arange(len(gallery))
    others = {name: np.array([groups[index[q.other_key]] if q.other_key else "" for q in qs])
              for name, qs in query_sets.items()}
    others["pasted_object"] = np.full(len(gallery), "")
    out = {"model": model, "regions_per_query": spec.count(), "scales": list(spec.scales),
           "descriptors": spec.descriptors, "pooled_side": spec.pooled_side,
           "proposals": spec.proposals,
           "gallery": len(gallery), "photos": len(photos), "novel_drawings": novel,
           "gallery_region_embed_s": round(t_gallery, 2),
           "region_embed_per_image_s": round(t_gallery / len(gallery), 4), "scorings": {}}
    query_images = {name: [q.image for q in qs] for name, qs in query_sets.items()}
    query_images["pasted_object"] = pasted
    for scoring, score in scorings.items():
        nulls: dict[str, np.ndarray] = {}
        # per null query: (its image, its verify_top best unrelated gallery indexes)
        null_pairs: dict[str, list] = {}
        base = score(g_regions, groups[:, None] == groups[None, :])
        nulls["baseline"] = base.max(1)
        null_pairs["baseline"] = [(g.image, top(row)) for g, row in zip(gallery, base, strict=True)]
        nov = score(drawings, None)
        nulls["novel"] = nov.max(1)
        null_pairs["novel"] = [(img, top(row)) for img, row in zip(drawing_images, nov, strict=True)]
        positives, unrelated, null_pairs["copy_sets_unrelated"] = {}, [], []
        source_rank: dict[str, np.ndarray] = {}
        for name, regions in query_regions.items():
            src = sources[name]
            full = score(regions, None)
            positives[name] = full[np.arange(len(src)), src]
            related = (groups[None, :] == groups[src][:, None]) | (groups[None, :] == others[name][:, None])
            # the source's rank among the images the query does not also hold
            source_rank[name] = (np.where(related, -np.inf, full) > positives[name][:, None]).sum(1)
            unrel = score(regions, related)
            unrelated.append(unrel.max(1))
            null_pairs["copy_sets_unrelated"] += [(img, top(row)) for img, row in
                                                  zip(query_images[name], unrel, strict=True)]
        nulls["copy_sets_unrelated"] = np.concatenate(unrelated)
        worst = max(float(v.max()) for v in nulls.values())
        threshold = math.ceil(worst * 20 - 1e-9) / 20
        global_pos = {name: (r[:, 0] * g_regions[sources[name], 0]).sum(1)
                      for name, r in query_regions.items()}
        res = {"null_quantiles": {k: quantiles(v) for k, v in nulls.items()},
               "null_count": {k: int(len(v)) for k, v in nulls.items()},
               "largest_null": round(worst, 4), "threshold": threshold,
               "copies_above": {name: {"region_score_above_threshold": round(float((p > threshold).mean()), 3),
                                       "global_above_0.5": round(float((global_pos[name] > 0.5).mean()), 3),
                                       "region_score_quantiles": quantiles(p)}
                                for name, p in positives.items()},
               "histograms": {**{f"null: {k}": histogram(v) for k, v in nulls.items()},
                              **{name: histogram(p) for name, p in positives.items()}}}
        if verify_band and scoring == "rerank":
            for n in sorted({1, verify_top}):  # the scan's protocol (1), and a shortlist
                res["verified_in_band" if n == 1 else f"verified_in_band_top{n}"] = verify_band_rescue(
                    threshold, verify_band, positives, source_rank, query_images, sources,
                    null_pairs, gallery, n)
        out["scorings"][scoring] = res
        print(f"{scoring}: region threshold for {model}: {threshold} (largest null score {worst:.3f})")
        for k, v in res["null_quantiles"].items():
            print(f"  null {k:>20} (n={res['null_count'][k]}): {v}")
        print("  | set | copies with region score > threshold | copies with global similarity > 0.5 |")
        for name, c in res["copies_above"].items():
            print(f"  | {name} | {c['region_score_above_threshold']:.3f} | {c['global_above_0.5']:.3f} |")
    return out


def verify_band_rescue(threshold: float, band: float, positives: dict, source_rank: dict,
                       query_images: dict, sources: dict, null_pairs: dict, gallery: list,
                       verify_top: int = 1, sub_bands: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)) -> dict:
    """What the scan's geometric rescue (diffrep.search.region_rule) adds, with geometric
    verification (diffrep.search.geometry.verify_pair, SIFT + RANSAC with mirrors, the
    whole query against the training image) of a query's `verify_top` best matches that
    score in (threshold - band, threshold]: a copy is found by it when its source is among
    them (source_rank < verify_top; rank among the images the query does not also hold)
    and verifies; a null query is accused when any of its `verify_top` best unrelated
    images in the band verifies. The rescue is on only when none of the nulls does
    (decide_rescue). The same for each narrower band of `sub_bands` (`by_band`), from the
    same verifications."""
    from diffrep.search.geometry import verify_pair
    from diffrep.search.region_rule import decide_rescue

    lo = threshold - band
    # per copy set: (source score, verified) of each copy whose source can be rescued
    outcomes: dict[str, list[tuple[float, bool]]] = {}
    # per null set, per null query: (score, verified) of each of its candidates in the band
    null_outcomes: dict[str, list[list[tuple[float, bool]]]] = {}
    t0, pairs = time.perf_counter(), 0
    for name, p in positives.items():
        idx = np.nonzero((p > lo) & (p <= threshold) & (source_rank[name] < verify_top))[0]
        outcomes[name] = [(float(p[i]), verify_pair(query_images[name][i], gallery[sources[name][i]].image).verified)
                          for i in idx]
        pairs += len(idx)
    for name, queries in null_pairs.items():
        null_outcomes[name] = []
        for image, candidates in queries:
            tried = [(s, verify_pair(image, gallery[j].image).verified) for j, s in candidates if lo < s <= threshold]
            pairs += len(tried)
            if tried:
                null_outcomes[name].append(tried)

    def summary(b: float) -> dict:
        lo = threshold - b
        out: dict = {"band": [round(lo, 4), threshold], "verify_top": verify_top, "sets": {}, "nulls": {}}
        for name, p in positives.items():
            ok = [v for s, v in outcomes[name] if s > lo]
            out["sets"][name] = {"rescuable": len(ok), "verified": int(sum(ok)),
                                 "found_by_score": round(float((p > threshold).mean()), 3),
                                 "found_with_verified_band": round(float(((p > threshold).sum() + sum(ok)) / len(p)), 3)}
        # per null query in the band: accused when any of its candidates there verified
        null_verified = {name: [any(v for s, v in tried if s > lo) for tried in per_query
                                if any(s > lo for s, _ in tried)]
                         for name, per_query in null_outcomes.items()}
        out["nulls"] = {name: {"in_band": len(v), "verified": int(sum(v))} for name, v in null_verified.items()}
        rescue_from, out["rescue"] = decide_rescue(threshold, b, null_verified)
        for c in out["sets"].values():
            c["found_by_rule"] = c["found_with_verified_band"] if rescue_from is not None else c["found_by_score"]
        return out

    out = summary(band)
    out["verify_s_per_pair"] = round((time.perf_counter() - t0) / max(pairs, 1), 4)
    out["by_band"] = {f"{b:g}": summary(b) for b in sub_bands if b < band}
    print(f"  verification in {out['band']}: {json.dumps(out)}", flush=True)
    return out


def write_html(results: dict, path: str) -> None:
    """The calibration as a page: per scoring, each copy set's scores against its source
    beside all the null scores, the threshold marked in each title, and the table of
    shares above it."""
    from diffrep.report.html import page, svg_bars, table

    labels = [f"{lo:.2f}" for lo in BINS[:-1]]
    body = [f"<p>{results['model']}, {results['gallery']} training images ({results['photos']} photos), "
            f"{results['regions_per_query']} regions per query (scales {results['scales']}), "
            f"{results['novel_drawings']} novel drawings. Null scores: images scored against training "
            "images they copy nothing of; the threshold is the largest, rounded up to 0.05.</p>"]
    for scoring, res in results["scorings"].items():
        hist = res["histograms"]
        null = np.sum([v for k, v in hist.items() if k.startswith("null: ")], axis=0).tolist()
        body.append(f"<h2>{scoring}: threshold {res['threshold']} (largest null {res['largest_null']})</h2>")
        body.append(table(["set", "copies above the threshold (region score)", "copies with global similarity > 0.5"],
                          [(name, c["region_score_above_threshold"], c["global_above_0.5"])
                           for name, c in res["copies_above"].items()]))
        for name, counts in hist.items():
            if not name.startswith("null: "):
                body.append(svg_bars(labels, {"copies vs source": counts, "null (all)": null},
                                     f"{scoring}: {name} (threshold {res['threshold']})",
                                     "score (bin start)", "count", log_y=True, width=560, height=220))
    with open(path, "w") as f:
        f.write(page("Region-score calibration", "".join(body)))


def query_rates(root: str, folder: str, model: str, spec: RegionSpec, repeats: int = 2) -> dict:
    """Queries per second on an index with its corpus (e.g. the demo's after `make demo`):
    the images of `folder` searched (top 5 of 50 candidates, exact re-rank) with the global
    descriptor only, with regions to whole training images, and with the default re-rank
    of the top candidates region to region, its training regions embedded or read from a
    region store an earlier run filled; embedding included, best of `repeats` runs (the
    re-rank's in-memory cache is empty at each run's start)."""
    from pathlib import Path

    from PIL import Image

    from diffrep.models import create_embedder, default_weights
    from diffrep.search import Searcher, open_index
    from diffrep.search.region_store import RegionStore

    handle = open_index(root, model)
    embedder = create_embedder(model, weights=default_weights(model))
    images = [Image.open(p).convert("RGB") for p in sorted(Path(folder).glob("*.png"))]
    modes = {"global": None, "regions": replace(spec, rerank=0), "regions_rerank": spec,
             "regions_rerank_stored": spec, "regions_rerank_stored_verified": spec}
    out = {"queries": len(images), "index_vectors": handle.ntotal, "descriptors": spec.descriptors}
    store_dir = tempfile.mkdtemp(prefix="region-store-")
    for name, mode in modes.items():
        stored, verify = "_stored" in name, name.endswith("_verified")
        if stored:  # an earlier scan or search filled the store; this run's memory is empty
            search_regions(handle, embedder, images, mode, RegionStore(store_dir))
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            if mode is None:
                Searcher(handle).search(embedder.embed_images(images), k=5, rerank="exact", candidates=50)
            else:
                search_regions(handle, embedder, images, mode, RegionStore(store_dir) if stored else None,
                               verify_above=0.4 if verify else None)
            best = min(best, time.perf_counter() - t0)
        out[f"{name}_queries_per_s"] = round(len(images) / best, 2)
        print(f"  {name}: {len(images) / best:.2f} queries/s", flush=True)
    shutil.rmtree(store_dir, ignore_errors=True)
    return out


def search_regions(handle, embedder, images, spec: RegionSpec, store,
                   verify_above: float | None = None) -> int:
    """One region search of `images` as the jobs run it, the re-rank's memory empty; with
    `verify_above`, each query's top match scoring above it is verified geometrically as
    the scan does (scan.region_verify: region_threshold 0.5 - region_verify_margin 0.1,
    the training image read back). Returns the pairs verified."""
    from diffrep.search import Searcher
    from diffrep.search.geometry import verify_pair
    from diffrep.search.training_regions import TrainingRegions

    regions = TrainingRegions(handle, embedder, spec, store=store) if spec.rerank else None
    rq = embed_regions(embedder, images, spec)
    hits = Searcher(handle, candidate_regions=regions).search(
        rq.global_vectors, k=5, rerank="exact", candidates=50, regions=rq)
    if verify_above is None:
        return 0
    todo = [i for i in range(len(images)) if hits.ids[i, 0] >= 0 and hits.sims[i, 0] > verify_above]
    ids = hits.ids[todo, 0]
    keys = handle.lookup(ids, columns=["key"])["key"].to_pylist() if todo else []
    train = handle.corpus_images(ids, keys) if todo else {}
    for i, key in zip(todo, keys, strict=True):
        if key in train:
            verify_pair(images[i], train[key], query_box=hits.boxes[i, 0])
    return len(todo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results/regions.json")
    parser.add_argument("--model", default="sscd_onnx")
    parser.add_argument("--crops_per_photo", type=int, default=3)
    parser.add_argument("--novel", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo_root", default=None,
                        help="also queries/s on this index with its corpus (e.g. data/demo/out)")
    parser.add_argument("--demo_folder", default="data/demo/corpus/generated")
    parser.add_argument("--rates_only", action="store_true", help="skip the calibration")
    parser.add_argument("--html", default="bench-results/regions.html", help="the calibration as a page")
    parser.add_argument("--verify_band", type=float, default=0.0,
                        help="also verify geometrically the re-rank's pairs within this of its threshold")
    parser.add_argument("--verify_top", type=int, default=1,
                        help="with --verify_band: also verify each query's best this many matches in the band "
                             "(besides its best one, as the scan does)")
    parser.add_argument("--descriptors", default="auto", choices=("auto", "crops", "pooled"),
                        help="region descriptors (auto: what the jobs use for --model)")
    parser.add_argument("--pooled_side", type=int, default=None,
                        help="pooled descriptors' feature map side, px (default: the jobs')")
    parser.add_argument("--segment_side", type=int, default=None,
                        help="pooled descriptors' segment crop side, px (default: the jobs')")
    args = parser.parse_args()
    spec = job_spec(args.model, args.descriptors)
    sides = {k: v for k, v in (("pooled_side", args.pooled_side), ("segment_side", args.segment_side))
             if v is not None}
    spec = replace(spec, **sides)
    results = {} if args.rates_only else calibrate(args.model, args.crops_per_photo, args.novel,
                                                   args.seed, spec, args.verify_band, args.verify_top)
    if args.demo_root:
        results["query_rates"] = query_rates(args.demo_root, args.demo_folder, args.model, spec)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_results(args.out, results)
    if not args.rates_only:
        os.makedirs(os.path.dirname(os.path.abspath(args.html)), exist_ok=True)
        write_html(results, args.html)


if __name__ == "__main__":
    main()
