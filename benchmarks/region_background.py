"""Background normalisation of region scores (a benchmark, not a test; figures printed and
written to JSON): does it lift segmix copies above the nulls?

Copy detection often normalises a query's similarity by its similarity to a background set
of unrelated images (Pizzi et al., SSCD, CVPR 2022, sec. 4: a region that looks like many
images is weak evidence of copying any one of them). Here each query region's score
against a training image becomes s - beta_q * b_q(region) (query side) and / or
s - beta_c * b_c(training region) (training side), where b is the similarity to the k-th
nearest region (or the k-th nearest image, by its best region) of a background set; the
pair's score is the best region pair's, as `region_pair_scores` (every region of the query
against every region of the training image: no approximate candidates).

Data: copybench's gallery (3 crops of each of the photos that ship with scikit-image,
scikit-learn and opencv-doc), its segmix, cutmix and plain copies, and drawn novel scenes,
all with the jobs' default region descriptors (pooled SSCD, segments). The photos are
split in two halves by name: the background is every region of half B's gallery images;
copies are scored against their source and nulls against unrelated images of half A
only (`fair`). A null's background and a copy's background are then the same set, as in
a scan, where a fixed background sample cannot know which training image a query copies.

`leaky` repeats the query side with the background every gallery image the query holds
nothing of: for a copy that leaves out its source, for a null it does not leave out the
image it is scored against. That asymmetry makes any copy look distinct (segmix 0.35 ->
0.64 found in an ad hoc run) and is the trap this benchmark exists to show; it is not
something a scan can compute.

Found: the share of a set's copies scoring above the largest null (and above the nulls'
99th percentile).

Run: python -m benchmarks.region_background --out benchmarks/results/region-background.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import write_results
from benchmarks.regions import job_spec

COPY_SETS = ("segmix", "cutmix", "plain")
# (name, side, beta, k, by): side "query" / "training" / "both"; by "region" / "image"
VARIANTS = (("none", "query", 0.0, 1, "region"),
            ("query k=1 region, beta 0.5", "query", 0.5, 1, "region"),
            ("query k=1 region, beta 1", "query", 1.0, 1, "region"),
            ("query k=10 regions, beta 1", "query", 1.0, 10, "region"),
            ("query k=3 images, beta 1", "query", 1.0, 3, "image"),
            ("training k=10 regions, beta 0.5", "training", 0.5, 10, "region"),
            ("training k=10 regions, beta 1", "training", 1.0, 10, "region"),
            ("both k=10 regions, beta 0.5", "both", 0.5, 10, "region"),
            ("both k=10 regions, beta 1", "both", 1.0, 10, "region"))


def kth_similarity(vectors: np.ndarray, background: np.ndarray, k: int, by: str, per_image: int) -> np.ndarray:
    """(n,) similarity of each of `vectors` (n, d) to its k-th nearest background region
    (by "region") or background image (by "image": images of `per_image` consecutive
    regions, each scored by its best region), clipped at 0. Zero vectors (blank regions) get 0."""
    sims = vectors @ background.T
    if by == "image":
        sims = sims.reshape(len(vectors), -1, per_image).max(2)
    return np.maximum(np.partition(sims, -k, axis=1)[:, -k], 0)


def pair_scores(query: np.ndarray, targets: np.ndarray, b_query: np.ndarray, b_targets: np.ndarray,
                beta_q: float, beta_c: float) -> np.ndarray:
    """(T,) best normalised region-pair score of one query's regions (R, d) against each
    target's regions (T, S, d)."""
    t, s, d = targets.shape
    sims = (query @ targets.reshape(t * s, d).T).reshape(len(query), t, s)
    return (sims - beta_q * b_query[:, None, None] - beta_c * b_targets[None, :, :]).max(axis=(0, 2))


def evaluate(regions: dict, variant: tuple, leaky: bool = False) -> dict:
    name, side, beta, k, by = variant
    gallery, groups, half_b = regions["gallery"], regions["groups"], regions["half_b"]
    n_img, per_image, dim = gallery.shape
    a_idx = np.nonzero(~half_b)[0]
    background = gallery[half_b].reshape(-1, dim)
    beta_q = beta if side in ("query", "both") else 0.0
    beta_c = beta if side in ("training", "both") else 0.0
    b_train = np.zeros((n_img, per_image), np.float32)
    if beta_c:
        b_train[a_idx] = kth_similarity(gallery[a_idx].reshape(-1, dim), background, k, by,
                                        per_image).reshape(len(a_idx), per_image)
    all_flat = gallery.reshape(-1, dim)
    owner = np.repeat(groups, per_image)

    def b_query(q: np.ndarray, held: set) -> np.ndarray:
        if not beta_q:
            return np.zeros(len(q), np.float32)
        if leaky:  # every gallery image of a photo the query holds nothing of
            return kth_similarity(q, all_flat[~np.isin(owner, list(held))], k, by, per_image)
        return kth_similarity(q, background, k, by, per_image)

    targets = gallery[a_idx]
    nulls, positives = [], {}
    for i in a_idx:  # baseline: each half-A image against half A's other photos
        s = pair_scores(gallery[i], targets, b_query(gallery[i], {groups[i]}), b_train[a_idx], beta_q, beta_c)
        nulls.append(float(s[groups[a_idx] != groups[i]].max()))
    for q in regions["novel"]:
        nulls.append(float(pair_scores(q, targets, b_query(q, set()), b_train[a_idx], beta_q, beta_c).max()))
    for set_name in COPY_SETS:
        positives[set_name] = []
        for q, src, other in zip(*regions[set_name], strict=True):
            if half_b[src]:
                continue
            held = {groups[src], other} - {""}
            s = pair_scores(q, targets, b_query(q, held), b_train[a_idx], beta_q, beta_c)
            positives[set_name].append(float(s[list(a_idx).index(src)]))
            unrelated = ~np.isin(groups[a_idx], list(held))
            nulls.append(float(s[unrelated].max()))
    null = np.asarray(nulls)
    top, p99 = float(null.max()), float(np.quantile(null, 0.99))
    out = {"variant": name, "leaky": leaky, "nulls": len(null), "largest_null": round(top, 4),
           "null_p99": round(p99, 4), "sets": {}}
    for set_name, p in positives.items():
        p = np.asarray(p)
        out["sets"][set_name] = {"copies": len(p), "found_above_largest_null": round(float((p > top).mean()), 3),
                                 "found_above_null_p99": round(float((p > p99).mean()), 3),
                                 "median_score": round(float(np.median(p)), 4)}
    print(("LEAKY " if leaky else "") + name, out, flush=True)
    return out


def photo_split(seed: int) -> tuple[list, np.ndarray, np.ndarray]:
    """Copybench's gallery (3 crops of every offline photo), each image's photo (group) and
    whether it is in half B (every other photo by name)."""
    from diffrep.copybench.copysets import make_gallery
    from diffrep.data.demo import load_source_photos

    gallery = make_gallery(load_source_photos(True), 3, seed)
    groups = np.array([g.group for g in gallery])
    return gallery, groups, np.isin(groups, sorted(set(groups))[1::2])


def copy_set(gallery: list, set_name: str, seed: int) -> tuple[list, np.ndarray, np.ndarray]:
    """Copybench's `set_name` copies of `gallery`: (images, each one's source index in
    `gallery`, the photo (group) it mixes in, "" for none)."""
    from diffrep.copybench.copysets import make_queries

    index = {g.key: i for i, g in enumerate(gallery)}
    queries = make_queries(gallery, set_name, seed)
    return ([q.image for q in queries], np.array([index[q.source_key] for q in queries]),
            np.array([gallery[index[q.other_key]].group if q.other_key else "" for q in queries]))


def embed(model: str, seed: int, novel: int) -> dict:
    from diffrep.models import create_embedder, default_weights
    from diffrep.search.regions import embed_regions
    from diffrep.synthetic import drawn_scene

    spec = job_spec(model, "auto")
    embedder = create_embedder(model, weights=default_weights(model))
    gallery, groups, half_b = photo_split(seed)
    out = {"spec": spec, "groups": groups, "half_b": half_b,
           "gallery": embed_regions(embedder, [g.image for g in gallery], spec).vectors,
           "novel": embed_regions(embedder, [drawn_scene(seed * 1000 + 700 + i) for i in range(novel)],
                                  spec).vectors}
    for set_name in COPY_SETS:
        images, sources, others = copy_set(gallery, set_name, seed)
        out[set_name] = (embed_regions(embedder, images, spec).vectors, sources, others)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-results/region-background.json")
    parser.add_argument("--model", default="sscd_onnx")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--novel", type=int, default=40)
    args = parser.parse_args()
    t0 = time.perf_counter()
    regions = embed(args.model, args.seed, args.novel)
    n_a = int((~regions["half_b"]).sum())
    results = {"model": args.model, "spec": str(regions["spec"]), "gallery": len(regions["groups"]),
               "half_a_images": n_a, "background_images": len(regions["groups"]) - n_a,
               "regions_per_image": int(regions["gallery"].shape[1]), "novel": args.novel,
               "fair": [evaluate(regions, v) for v in VARIANTS],
               "leaky": [evaluate(regions, v, leaky=True) for v in VARIANTS if v[1] == "query" and v[2]],
               "wall_s": None}
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    write_results(args.out, results)


if __name__ == "__main__":
    main()
