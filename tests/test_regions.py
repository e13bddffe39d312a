"""Object-level matching (diffrep.search.regions): the region grid, the score's definition,
and on the demo index with the real SSCD, a training photo pasted into a drawn scene found
with its box while a novel drawing is not."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from diffrep.scan.config import ScanConfig
from diffrep.scan.demo import novel_image, paste_object
from diffrep.search.regions import RegionSpec, crop_regions, region_scores, union_candidates

REGION_THRESHOLD = ScanConfig().region_threshold


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_grid_covers_the_image_at_every_scale():
    spec = RegionSpec(scales=(0.5, 0.75), overlap=0.5)
    boxes = spec.boxes()
    assert boxes[0].tolist() == [0, 0, 1, 1] and spec.count() == len(boxes) == 1 + 9 + 4
    for s in spec.scales:
        grid = boxes[1:][np.isclose(boxes[1:, 2] - boxes[1:, 0], s)]
        assert np.isclose(grid[:, 3] - grid[:, 1], s).all()
        assert grid[:, :2].min() == 0 and np.isclose(grid[:, 2:].max(), 1)  # reaches every edge
    crops = crop_regions(Image.new("RGB", (200, 100)), boxes)
    assert crops[0].size == (200, 100) and crops[1].size == (100, 50) and crops[-1].size == (150, 75)
    with pytest.raises(ValueError, match="scales"):
        RegionSpec(scales=(1.0,))


def test_region_score_is_the_best_region_and_never_below_the_global_one():
    rng = np.random.default_rng(0)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    regions = unit(rng.standard_normal((3, 5, 16))).astype(np.float32)
    cands = unit(rng.standard_normal((3, 7, 16))).astype(np.float32)
    cands[1, 4] = regions[1, 3]  # a candidate identical to region 3 of query 1
    scores, best = region_scores(regions, cands)
    want = np.einsum("qrd,qcd->qrc", regions, cands)
    np.testing.assert_allclose(scores, want.max(1), atol=1e-6)
    assert best[1, 4] == 3 and scores[1, 4] == pytest.approx(1.0, abs=1e-6)
    assert (scores >= np.einsum("qd,qcd->qc", regions[:, 0], cands) - 1e-6).all()
    shared, _ = region_scores(regions, cands[0])  # (C, d): one candidate set for all
    np.testing.assert_allclose(shared, want_shared := np.einsum("qrd,cd->qrc", regions, cands[0]).max(1))
    assert want_shared.shape == (3, 7)
    u = union_candidates(np.array([[3, 1], [2, -1]]), np.array([[1, 5, 3], [-1, -1, -1]]))
    assert u.tolist() == [[1, 3, 5], [2, -1, -1]]


@pytest.fixture(scope="module")
def sscd_searcher(demo_index_root):
    from diffrep.models import create_embedder
    from diffrep.search import Searcher, open_index

    root, corpus, _ = demo_index_root
    handle = open_index(str(root), "sscd_onnx")
    return Searcher(handle), create_embedder("sscd_onnx"), corpus


def test_pasted_training_photo_is_found_with_its_box_and_a_novel_drawing_is_not(sscd_searcher):
    from collections import Counter

    import pyarrow.parquet as pq

    from diffrep.data.images import decode_image
    from diffrep.data.reader import iter_raw_samples
    from diffrep.search.regions import embed_regions

    searcher, embedder, corpus = sscd_searcher
    sources = sorted(set(pq.read_table(corpus / "duplicates.parquet")["source_key"].to_pylist()))[:4]
    same_photo = {s: {s} for s in sources}
    for d in pq.read_table(corpus / "duplicates.parquet").to_pylist():
        if d["source_key"] in same_photo:
            same_photo[d["source_key"]].add(d["key"])
    photos = {}
    for tar in sorted((corpus / "shards").glob("*.tar")):
        for raw in iter_raw_samples(str(tar), Counter()):
            if raw.key in same_photo and "jpg" in raw.members:
                photos[raw.key] = decode_image(raw.members["jpg"]).image
    rng = random.Random(3)
    pasted, boxes = [], []
    for i, key in enumerate(sources):
        img, box = paste_object(photos[key], novel_image(100 + i, size=384), rng)
        pasted.append(img)
        boxes.append(box)
    novel = [novel_image(200 + i) for i in range(4)]
    spec = RegionSpec()
    regions = embed_regions(embedder, pasted + novel, spec)
    hits = searcher.search(regions.global_vectors, k=3, rerank="exact", candidates=20, regions=regions)
    plain = searcher.search(regions.global_vectors, k=1, rerank="exact", candidates=20)
    keys = searcher.handle.lookup(hits.ids[:, 0])["key"].to_pylist()
    for i, key in enumerate(sources):
        assert keys[i] in same_photo[key], (i, keys[i], hits.sims[i])
        assert hits.sims[i, 0] > REGION_THRESHOLD, (i, hits.sims[i, 0])
        assert hits.sims[i, 0] > hits.global_sims[i, 0] + 0.1  # the region is what found it
        assert iou(hits.boxes[i, 0], boxes[i]) > 0.2, (hits.boxes[i, 0], boxes[i])
    for i in range(len(sources), len(pasted) + len(novel)):
        assert hits.sims[i, 0] < REGION_THRESHOLD, (i, hits.sims[i, 0])
    # global_sims are the whole query's exact similarities to the same images, and region 0
    # being the whole image, the region score never falls below the global top-1
    want = np.einsum("qd,qkd->qk", regions.global_vectors,
                     searcher.handle.vectors(hits.ids.ravel()).reshape(*hits.ids.shape, -1))
    np.testing.assert_allclose(hits.global_sims, want, atol=1e-5)
    assert (hits.sims[:, 0] >= plain.sims[:, 0] - 1e-5).all()
