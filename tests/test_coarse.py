"""The HNSW coarse quantizer's efSearch, calibrated by the build: raised until the probes
reach the target against an exact search over the centroids, carried by the trained index
into every shard, and used by the searches."""

from __future__ import annotations

import faiss
import numpy as np

from diffrep.executor import LocalExecutor
from diffrep.index.build import deserialize, search_params
from diffrep.index.builder import build
from diffrep.index.coarse import calibrate_ef, probe_recall, stored_ef
from diffrep.index.config import IndexConfig
from diffrep.search import LocalShards, open_index
from diffrep.synthetic import clustered_vectors, write_embeddings

MODEL = "sscd_onnx"


def test_ef_is_the_smallest_step_whose_probes_reach_the_target():
    """8,192 centroids in 64 dims: faiss's default efSearch 16 returns too few of a
    query's 8 nearest centroids; calibration climbs the steps to the first that reaches
    0.99, measured again here against a flat search, and the index keeps it through
    serialisation."""
    rng = np.random.default_rng(0)
    d, nlist = 64, 8192
    centroids = rng.standard_normal((nlist, d)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    hnsw = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(centroids)
    index = faiss.IndexIVFFlat(hnsw, d, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = centroids[rng.integers(0, nlist, 5000)] + 0.05 * rng.standard_normal((5000, d)).astype(np.float32)

    got = calibrate_ef(index, sample, nprobe=8, target=0.99)
    tried = {int(e): r for e, r in got["tried"].items()}
    assert tried[16] < 0.99 and got["ef"] > 16
    assert got["recall"] >= 0.99 and all(r < 0.99 for e, r in tried.items() if e < got["ef"])
    assert stored_ef(index) == got["ef"]

    copy = deserialize(np.frombuffer(faiss.serialize_index(index), np.uint8))
    queries = np.ascontiguousarray(sample[:1000])
    flat = faiss.IndexFlatIP(d)
    flat.add(centroids)
    _, truth = flat.search(queries, 8)
    assert probe_recall(hnsw, truth, queries, got["ef"]) >= 0.985
    assert probe_recall(hnsw, truth, queries, 16) < 0.985
    assert stored_ef(copy) == got["ef"]
    assert f"efSearch={got['ef']}" in search_params("IVF8192_HNSW32,Flat", 4, stored_ef(copy))
    assert search_params("IVF8192_HNSW32,Flat", 64, got["ef"]) == "nprobe=64,efSearch=128"


def test_the_build_records_the_calibration_and_every_search_uses_it(tmp_path, monkeypatch):
    """The build's calibrated efSearch (here the steps start at 48, above faiss's 16, so
    that 64 lists need no more) is recorded in infos, carried by each shard file's
    quantizer (the adds assigned with it) and used by the list router."""
    from diffrep.index import coarse as coarse_module

    monkeypatch.setattr(coarse_module, "EF_STEPS", (48, 96))
    x = clustered_vectors(8000, 32, clusters=40, seed=3)
    root = str(tmp_path)
    write_embeddings(root, MODEL, x, 1000)
    build(IndexConfig(root=root, model=MODEL, index_key="IVF64_HNSW32,PQ8x8np", exact_below=0,
                      num_shards=2, eval_queries=100, coarse_recall=1.0), LocalExecutor())
    handle = open_index(root, MODEL)
    coarse = handle.infos["coarse_quantizer"]
    assert coarse["target"] == 1.0 and coarse["nprobe"] == 8 and coarse["ef"] == 48
    assert coarse["recall"] == 1.0 and coarse["tried"] == {"48": 1.0}
    assert f"efSearch={max(48, 2 * handle.infos['nprobe'])}" in handle.infos["search_params"]
    shards = LocalShards(handle)
    assert shards.router.ef == 48
    assert {stored_ef(s.index) for s in shards.shards} == {48}
    shards.search(x[:50], 5, 4)
    assert shards.router.index is not None and stored_ef(shards.router.index) == 48
