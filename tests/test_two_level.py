"""The coarse centroids of a large IVF trained in two levels (diffrep.index.two_level):
the sample split into runs and cells on disk, each cell clustered by its own task, and an
index as good as one k-means over the whole sample."""

from __future__ import annotations

import numpy as np
import pytest

from diffrep import storage
from diffrep.executor import LocalExecutor
from diffrep.index import two_level
from diffrep.index.builder import build
from diffrep.index.config import IndexConfig
from diffrep.index.layout import IndexLayout
from diffrep.search import open_index
from diffrep.synthetic import clustered_vectors, write_embeddings

MODEL = "sscd_onnx"


def test_lists_follow_the_cells_sizes_and_groups_bound_the_rows():
    counts = np.array([100, 0, 300, 50, 550])
    lists = two_level.lists_per_cell(counts, 40)
    assert lists.sum() == 40 and lists.tolist() == [4, 0, 12, 2, 22]
    groups = two_level.cell_groups(counts, dim=1, cell_bytes=4 * 400)
    assert groups == [[0, 1, 2], [3], [4]]  # 400 rows a group, a larger cell alone
    assert two_level.level1_lists(30000) == 174 and two_level.level1_lists(2**18) == 512
    sub = two_level.even_subset(1000, 10)
    assert len(sub) == 10 and sub[0] == 0 and sub[-1] == 999
    assert two_level.even_subset(5, 10).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("key", ["IVF256_HNSW32,Flat", "OPQ8_32,IVF256,PQ8x8np"])
def test_two_level_build_matches_one_k_means(tmp_path, monkeypatch, key):
    """The same corpus indexed with one k-means and with two levels (runs of 3,000
    vectors, cells grouped by 200 KB): the two-level index is marked so, its tasks saw
    bounded parts of the sample, its runs are gone, and its recall@10 is within 0.06 of
    the one-level index's at every nprobe both swept (measured here: at most 0.052 lower,
    at nprobe 2 of 256 lists; 0.0065 at 128: cells cut some clusters in two)."""
    monkeypatch.setattr(two_level, "RUN_BYTES", 3000 * 32 * 4)
    monkeypatch.setattr(two_level, "CELL_BYTES", 200 << 10)
    x = clustered_vectors(24000, 32, clusters=300, seed=5)
    infos = {}
    for name, lists in (("one", 0), ("two", 64)):
        root = str(tmp_path / name)
        write_embeddings(root, MODEL, x, 4000)
        infos[name] = build(IndexConfig(root=root, model=MODEL, index_key=key, exact_below=0, num_shards=2,
                                        eval_queries=200, train_points_per_centroid=39,
                                        two_level_lists=lists), LocalExecutor())
    one, two = infos["one"], infos["two"]
    assert one["coarse_training"] == "one k-means" and one["two_level"] is None
    assert two["coarse_training"] == "two-level"
    stats = two["two_level"]
    assert stats["level1_lists"] == 16 and stats["level1_points"] == 16 * 256
    assert stats["runs"] == 4 and stats["cell_tasks"] > 1  # 9,984 sample vectors in runs of 3,000
    assert stats["largest_cell"] < 9984 / 4
    assert not storage.exists(IndexLayout(str(tmp_path / "two"), MODEL).path("training"))
    assert two["ntotal"] == one["ntotal"] == len(x) and two["train_size"] == 39 * 256
    sweeps = [{s["nprobe"]: s["recall_at_10"] for s in i["nprobe_sweep"]} for i in (one, two)]
    for nprobe, recall in sweeps[0].items():  # at every nprobe both measured
        if nprobe in sweeps[1]:
            assert sweeps[1][nprobe] >= recall - 0.06, (nprobe, sweeps)
    hits = open_index(str(tmp_path / "two"), MODEL)
    assert hits.ntotal == len(x)


def test_laion_scale_training_fits_a_small_task_only_in_two_levels():
    """2^18 lists of 512 dims at 39 points a list: one k-means holds 10.2M x 512 float32
    (40 GB) and is refused under a 4 GB task budget; in two levels the choice stands and its
    largest task is about a GB (its share of the sample, and an HNSW over the centroids)."""
    from diffrep.config import ConfigError
    from diffrep.index.choose import choose_index

    key, n = "IVF262144_HNSW32,PQ64x8np", 2_000_000_000
    with pytest.raises(ConfigError, match="current_memory_available"):
        choose_index(n, 512, 2**50, 4 << 30, index_key=key, points_per_centroid=39)
    choice = choose_index(n, 512, 2**50, 4 << 30, index_key=key, points_per_centroid=39,
                          two_level_lists=8192)
    assert choice.train_size == 39 * 2**18 and choice.train_bytes <= 1200 << 20
