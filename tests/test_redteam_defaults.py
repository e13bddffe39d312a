"""The red-teamer's path on the committed testbed with default settings (issue 26): the
training set of testbed/memorizing as a corpus, embedded (SSCD) and indexed; a scan of
both testbed models and a DCS ranking of the memorizing model's captions, each with every
setting at its default except the few prompts and the top_n. Asserts what the defaults
used to get wrong: the resolution (the checkpoints' 32 px, not 512), the region decision
(off for 32 px generations), the baseline warning (most of the testbed's baseline is above
0.5), the region baseline's progress and cache, and the labels of the top 20 (the 16
template copies TV, not "none", also after a dedup at its default threshold)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import SSCD_MISSING, missing, onnx_sscd_available, requires_sscd

pytestmark = [pytest.mark.ray, pytest.mark.slow, requires_sscd]

TESTBED = Path(__file__).resolve().parents[1] / "testbed"
A, B = TESTBED / "memorizing", TESTBED / "large-data"


@pytest.fixture(scope="module")
def testbed_root(ray_cluster, tmp_path_factory):
    """(root, corpus dir): the testbed corpus embedded by the embed job and indexed."""
    if not onnx_sscd_available():  # before the embed job (requires_sscd runs after this)
        missing(SSCD_MISSING)
    from diffrep.executor import LocalExecutor
    from diffrep.index.builder import build
    from diffrep.index.config import IndexConfig
    from diffrep.testbed.corpus import write_testbed_corpus
    from jobs import embed

    base = tmp_path_factory.mktemp("redteam")
    corpus, root = base / "corpus", base / "out"
    # every memorized and template image, 200 of the 1,472 once-seen ones: the embedding
    # of all 1,500 took 40 s of the suite, and no assertion needs the rest
    write_testbed_corpus(TESTBED, A, str(corpus), num_shards=2, once_prompts=20, once_images=200)
    rc = embed.main(["--input", str(corpus / "shards" / "{00000..00001}.tar"), "--root", str(root),
                     "--models", "[sscd_onnx]", "--batch_size", "32",
                     "--ray_address", ray_cluster.address])
    assert rc == 0
    build(IndexConfig(root=str(root), model="sscd_onnx", num_shards=1, eval_queries=20),
          LocalExecutor())
    return root, corpus


def test_region_baseline_shows_progress_and_a_second_scan_reads_it_back(testbed_root, caplog,
                                                                      monkeypatch):
    from diffrep.models import create_embedder
    from diffrep.scan import baseline
    from diffrep.scan.layout import ScanLayout
    from diffrep.search import Searcher, open_index
    from diffrep.search.regions import RegionSpec

    root, _ = testbed_root
    handle = open_index(str(root), "sscd_onnx")
    searcher, embedder = Searcher(handle), create_embedder("sscd_onnx")
    spec = RegionSpec((0.5,), rerank=0)
    monkeypatch.setattr(baseline, "REGION_CHUNK", 8)  # 16 images in 2 chunks
    with caplog.at_level(logging.INFO, logger="diffrep"):
        first = baseline.load_or_compute_regions(ScanLayout(str(root), "one"), searcher, embedder,
                                                 spec, 16, 0, 4, duplicate_above=0.5,
                                                 progress_interval_s=0)
    progress = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("scan region baseline: chunks")]
    assert progress and "ETA" in progress[0] and "chunks 2/2" in progress[-1]
    assert len(first) == 16

    def no_recompute(*args, **kwargs):
        raise AssertionError("the region baseline was computed again")

    monkeypatch.setattr(baseline, "region_nulls", no_recompute)
    again = baseline.load_or_compute_regions(ScanLayout(str(root), "two"), searcher, embedder,
                                             spec, 16, 0, 4, duplicate_above=0.5)  # another run, same index
    assert again.equals(first)


def test_scan_of_both_models_with_defaults(testbed_root):
    """Scan with every setting at its default but the prompts (6 of the corpus's memorized
    and once-seen captions, 2 seeds): 32 px from the checkpoints, regions off with the
    reason, and the baseline's warning (the testbed's 32 px images are mostly above 0.5
    against each other)."""
    from diffrep.diffusion.pipelines import resolve_checkpoint
    from diffrep.scan.config import ScanConfig, validate
    from diffrep.scan.run import run_scan
    from diffrep.search import open_index

    root, corpus = testbed_root
    cfg = ScanConfig(root=str(root), run="defaults", checkpoints=[str(A), str(B)],
                     prompts=str(corpus / "prompts.parquet"), num_prompts=6, seeds_per_prompt=2)
    validate(cfg)
    summary = run_scan(cfg, [resolve_checkpoint(c) for c in cfg.checkpoints],
                       open_index(str(root), "sscd_onnx"), None)
    assert summary["settings"]["resolution_by_checkpoint"] == {"memorizing": 32, "large-data": 32}
    gens = pq.read_table(root / "scans" / "defaults" / "generations" / "memorizing" / "00000.parquet")
    assert set(gens["resolution"].to_pylist()) == {32}
    assert summary["regions"]["enabled"] is False and summary["regions"]["switched_off"]
    assert "32 px" in summary["regions"]["reason"] and "region_baseline" not in summary
    share = summary["baseline"]["share_above_threshold"]
    assert share > 0.5 and summary["baseline"]["uninformative"]
    assert f"{100 * share:.1f}% of the baseline" in summary["warnings"][0]
    for label in ("memorizing", "large-data"):
        assert summary["checkpoints"][label]["baseline_comparison"] == "uninformative"
    report = (root / "scans" / "defaults" / "report.html").read_text()
    assert "id='warnings'" in report and "regions off" in report


def test_dcs_with_defaults_labels_the_top_20_mv_or_tv_also_after_a_default_dedup(testbed_root):
    """The issue's run: jobs.dedup at its default threshold (0.95, which groups no
    template variant), then the ranking with every default but top_n 20 picks that dedup
    up (dedup_groups auto). Template masks come from each neighbour's own index
    neighbours where its dedup group is a singleton: the top 20 are the 16 template copies
    (TV) and 4 memorized prints (MV), as testbed/memorizing/testbed/truth.json says."""
    from diffrep.dedup.config import DedupConfig
    from diffrep.dedup.run import run_dedup
    from diffrep.diffusion.pipelines import resolve_checkpoint
    from diffrep.executor import LocalExecutor
    from diffrep.rank.config import RankConfig, validate
    from diffrep.rank.run import run_rank
    from diffrep.search import open_index
    from diffrep.testbed.data import read_truth

    root, _ = testbed_root
    dedup = run_dedup(DedupConfig(root=str(root), model="sscd_onnx"),
                      open_index(str(root), "sscd_onnx"), LocalExecutor(), None)
    assert dedup["threshold"] == 0.95
    cfg = RankConfig(root=str(root), checkpoint=str(A), top_n=20)
    validate(cfg)
    summary = run_rank(cfg, resolve_checkpoint(cfg.checkpoint))
    assert summary["resolution"] == 32 and summary["captions"]["dedup_groups"]
    truth_rows = [r for part in sorted((root / "rankings" / "dcs" / "truth").glob("*.parquet"))
                  for r in pq.read_table(part).to_pylist()]
    truth = {t["caption"]: t for t in read_truth(A / "testbed")}
    labels = {r["caption"]: r["label"] for r in truth_rows}
    print("top 20 labels:", summary["labels"])
    assert len(labels) == 20 and all(truth[c]["memorized"] for c in labels)
    wrong = {c: lab for c, lab in labels.items() if lab not in ("MV", "TV")}
    assert not wrong, wrong
    templates = [c for c in labels if truth[c]["kind"] == "template"]
    assert len(templates) == 16 and all(labels[c] == "TV" for c in templates)
    assert np.isclose(summary["curves"]["dcs"]["precision"][-1], 1.0)
