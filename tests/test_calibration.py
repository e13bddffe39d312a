"""The region threshold from an index's own nulls (diffrep.search.calibration): the rule,
and on a corpus of icons, screenshots and diagrams built from installed files and drawing
(diffrep.data.graphics), a real scan whose unrelated images the fixed 0.5 would accuse
and the calibrated threshold does not."""

from __future__ import annotations

import numpy as np
import pytest

from diffrep.search.calibration import calibrate, fixed, unrelated_images


def test_the_floor_decides_until_a_null_comes_within_the_margin():
    low = calibrate(0.5, 0.05, {"baseline": np.array([0.2, 0.31, np.nan]),
                                "unrelated": np.array([0.44])})
    assert low.threshold == 0.5 and low.decided_by == "floor"
    assert low.nulls["baseline"] == {"count": 2, "max": 0.31, "p99": pytest.approx(0.3089),
                                     "above_floor": 0}
    assert "the floor" in low.reason
    high = calibrate(0.5, 0.05, {"baseline": np.array([0.3, 0.62]),
                                 "unrelated": np.array([0.71, 0.4, np.nan])})
    assert high.threshold == pytest.approx(0.76) and high.decided_by == "unrelated null"
    assert high.nulls["unrelated"]["above_floor"] == 1
    assert "raised from the floor 0.5" in high.reason and "0.710" in high.reason
    empty = calibrate(0.5, 0.05, {"baseline": np.array([np.nan])})
    assert empty.threshold == 0.5 and "no null" in empty.reason
    off = fixed(0.6)
    assert off.threshold == 0.6 and off.decided_by == "fixed" and off.as_dict()["nulls"] == {}


def test_unrelated_images_are_seeded_and_of_both_kinds():
    a, b = unrelated_images(4, seed=3), unrelated_images(4, seed=3)
    assert [n for n, _ in a] == [n for n, _ in b]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for (_, x), (_, y) in zip(a, b, strict=True))
    assert {n.split("/")[1] for n, _ in a} == {"flat_drawing", "drawn_scene"}
    assert unrelated_images(4, seed=4)[0][0] != a[0][0]


@pytest.mark.slow
def test_on_icons_and_diagrams_the_region_threshold_rises_above_the_index_nulls(ray_cluster, sscd_weights, tmp_path):
    """A new user's trial at test size: icons, screenshots and diagrams are sharded,
    embedded with the real SSCD and indexed by the jobs; a folder of images that copy
    nothing of them (held-out icons, flat drawings, drawn scenes) and of corpus images
    pasted into drawn scenes is scanned. Training images reach region scores above the
    floor against training images that are not their duplicates; the threshold is
    raised above those nulls, no unrelated image is accused by its region score alone, and
    the summary and report say which threshold decided and why."""
    import json

    import pyarrow.parquet as pq

    from diffrep.data.graphics import graphics, write_folder, write_trial_queries
    from diffrep.executor import LocalExecutor
    from diffrep.index.builder import build
    from diffrep.index.config import IndexConfig
    from jobs import embed, scan, shards
    from tests.helpers import need_chromium, render_report

    corpus = graphics(48, seed=0)
    assert {kind for _, kind, _ in corpus} == {"icon", "screenshot", "diagram"}
    assert shards.main(["--folder", str(write_folder(tmp_path / "corpus", corpus)),
                        "--out_dir", str(tmp_path / "shards"), "--samples_per_shard", "24"]) == 0
    root = tmp_path / "out"
    assert embed.main(["--input", str(tmp_path / "shards" / "{00000..00001}.tar"), "--root", str(root),
                       "--models", "[sscd_onnx]", "--batch_size", "16"]) == 0
    build(IndexConfig(root=str(root), model="sscd_onnx", num_shards=1, eval_queries=5), LocalExecutor())
    truth = write_trial_queries(corpus, tmp_path / "queries", unrelated=4, pasted=1, seed=0)
    assert scan.main(["--root", str(root), "--run", "graphics", "--generated", str(tmp_path / "queries"),
                      "--generated_name", "queries", "--baseline_size", "16", "--region_unrelated", "2",
                      "--shard_actors", "never"]) == 0
    summary = json.loads((root / "scans/graphics/summary.json").read_text())
    calibration, region_thr = summary["region_calibration"], summary["region_threshold"]
    rows = {r["gen_id"].rsplit("/", 1)[1].rsplit(".", 1)[0]: r
            for p in sorted((root / "scans/graphics/generations/queries").glob("*.parquet"))
            for r in pq.read_table(p).to_pylist()}
    assert set(rows) == set(truth)
    # the index's own nulls: training images' region scores against training images that
    # are not their duplicates reach above the floor on icons (they would be "copies")
    nulls = calibration["nulls"]
    assert nulls["baseline"]["count"] >= 1 and nulls["unrelated"]["count"] == 2
    assert nulls["baseline"]["above_floor"] >= 1, nulls
    assert calibration["decided_by"].endswith("null") and region_thr > calibration["floor"]
    assert region_thr == pytest.approx(max(d["max"] for d in nulls.values()) + calibration["margin"])
    # no unrelated image that the global score leaves alone is accused by its region score
    # (held-out icons the global score already calls copies are the index's problem: the
    # baseline warning says so first)
    unrelated = [rows[n] for n, t in truth.items() if t["kind"] == "unrelated"]
    assert not [r for r in unrelated
                if r["top1_sim"] <= summary["threshold"] and r["region_sim"] > region_thr], unrelated
    assert summary["baseline"]["uninformative"] and "cannot tell a copy" in summary["warnings"][0]
    s = summary["checkpoints"]["queries"]
    assert s["region"]["above_threshold"] == sum(r["region_sim"] > region_thr for r in rows.values())

    need_chromium()
    rendered = render_report(root / "scans/graphics/report.html", tmp_path)
    assert f"Region threshold {region_thr:.3f}" in rendered["dom"]
    assert f"raised from the floor {calibration['floor']:g}" in rendered["dom"]
