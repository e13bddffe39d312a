"""Copy-detector benchmark: metrics against an independent implementation (scikit-learn),
the copy sets' ground truth, and real SSCD against a random-init model on real photos."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from diffrep.copybench.copysets import SETS, make_gallery, make_queries
from diffrep.copybench.metrics import evaluate
from diffrep.copybench.run import CopyBenchConfig, run_copybench
from diffrep.data.demo import load_source_photos
from tests.conftest import requires_sscd


def reference(scores, source, qgroup, ggroup):
    """Per-query AP and micro-AP with scikit-learn, same exclusion rule."""
    aps, all_s, all_y = [], [], []
    for i in range(len(scores)):
        keep = (ggroup != qgroup[i]) | (np.arange(len(ggroup)) == source[i])
        y = (np.arange(len(ggroup)) == source[i])[keep]
        aps.append(average_precision_score(y, scores[i][keep]))
        all_s.append(scores[i][keep])
        all_y.append(y)
    return float(np.mean(aps)), float(average_precision_score(np.concatenate(all_y), np.concatenate(all_s)))


def groups_setup(n_photos=40, crops=3):
    ggroup = np.repeat(np.arange(n_photos), crops)
    source = np.arange(len(ggroup))
    return ggroup, source, ggroup[source]


def test_perfect_descriptor_scores_one():
    ggroup, source, qgroup = groups_setup()
    g = np.eye(len(ggroup), dtype=np.float32)
    m = evaluate(g[source] @ g.T, source, qgroup, ggroup)
    assert m.map == 1.0 and m.micro_ap == 1.0 and m.recall_at_1 == 1.0


def test_random_descriptor_scores_chance_and_matches_sklearn():
    rng = np.random.default_rng(0)
    ggroup, source, qgroup = groups_setup(n_photos=60, crops=4)
    source = np.tile(source, 10)
    qgroup = ggroup[source]
    scores = rng.standard_normal((len(source), len(ggroup))).astype(np.float32)
    m = evaluate(scores, source, qgroup, ggroup)
    candidates = len(ggroup) - 3  # other crops of the source photo are excluded
    chance = np.mean(1.0 / np.arange(1, candidates + 1))
    assert abs(m.map - chance) < 0.01, (m.map, chance)
    ref_map, ref_micro = reference(scores, source, qgroup, ggroup)
    assert m.map == pytest.approx(ref_map, abs=1e-9)
    assert m.micro_ap == pytest.approx(ref_micro, abs=1e-9)
    assert abs(m.recall_at_1 - 1 / candidates) < 0.01


def test_partial_descriptor_matches_sklearn():
    rng = np.random.default_rng(1)
    ggroup, source, qgroup = groups_setup(n_photos=30, crops=2)
    g = rng.standard_normal((len(ggroup), 16)).astype(np.float32)
    q = g[source] + 1.2 * rng.standard_normal((len(source), 16)).astype(np.float32)
    scores = q @ g.T
    m = evaluate(scores, source, qgroup, ggroup)
    ref_map, ref_micro = reference(scores, source, qgroup, ggroup)
    assert 0.2 < m.map < 0.95
    assert m.map == pytest.approx(ref_map, abs=1e-9) and m.micro_ap == pytest.approx(ref_micro, abs=1e-9)


def test_copy_sets_record_their_source_and_mix_another_photo():
    photos = load_source_photos(use_opencv_doc=False)
    gallery = make_gallery(photos, crops_per_photo=2, seed=0)
    assert len({g.group for g in gallery}) == len(photos) and len(gallery) == 2 * len(photos)
    by_key = {g.key: g for g in gallery}
    for name in SETS:
        queries = make_queries(gallery, name, seed=0)
        assert len(queries) == len(gallery)
        for q in queries[:5]:
            assert by_key[q.source_key].group != "" and q.set == name
            src = np.asarray(by_key[q.source_key].image, np.float32)
            img = np.asarray(q.image, np.float32)
            if name == "plain":
                continue  # crops and rescales change the size
            same = np.mean(np.abs(img - src).sum(-1) < 1)
            if name in ("segmix_background", "diagonal_image", "diagonal_noise"):
                assert 0.3 < same < 0.95, (name, same)  # part of the source kept in place
            else:
                assert same < 0.5, (name, same)  # source content moved into another image
    assert make_queries(gallery, "cutmix", 0)[3].image.tobytes() == make_queries(gallery, "cutmix", 0)[3].image.tobytes()
    with pytest.raises(ValueError, match="unknown copy set"):
        make_queries(gallery, "nope", 0)


@requires_sscd
@pytest.mark.slow
def test_real_sscd_beats_random_init_on_every_set(tmp_path):
    cfg = CopyBenchConfig(out_dir=str(tmp_path), models=["sscd_onnx", "clip:ViT-B-32"],
                          weights={"clip:ViT-B-32": "random"}, crops_per_photo=2,
                          use_opencv_doc=False, region_models=[])
    results = run_copybench(cfg)
    sscd, rand = results["rows"]["sscd_onnx"], results["rows"]["clip:ViT-B-32 (random init)"]
    margins = {s: sscd[s]["map"] - rand[s]["map"] for s in SETS}
    assert all(m >= 0.05 for m in margins.values()), margins
    assert np.mean(list(margins.values())) >= 0.2, margins
    assert results["average_rank"]["sscd_onnx"] == 1.0
    # outputs: WebDataset sets with their ground truth, the table, the report
    with tarfile.open(tmp_path / "sets" / "cutmix.tar") as tar:
        names = tar.getnames()
    assert len(names) == 2 * results["queries_per_set"]  # <key>.jpg + <key>.json
    table = (tmp_path / "table.md").read_text()
    assert table.splitlines()[0].startswith("| descriptor | cutmix") and "sscd_onnx" in table
    assert (tmp_path / "report.html").read_text().count("<img") == 8 * len(SETS)


def test_batched_split_product_equals_the_definition():
    from diffrep.copybench.evaluate import split_product_scores
    from diffrep.similarity import split_product

    rng = np.random.default_rng(2)
    q = rng.standard_normal((5, 49, 32)).astype(np.float32)
    g = rng.standard_normal((7, 49, 32)).astype(np.float32)
    want = np.stack([split_product(x, g) for x in q])
    np.testing.assert_allclose(split_product_scores(q, g, block=2), want, atol=1e-5)
