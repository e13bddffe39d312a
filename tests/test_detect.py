"""The detector benchmark's metrics and scores (no testbed needed: a random tiny pipeline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffrep.detect import metrics


def test_roc_auc_and_tpr_match_sklearn_on_random_scores_with_ties():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.random(300) < 0.2
        scores = np.round(rng.normal(size=300) + labels * 1.0, 1)  # ties on purpose
        assert metrics.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
        fpr, tpr, _ = roc_curve(labels, scores)
        assert metrics.tpr_at_fpr(scores, labels, 0.01) == pytest.approx(tpr[fpr <= 0.01].max())
        assert metrics.tpr_at_fpr(scores, labels, 0.2) == pytest.approx(tpr[fpr <= 0.2].max())


def test_roc_extremes():
    labels = np.array([1, 1, 0, 0, 0], bool)
    assert metrics.roc_auc(np.array([5, 4, 3, 2, 1]), labels) == 1.0
    assert metrics.roc_auc(np.array([1, 2, 3, 4, 5]), labels) == 0.0
    assert metrics.roc_auc(np.ones(5), labels) == 0.5
    assert metrics.tpr_at_fpr(np.array([5, 4, 3, 2, 1]), labels) == 1.0
    with pytest.raises(ValueError):
        metrics.roc_auc(np.ones(3), np.ones(3, bool))


def test_scores_of_a_random_pipeline_and_the_bench_outputs(tmp_path):
    from diffrep.detect.bench import read_labels, run_bench
    from diffrep.detect.scores import angle_magnitude
    from diffrep.diffusion.scores import Denoiser
    from diffrep.diffusion.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(tmp_path / "pipe", seed=1, resolution=32)
    captions = ["a red square", "a blue circle", "a cat", "a dog", "the sea", "a car"]
    (tmp_path / "labels.csv").write_text("caption,label\n" + "\n".join(
        f"{c},{int(i < 2)}" for i, c in enumerate(captions)) + "\n")
    caps, labels = read_labels(tmp_path / "labels.csv")
    assert caps == captions and labels.tolist() == [True, True, False, False, False, False]

    results = run_bench(pipe, caps, labels, tmp_path / "out", 32, "t", ecs_seeds=2, batch_size=4)
    assert set(results) == {"dcs", "noise_magnitude", "ecs", "angle_magnitude"}
    assert results["ecs"]["passes_per_caption"] == 2
    assert results["angle_magnitude"]["passes_per_caption"] == 4
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [c["caption"] for c in written["captions"]] == captions
    assert [c["label"] for c in written["captions"]] == labels.tolist()
    assert written["results"] == json.loads(json.dumps(results))
    table = (tmp_path / "out" / "table.md").read_text()
    for name, r in results.items():  # one row per detector, with its AUC
        assert any(name in row and f"{r['auc']:.3f}" in row for row in table.splitlines()), name
    assert "<svg" in (tmp_path / "out" / "report.html").read_text()

    # The angle score does not depend on the batch, and one caption's differences are
    # perfectly aligned with themselves when K = 1 pair is repeated.
    den = Denoiser(pipe)
    a = angle_magnitude(den, caps, 32, batch_size=6)
    b = angle_magnitude(den, caps, 32, batch_size=2)
    np.testing.assert_allclose(a["angle_magnitude"], b["angle_magnitude"], rtol=1e-4)
    same = angle_magnitude(den, caps[:2], 32, timesteps=(999, 999), seeds=(3,))
    np.testing.assert_allclose(same["am_alignment"], 1.0, atol=1e-5)
    assert np.all((a["am_alignment"] >= -1) & (a["am_alignment"] <= 1))


def test_each_kind_is_evaluated_against_every_negative(tmp_path):
    from diffrep.detect.bench import by_kind, markdown_table, read_kinds

    labels = np.array([True, True, True, True, False, False, False, False])
    kinds = ["memorized", "memorized", "paraphrase", "paraphrase", "once", "once", "once", "once"]
    # the detector ranks memorized captions above every negative, paraphrases below them
    scores = {"dcs": np.array([9.0, 8.0, 0.5, 0.4, 3.0, 2.0, 1.0, 0.0])}
    per_kind = by_kind(scores, labels, kinds, {"dcs": 2})
    assert per_kind["memorized"]["dcs"]["auc"] == 1.0 and per_kind["memorized"]["positives"] == 2
    assert per_kind["paraphrase"]["dcs"]["auc"] == 0.25  # 2 of 8 (positive, negative) pairs
    table = markdown_table({"dcs": {"auc": 0.5, "tpr_at_fpr": 0.0, "passes_per_caption": 2}}, kinds=per_kind)
    assert "| paraphrase | 2 | 0.250 / 0.000 |" in table
    from diffrep.detect.bench import write_report

    write_report(tmp_path, "t", {"dcs": {"auc": 0.5, "tpr_at_fpr": 0.0, "passes_per_caption": 2}},
                 scores, labels, "note", per_kind)
    page = (tmp_path / "report.html").read_text()
    assert "kind (against every negative)" in page and "<td>paraphrase</td>" in page
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"captions": [{"caption": "a", "memorized": True, "kind": "template"}]}))
    assert read_kinds(truth) == ["template"] and read_kinds(tmp_path / "labels.csv") is None


def test_roc_legend_sits_in_the_bottom_right_corner_where_no_good_curve_runs():
    import re

    from diffrep.report.html import svg_lines

    curves = {"a": ([0, 0.1, 1], [0, 0.9, 1]), "b": ([0, 0.5, 1], [0, 0.5, 1])}
    height, top, bottom = 300, 28, 40

    def legend_rows(svg: str) -> list[float]:
        return [float(y) for y in re.findall(r"<rect x='[\d.]+' y='([\d.]+)' width='10'", svg)]

    low = legend_rows(svg_lines(curves, "ROC", "fpr", "tpr", y_max=1.0, legend="bottom"))
    high = legend_rows(svg_lines(curves, "ROC", "fpr", "tpr", y_max=1.0))
    middle = top + (height - top - bottom) / 2
    assert len(low) == len(high) == 2
    assert all(y > middle for y in low) and all(y < middle for y in high)
    assert low == sorted(low) and low[-1] + 10 <= height - bottom  # in order, above the axis
