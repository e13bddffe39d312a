"""Probes recorded at add time (diffrep.index.probes): the add they come from against
faiss's own add, the probes against the quantizer's search, what the build records, and
dedup through them against dedup through the quantizer (an index built before them) and
against exact pairs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from diffrep.dedup.config import DedupConfig
from diffrep.dedup.run import run_dedup
from diffrep.executor import LocalExecutor
from diffrep.index.builder import build
from diffrep.index.config import IndexConfig
from diffrep.index.layout import IndexLayout
from diffrep.index.manifest import describe_files
from diffrep.index.probes import STORED_PROBES, add_with_probes, centroids_view, stored_assignment
from diffrep.search import open_index
from diffrep.search.lists import ListRouter
from diffrep.synthetic import clustered_vectors, write_embeddings

MODEL = "sscd_onnx"
DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def entries(index: faiss.Index) -> dict[int, tuple[list[int], bytes]]:
    """Every non-empty list's ids and codes."""
    invlists = faiss.extract_index_ivf(index).invlists
    out = {}
    for lst in range(invlists.nlist):
        n = invlists.list_size(lst)
        if n:
            ids = faiss.rev_swig_ptr(invlists.get_ids(lst), n).tolist()
            codes = faiss.rev_swig_ptr(invlists.get_codes(lst), n * invlists.code_size).tobytes()
            out[lst] = (ids, codes)
    return out


@pytest.mark.parametrize("key", ["IVF40_HNSW32,PQ8x8np", "OPQ8_32,IVF40,PQ8", "IVF40,Flat"])
def test_adding_with_probes_is_faiss_add_and_the_probes_are_the_quantizers(key):
    x = clustered_vectors(6000, DIM, clusters=20, seed=2)
    ids = np.arange(100, 100 + len(x), dtype=np.int64)
    trained = faiss.index_factory(DIM, key, faiss.METRIC_INNER_PRODUCT)
    trained.train(x)
    data = faiss.serialize_index(trained)
    plain, ours = faiss.deserialize_index(data), faiss.deserialize_index(data)
    plain.add_with_ids(x, ids)
    probes = np.concatenate([add_with_probes(ours, x[s:s + 2500], ids[s:s + 2500]) for s in range(0, len(x), 2500)])
    assert ours.ntotal == plain.ntotal == len(x)
    assert entries(ours) == entries(plain)  # the same lists, ids and codes
    assert probes.shape == (len(x), STORED_PROBES) and probes.dtype == np.int32
    where = {i: lst for lst, (got, _) in entries(ours).items() for i in got}
    assert [where[i] for i in ids.tolist()] == probes[:, 0].tolist()
    ivf = faiss.extract_index_ivf(ours)
    router = ListRouter(ours, key, [(0, ivf.nlist - 1)])
    xt = router.transform(x)
    sims, lists_ = ivf.quantizer.search(xt, 4)
    got, got_sims = stored_assignment(xt, probes, centroids_view(ivf.quantizer), 4)
    assert (got == lists_).all()
    np.testing.assert_allclose(got_sims, sims, rtol=1e-5, atol=1e-5)
    assert router.can_use_stored(STORED_PROBES, 8) and not router.can_use_stored(STORED_PROBES, 9)


def planted(n: int, seed: int) -> np.ndarray:
    """Clustered vectors, a third of them with a near copy (cosine ~0.99) elsewhere."""
    rng = np.random.default_rng(seed)
    x = clustered_vectors(n, DIM, clusters=30, seed=seed)
    src = rng.choice(n, n // 3, replace=False)
    dst = rng.permutation(np.setdiff1d(np.arange(n), src))[:len(src)]
    x[dst] = unit(x[src] + 0.1 / np.sqrt(DIM) * rng.standard_normal((len(src), DIM)).astype(np.float32))
    return x


def test_the_build_records_the_probes_and_dedup_uses_them_for_the_same_pairs(tmp_path):
    x = planted(9000, seed=4)
    root = str(tmp_path / "new")
    write_embeddings(root, MODEL, x, 1500)
    build(IndexConfig(root=root, model=MODEL, index_key="IVF48_HNSW32,PQ8x8np", exact_below=0,
                      num_shards=3, eval_queries=100), LocalExecutor())
    handle = open_index(root, MODEL)
    layout = IndexLayout(root, MODEL)
    # each slice's lists file holds the list every vector sits in, in the shards themselves
    where = np.full(len(x), -1)
    for s in handle.manifest["shards"]:
        index = faiss.read_index(handle.shard_url(s["file"]))
        ivf = faiss.extract_index_ivf(index)
        for lst in range(ivf.nlist):
            size = ivf.invlists.list_size(lst)
            if size:
                where[faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), size).copy()] = lst
    recorded = np.concatenate([np.load(layout.path(layout.probes_name(s.slice_id))) for s in handle.slices])
    assert len(handle.slices) > 1 and (recorded[:, 0] == where).all()
    # they are the probes a search of the same vectors returns (the build's calibrated efSearch)
    router = ListRouter.of(handle)
    _, by_quantizer, _ = router.assign(x, STORED_PROBES)
    assert (recorded == by_quantizer).mean() >= 0.999

    # an index built before the probes files: the same index, its manifest without them
    old = str(tmp_path / "old")
    shutil.copytree(tmp_path / "new" / "indexes", tmp_path / "old" / "indexes")
    shutil.copytree(tmp_path / "new" / "embeddings", tmp_path / "old" / "embeddings")
    old_layout = IndexLayout(old, MODEL)
    manifest = json.loads(Path(old_layout.manifest).read_text())
    names = [n for n in manifest["files"] if not n.startswith("probes/")]
    assert len(names) == len(manifest["files"]) - len(handle.slices)
    manifest["files"] = describe_files(old_layout.base, names)
    Path(old_layout.manifest).write_text(json.dumps(manifest))

    found = {}
    for name, r in (("new", root), ("old", old)):
        summary = run_dedup(DedupConfig(root=r, model=MODEL, threshold=0.95, margin=0.2, nprobe=4,
                                        partition_ids=4000), open_index(r, MODEL), LocalExecutor(), None)
        pairs = pq.read_table(f"{r}/dedup/{MODEL}/pairs", columns=["id_a", "id_b"])
        found[name] = set(zip(pairs["id_a"].to_pylist(), pairs["id_b"].to_pylist(), strict=True))
        assert summary["routing"]["quantizer_searches_per_query"] == (0.0 if name == "new" else 1.0)
    flat = faiss.IndexFlatIP(DIM)
    stored = handle.vectors(np.arange(len(x)))
    flat.add(stored)
    lims, _, ids = flat.range_search(stored, 0.95)
    qs = np.repeat(np.arange(len(x)), np.diff(lims).astype(np.int64))
    truth = {(int(a), int(b)) for a, b in zip(qs, ids, strict=True) if a < b}
    assert len(truth) > 2500
    for name in ("new", "old"):
        assert found[name] <= truth and len(found[name]) / len(truth) >= 0.99, (name, len(found[name]), len(truth))
    assert found["new"] == found["old"]  # the same probes, so the same pairs
