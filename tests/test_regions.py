"""Object-level matching (diffrep.search.regions): the region grid, the score's definition,
and on the demo index with the distilled SSCD (real weights), a training photo pasted into a drawn scene found
with its box while a novel drawing is not."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from diffrep.search.regions import (
    BOX_SLACK,
    REGION_FLOORS,
    RegionSpec,
    box_stds,
    crop_regions,
    embed_regions,
    match_boxes,
    near_best,
    region_pair_scores,
    region_scores,
    rerank_pairs,
    union_candidates,
)
from diffrep.synthetic import drawn_scene, paste_object
from tests.conftest import DEMO_MODEL

REGION_THRESHOLD = REGION_FLOORS["crops"]  # the tests here use RegionSpec(): crops


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_grid_covers_the_image_at_every_scale():
    spec = RegionSpec(scales=(0.5, 0.75), overlap=0.5, proposals="grid")
    boxes = spec.boxes()
    assert boxes[0].tolist() == [0, 0, 1, 1] and spec.count() == len(boxes) == 1 + 9 + 4
    assert RegionSpec().count() == len(boxes) + RegionSpec().max_segments  # segment slots
    for s in spec.scales:
        grid = boxes[1:][np.isclose(boxes[1:, 2] - boxes[1:, 0], s)]
        assert np.isclose(grid[:, 3] - grid[:, 1], s).all()
        assert grid[:, :2].min() == 0 and np.isclose(grid[:, 2:].max(), 1)  # reaches every edge
    crops = crop_regions(Image.new("RGB", (200, 100)), boxes)
    assert crops[0].size == (200, 100) and crops[1].size == (100, 50) and crops[-1].size == (150, 75)
    with pytest.raises(ValueError, match="scales"):
        RegionSpec(scales=(1.0,))


def test_box_stds_equal_the_crops_own_and_find_blank_boxes():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (97, 131, 3), np.uint8)
    pixels[:40, :60] = (30, 200, 90)  # a flat patch: a blank crop
    image = Image.fromarray(pixels)
    corners = np.sort(rng.uniform(0, 1, (50, 2, 2)), axis=1)  # (x0, x1), (y0, y1)
    boxes = np.c_[corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]][:, [0, 2, 1, 3]]
    boxes = np.r_[boxes, [[0, 0, 1, 1], [0.05, 0.05, 0.4, 0.35], [0.999, 0.999, 1, 1]]].astype(np.float32)
    want = [np.asarray(c.convert("L"), np.float64).std() for c in crop_regions(image, boxes)]
    np.testing.assert_allclose(box_stds(image, boxes), want, atol=1e-6)
    assert box_stds(image, boxes)[-2] == pytest.approx(0, abs=1e-6) and box_stds(image, boxes)[-3] > 30


def test_region_score_is_the_best_region_and_never_below_the_global_one():
    rng = np.random.default_rng(0)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    regions = unit(rng.standard_normal((3, 5, 16))).astype(np.float32)
    cands = unit(rng.standard_normal((3, 7, 16))).astype(np.float32)
    cands[1, 4] = regions[1, 3]  # a candidate identical to region 3 of query 1
    scores, near = region_scores(regions, cands)
    want = np.einsum("qrd,qcd->qrc", regions, cands)
    np.testing.assert_allclose(scores, want.max(1), atol=1e-6)
    assert near.shape == (3, 7, 5) and near[1, 4].tolist() == (want[1, :, 4] >= 1 - BOX_SLACK).tolist()
    assert near[1, 4, 3] and scores[1, 4] == pytest.approx(1.0, abs=1e-6)
    assert (scores >= np.einsum("qd,qcd->qc", regions[:, 0], cands) - 1e-6).all()
    shared = region_scores(regions, cands[0])[0]  # (C, d): one candidate set for all
    np.testing.assert_allclose(shared, want_shared := np.einsum("qrd,cd->qrc", regions, cands[0]).max(1))
    assert want_shared.shape == (3, 7)
    u = union_candidates(np.array([[3, 1], [2, -1]]), np.array([[1, 5, 3], [-1, -1, -1]]))
    assert u.tolist() == [[1, 3, 5], [2, -1, -1]]


def test_region_pairs_score_the_best_region_to_region_and_rerank_only_the_top():
    rng = np.random.default_rng(1)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    q = unit(rng.standard_normal((2, 4, 8))).astype(np.float32)
    cand = unit(rng.standard_normal((5, 3, 8))).astype(np.float32)  # 5 images, 3 regions each
    cand[2, 1] = q[0, 3]  # query 0's region 3 is region 1 of image 2
    pair, near = region_pair_scores(q, cand)
    want = np.einsum("qrd,csd->qcrs", q, cand).max((2, 3))
    np.testing.assert_allclose(pair, want, atol=1e-6)
    assert pair[0, 2] == pytest.approx(1.0, abs=1e-6) and near[0, 2, 3]
    whole, whole_near = region_scores(q, cand[:, 0])  # against each image's region 0 only
    assert (pair >= whole - 1e-6).all()
    ids = np.array([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]])
    score = np.take_along_axis(whole, ids, 1).copy()
    best = np.take_along_axis(whole_near, ids[..., None], 1).copy()
    before, called = score.copy(), []

    def regions_of(u):
        called.append(u.tolist())
        return cand[u]

    top = np.argsort(-before, axis=1, kind="stable")[:, :2]
    chosen = np.zeros(ids.shape, bool)
    np.put_along_axis(chosen, top, True, 1)
    assert rerank_pairs(q, ids, score, best, regions_of, chosen) == 4
    assert called == [sorted(set(np.take_along_axis(ids, top, 1).ravel().tolist()))]  # one call
    for i in range(2):
        for j in range(5):
            want_ij = max(before[i, j], pair[i, ids[i, j]]) if j in top[i] else before[i, j]
            assert score[i, j] == pytest.approx(want_ij, abs=1e-6), (i, j)
    assert best[0, 2, 3]  # re-scored pairs carry the regions near their new best


def test_a_match_reports_the_union_of_its_regions_near_the_best():
    boxes = np.array([[[0, 0, 1, 1], [0.4, 0.4, 0.6, 0.6], [0.5, 0.5, 0.7, 0.8], [0, 0, 0.2, 0.2]]],
                     np.float32)
    per_region = np.array([[[0.3, 0.80, 0.78, 0.2], [0.9, 0.1, 0.1, 0.1], [0, 0, 0, 0]]], np.float32)
    got = match_boxes(boxes, near_best(per_region))
    np.testing.assert_allclose(got[0, 0], [0.4, 0.4, 0.7, 0.8])  # two object parts: their union
    np.testing.assert_allclose(got[0, 1], [0, 0, 1, 1])  # the whole image
    assert near_best(per_region, slack=0)[0, 0].tolist() == [False, True, False, False]


def test_rerank_choice_skips_near_duplicates_of_counted_candidates():
    from diffrep.search.regions import RegionSpec, rerank_choice

    e = np.eye(8, dtype=np.float32)
    dup = (e[0] + 0.3 * e[1]) / np.linalg.norm(e[0] + 0.3 * e[1])  # 0.96 similar to e[0]
    vecs = np.stack([e[0], dup, dup, e[2], e[3], e[4], e[5]])  # candidates 0-2: one photo
    ids = np.array([[10, 11, 12, 13, 14, 15, 16], [10, 11, 12, 13, -1, -1, -1]])
    score = np.array([[0.9, 0.85, 0.8, 0.5, 0.4, 0.3, 0.2], [0.9, 0.85, 0.8, 0.5, 0, 0, 0]])
    spec = RegionSpec(rerank=2, rerank_distinct=0.6, rerank_max=10)
    chosen = rerank_choice(ids, score, vecs, spec)
    # 0 counts, 1 and 2 are its near-duplicates (taken, not counted), 3 is the second distinct
    assert chosen[0].tolist() == [True, True, True, True, False, False, False]
    assert chosen[1].tolist() == [True, True, True, True, False, False, False]  # -1: never
    capped = rerank_choice(ids, score, vecs, RegionSpec(rerank=2, rerank_max=2))
    assert capped.sum(1).tolist() == [2, 2]
    plain = rerank_choice(ids, score, vecs, RegionSpec(rerank=2, rerank_distinct=1.01))
    assert plain[0].tolist() == [True, True] + [False] * 5  # nothing is a duplicate: top 2
    assert not rerank_choice(ids, score, vecs, RegionSpec(rerank=0)).any()


@pytest.fixture(scope="module")
def sscd_searcher(demo_index_root):
    from diffrep.models import create_embedder
    from diffrep.search import Searcher, open_index
    from diffrep.search.training_regions import TrainingRegions

    root, corpus, _ = demo_index_root
    handle = open_index(str(root), DEMO_MODEL)
    embedder = create_embedder(DEMO_MODEL)
    return Searcher(handle, candidate_regions=TrainingRegions(handle, embedder, RegionSpec())), \
        embedder, corpus


def test_training_regions_read_the_candidates_pixels_and_cache_them(sscd_searcher):
    searcher, _, _ = sscd_searcher
    regions, handle = searcher.candidate_regions, searcher.handle
    ids = np.array([3, 0, 3], np.int64)
    vecs = regions(ids)
    assert vecs.shape == (3, RegionSpec().count(), handle.dim)
    # region 0 is the whole image: its descriptor is the stored embedding (fp16 stored)
    np.testing.assert_allclose(np.einsum("nd,nd->n", vecs[:, 0], handle.vectors(ids)), 1, atol=0.02)
    np.testing.assert_array_equal(vecs[0], vecs[2])
    assert 3 in regions._cache and regions.missing == 0


def test_region_store_keeps_descriptors_for_later_runs_and_ignores_uncommitted_chunks(
        sscd_searcher, tmp_path):
    """The re-rank's training regions computed once are read back by a later run (a new
    TrainingRegions: nothing in its memory), per embedding shard; a chunk whose rows file
    never arrived (a worker killed mid-write) is not read."""
    from diffrep.search.region_store import RegionStore
    from diffrep.search.training_regions import TrainingRegions

    searcher, embedder, _ = sscd_searcher
    handle, spec = searcher.handle, RegionSpec()
    assert RegionStore.for_handle(handle, spec).url.startswith(str(handle.layout.root))
    assert RegionStore.for_handle(handle, RegionSpec(min_std=0)).url != \
        RegionStore.for_handle(handle, spec).url  # another blank-crop rule: another store
    pooled = RegionSpec(descriptors="pooled", pooled_side=480)
    assert RegionStore.for_handle(handle, replace(pooled, segment_side=160)).url != \
        RegionStore.for_handle(handle, pooled).url  # segments described at another side
    ids = np.array([5, 1, handle.ntotal - 1], np.int64)  # both embedding shards
    first = TrainingRegions(handle, embedder, spec, store=RegionStore(str(tmp_path / "store")))
    computed = first(ids)
    assert first.embedded == 3 and first.store.stored == 3
    assert len({s for s, _, _ in handle.locate(ids)}) == 2
    assert len(list((tmp_path / "store").glob("*/*.rows.npy"))) == 2  # one chunk per shard
    later = TrainingRegions(handle, embedder, spec, store=RegionStore(str(tmp_path / "store")))
    again = later(np.array([1, 5, 7], np.int64))
    assert later.embedded == 1 and later.store.hits == 2  # only id 7 was new
    np.testing.assert_allclose(again[:2], computed[[1, 0]], atol=2e-3)  # stored as float16
    # a chunk without its rows file is not committed: its rows are computed again
    shard = handle.locate(np.array([9]))[0][0]
    np.save(tmp_path / "store" / shard / "uncommitted.npy", np.zeros((1, spec.count(), handle.dim), np.float16))
    third = TrainingRegions(handle, embedder, spec, store=RegionStore(str(tmp_path / "store")))
    third(np.array([9], np.int64))
    assert third.embedded == 1 and third.store.hits == 0


def test_region_baseline_embeds_each_training_image_once(sscd_searcher, monkeypatch):
    """A baseline query is a training image and its own top candidate: region_nulls hands
    its descriptors to the re-rank's cache, so its pixels are read and embedded once (they
    were twice: 1 of the up to rerank_max candidates re-scored per baseline image), and the
    cached descriptors are the ones the re-rank would have computed."""
    from diffrep.search import Searcher
    from diffrep.search.calibration import region_nulls
    from diffrep.search.training_regions import TrainingRegions

    searcher, embedder, _ = sscd_searcher
    handle, spec = searcher.handle, RegionSpec()
    ids = np.array([0, 5], np.int64)
    keys = handle.lookup(ids, columns=["key"])["key"].to_pylist()
    images = handle.corpus_images(ids, keys)
    regions = TrainingRegions(handle, embedder, spec)
    read: list[int] = []
    corpus_images = handle.corpus_images
    monkeypatch.setattr(handle, "corpus_images",
                        lambda i, k: read.extend(i.tolist()) or corpus_images(i, k))
    nulls = region_nulls(Searcher(handle, candidate_regions=regions), embedder, spec,
                         [images[k] for k in keys], ids, duplicate_above=0.95, candidates=20)
    assert read and not set(read) & set(ids.tolist())  # candidates read, never the queries
    assert (nulls["neighbour_id"] >= 0).all() and not set(nulls["neighbour_id"]) & set(ids.tolist())
    np.testing.assert_allclose(regions(ids), TrainingRegions(handle, embedder, spec)(ids), atol=1e-4)


def test_region_baseline_leaves_out_neighbours_sharing_an_identical_region(sscd_searcher):
    """The demo corpus plants near-duplicates (crops, flips, JPEG, colour, text) of its
    photos. With the global rule off (duplicate_above above 1), a photo's best region hit
    is one of its own near-duplicates; with shared_above, geometry finds the neighbours
    holding the same pixels, leaves them out, and the null is an image of another photo."""
    import pyarrow.parquet as pq

    from diffrep.search.calibration import region_nulls

    searcher, embedder, corpus = sscd_searcher
    handle = searcher.handle
    dups = pq.read_table(corpus / "duplicates.parquet").to_pylist()
    families: dict[str, set[str]] = {}
    for d in dups:
        families.setdefault(d["source_key"], {d["source_key"]}).add(d["key"])
    sources = sorted(k for k, fam in families.items() if len(fam) >= 2)[:4]
    ids = np.array(sorted(handle.key_to_id(sources).values()), np.int64)
    keys = handle.lookup(ids, columns=["key"])["key"].to_pylist()
    images = handle.corpus_images(ids, keys)
    args = (searcher, embedder, RegionSpec(), [images[k] for k in keys], ids)

    def family_of(neighbours: np.ndarray) -> list[bool]:
        names = handle.lookup(neighbours, columns=["key"])["key"].to_pylist()
        return [n in families[k] for n, k in zip(names, keys, strict=True)]

    plain = region_nulls(*args, duplicate_above=1.01, candidates=20)
    assert all(family_of(plain["null_neighbour_id"])) and not plain["shared_hits"].any()
    left_out = region_nulls(*args, duplicate_above=1.01, candidates=20, shared_above=0.0)
    # measured 3 of 4: the fourth photo's one near-duplicate, a 0.69x resize of a smooth
    # photo, keeps 3 SIFT inliers, so geometry cannot say it shares a region
    shared = left_out["shared_hits"] >= 1
    assert shared.sum() >= 3, left_out["shared_hits"]
    assert not any(np.array(family_of(left_out["null_neighbour_id"]))[shared])
    assert (left_out["null_region_similarity"] < plain["null_region_similarity"])[shared].all()


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
        img, box = paste_object(photos[key], drawn_scene(100 + i, size=384), rng)
        pasted.append(img)
        boxes.append(box)
    novel = [drawn_scene(200 + i) for i in range(4)]
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


def test_segment_proposals_fit_an_object_and_are_bounded():
    from PIL import ImageDraw

    from diffrep.search.proposals import segment_boxes

    img = Image.new("RGB", (300, 200), (250, 250, 250))
    ImageDraw.Draw(img).ellipse((30, 40, 120, 160), fill=(200, 30, 30))  # an irregular-ish object
    ImageDraw.Draw(img).rectangle((200, 20, 280, 60), fill=(20, 40, 200))  # small: 5% of the area
    boxes = segment_boxes(img, max_boxes=8)
    assert 1 <= len(boxes) <= 8 and (boxes >= 0).all() and (boxes <= 1).all()
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert ((areas >= 0.02) & (areas <= 0.6)).all()
    for truth in ((30 / 300, 40 / 200, 121 / 300, 161 / 200), (200 / 300, 20 / 200, 281 / 300, 61 / 200)):
        assert max(iou(b, truth) for b in boxes) > 0.6, (truth, boxes)
    np.testing.assert_array_equal(boxes, segment_boxes(img, max_boxes=8))  # deterministic
    assert len(segment_boxes(img, max_boxes=1)) == 1
    assert len(segment_boxes(Image.new("RGB", (64, 64), "white"), max_boxes=8)) == 0  # nothing to fit


def test_segment_regions_are_per_image_and_unfilled_slots_cost_nothing():
    class Counting:
        dim = 4

        def __init__(self):
            self.calls = 0

        def embed_images(self, crops, batch_size=32):
            self.calls += len(crops)
            v = np.random.default_rng(len(crops)).standard_normal((len(crops), 4)).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    from PIL import ImageDraw

    spec = RegionSpec(proposals="segments", max_segments=4)
    busy = Image.new("RGB", (128, 128), (250, 250, 250))
    ImageDraw.Draw(busy).rectangle((10, 10, 60, 60), fill=(200, 0, 0))
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8))
    embedder = Counting()
    out = embed_regions(embedder, [busy, noisy], spec)
    grid = RegionSpec(proposals="grid").count()
    assert out.vectors.shape == (2, grid + 4, 4) and out.boxes.shape == (2, grid + 4, 4)
    np.testing.assert_array_equal(out.boxes[0, :grid], spec.boxes())  # the grid first
    embedded = np.abs(out.vectors).sum(axis=2) > 0
    assert embedder.calls == embedded.sum()  # blank crops and empty segment slots: no call
    assert embedded[:, 0].all()  # the whole image always
    with pytest.raises(ValueError, match="proposals"):
        RegionSpec(proposals="selective_search")
