"""Dedup: planted duplicate groups in synthetic vectors (groups must not depend on how the
work is sliced or sharded), and the demo corpus with the real SSCD, through the job, with
its report rendered in headless Chromium."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from diffrep.dedup.components import forest, merge_forests
from diffrep.dedup.config import DedupConfig
from diffrep.dedup.run import run_dedup
from diffrep.executor import LocalExecutor
from diffrep.index.builder import build
from diffrep.index.config import IndexConfig
from diffrep.search import open_index
from tests.helpers import chromium, render_report
from tests.index_helpers import clustered_vectors, write_embeddings

MODEL = "sscd_onnx"


def planted(n: int = 3000, dim: int = 64, seed: int = 0):
    """Vectors with planted groups: group g has 2..6 near-copies (similarity > 0.99) of one
    base vector, spread over the whole corpus order. Returns (vectors, true group of each
    row or -1)."""
    rng = np.random.default_rng(seed)
    x = clustered_vectors(n, dim, clusters=40, seed=seed)
    truth = np.full(n, -1)
    rows = rng.permutation(n)
    pos, g = 0, 0
    while pos < 600:
        size = int(rng.integers(2, 7))
        members = rows[pos:pos + size]
        base = x[members[0]]
        for m in members[1:]:
            v = base + 0.01 * rng.standard_normal(dim).astype(np.float32)
            x[m] = v / np.linalg.norm(v)
        truth[members] = g
        pos, g = pos + size, g + 1
    return x, truth


def partition(groups_table) -> set[frozenset]:
    by: dict[int, set] = {}
    for key, gid in zip(groups_table["key"].to_pylist(), groups_table["group_id"].to_pylist(), strict=True):
        by.setdefault(gid, set()).add(key)
    return {frozenset(v) for v in by.values()}


def test_forest_merge_equals_components_of_the_union():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 500, 400), rng.integers(0, 500, 400)
    whole = forest(a, b)
    parts = [forest(a[i::3], b[i::3]) for i in range(3)]
    merged = merge_forests([merge_forests(parts[:2]), parts[2]])
    np.testing.assert_array_equal(whole[0], merged[0])
    np.testing.assert_array_equal(whole[1], merged[1])
    # roots are the smallest id of each component
    for node, root in zip(*whole, strict=True):
        assert root <= node


@pytest.mark.parametrize("rows_per_slice,shards,fan_in", [(3000, 1, 2), (250, 3, 2), (500, 2, 8)])
def test_groups_do_not_depend_on_slices_or_shards(tmp_path, rows_per_slice, shards, fan_in):
    x, truth = planted()
    root = str(tmp_path)
    write_embeddings(root, MODEL, x, 250)
    build(IndexConfig(root=root, model=MODEL, num_shards=shards, rows_per_slice=rows_per_slice,
                      eval_queries=50), LocalExecutor())
    handle = open_index(root, MODEL)
    summary = run_dedup(DedupConfig(root=root, model=MODEL, threshold=0.95, merge_fan_in=fan_in),
                        handle, LocalExecutor(), None)
    groups = pq.read_table(tmp_path / "dedup" / MODEL / "groups.parquet")
    keys = [f"k{r // 250:05d}_{r % 250}" for r in range(len(x))]
    want = {}
    for key, g in zip(keys, truth, strict=True):
        if g >= 0:
            want.setdefault(g, set()).add(key)
    assert partition(groups) == {frozenset(v) for v in want.values()}
    assert summary["groups"] == len(want) and summary["duplicated_images"] == int((truth >= 0).sum())
    # every within-group pair, once (over all slices' files); duplicate counts = size - 1
    pairs = pq.read_table(tmp_path / "dedup" / MODEL / "pairs")
    assert pairs.num_rows == sum(len(v) * (len(v) - 1) // 2 for v in want.values())
    assert min(pairs["similarity"].to_pylist()) > 0.95
    assert len({(a, b) for a, b in zip(pairs["key_a"].to_pylist(), pairs["key_b"].to_pylist(), strict=True)}) \
        == pairs.num_rows
    g = groups.to_pylist()
    assert all(r["duplicate_count"] == r["group_size"] - 1 for r in g)
    assert sum(r["is_representative"] for r in g) == len(want)


def test_demo_dedup_job_finds_planted_duplicates(demo_sscd_root, tmp_path):
    from jobs import dedup

    root, corpus, _ = demo_sscd_root
    root = str(root)
    build(IndexConfig(root=root, model=MODEL, num_shards=2, eval_queries=20), LocalExecutor())
    assert dedup.main(["--root", root, "--model", MODEL, "--threshold", "0.6",
                       "--shard_actor_cpus", "0.5", "--overwrite", "true"]) == 0
    base = f"{root}/dedup/{MODEL}"
    pairs = pq.read_table(f"{base}/pairs").to_pylist()
    found = {frozenset((p["key_a"], p["key_b"])) for p in pairs}
    truth = {frozenset((d["key"], d["source_key"]))
             for d in pq.read_table(corpus / "duplicates.parquet").to_pylist()}
    # pairs among copies of one source are true duplicates as well
    sources: dict[str, set] = {}
    for d in pq.read_table(corpus / "duplicates.parquet").to_pylist():
        sources.setdefault(d["source_key"], {d["source_key"]}).add(d["key"])
    same_source = {frozenset((a, b)) for s in sources.values() for a in s for b in s if a < b}
    recall = len(found & truth) / len(truth)
    precision = len(found & same_source) / max(len(found), 1)
    assert recall >= 0.9 and precision >= 0.95, (recall, precision)
    groups = pq.read_table(f"{base}/groups.parquet").to_pylist()
    group_of = {g["key"]: g["group_id"] for g in groups}
    for members in sources.values():  # distinct photos are never grouped together
        ids = {group_of.get(k) for k in members} - {None}
        assert len(ids) <= 1
    if chromium() is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    rendered = render_report(f"{base}/report.html", tmp_path)
    assert rendered["images"] >= 4 and rendered["images_ok"] == rendered["images"]
    assert rendered["svgs"] == 3 and "Largest groups" in rendered["dom"]
