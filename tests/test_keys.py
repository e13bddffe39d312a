"""The key index: keys resolve to the ids a scan of the id maps gives (absent keys left
out, a key held twice -> its smallest id), reading only the parts the keys hash to; an
added generation includes the new slices; a tampered part is refused by the manifest."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffrep.embed.layout import ModelOutput
from diffrep.executor import LocalExecutor
from diffrep.index.builder import build
from diffrep.index.config import IndexConfig
from diffrep.index.keys import key_partition
from diffrep.index.manifest import IndexIntegrityError
from diffrep.search import open_index
from diffrep.synthetic import clustered_vectors, write_embeddings

MODEL = "sscd_onnx"


def scan_id_maps(handle) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in handle.slices:
        t = pq.read_table(handle.layout.path(handle.layout.idmap_name(s.slice_id)))
        for key, id_ in zip(t["key"].to_pylist(), t["id"].to_pylist(), strict=True):
            out[key] = min(id_, out.get(key, id_))
    return out


def test_key_index_resolves_like_a_scan_and_reads_only_its_parts(tmp_path, monkeypatch):
    x = clustered_vectors(2000, 16, clusters=8, seed=3)
    root = str(tmp_path)
    write_embeddings(root, MODEL, x[:1500], 500)
    meta = ModelOutput(root, MODEL).metadata("00002")  # one key held twice (LAION has such)
    t = pq.read_table(meta)
    keys = t["key"].to_pylist()
    keys[7] = "k00000_3"
    pq.write_table(t.set_column(0, "key", pa.array(keys)), meta)
    cfg = IndexConfig(root=root, model=MODEL, index_key="IVF8,Flat", key_partition_rows=300,
                      rows_per_slice=500, eval_queries=20)
    build(cfg, LocalExecutor())
    handle = open_index(root, MODEL)
    assert handle.manifest["key_parts"] == 5 and len(handle.manifest["key_files"]) == 5
    truth = scan_id_maps(handle)
    assert truth["k00000_3"] == 3 and len(truth) == 1499
    asked = ["k00000_3", "k00001_10", "k00002_499", "missing", "k00002_7"]
    opened: list[str] = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda path, *a, **k: (opened.append(str(path)), real(path, *a, **k))[1])
    got = handle.key_to_id(asked)
    assert got == {k: truth[k] for k in asked if k in truth}
    assert opened and all("/keys/part_" in p for p in opened)  # never an id map
    assert len(opened) == len(set(key_partition(asked, 5).tolist())) < 5  # only the keys' parts
    monkeypatch.setattr(pq, "read_table", real)
    assert handle.key_to_id(list(truth)) == truth

    # a new generation (new embedding shard) holds the new keys and keeps the old ones
    write_embeddings(root, MODEL, x[1500:], 500, first_shard=3)
    build(cfg, LocalExecutor())
    handle = open_index(root, MODEL)
    assert handle.manifest["generation"] == 1 and len(handle.manifest["key_files"]) == 5
    truth = scan_id_maps(handle)
    assert handle.key_to_id(list(truth)) == truth and handle.key_to_id(["k00003_0"]) == {"k00003_0": 1500}
    files = sorted(p.name for p in (tmp_path / "indexes" / MODEL / "keys").iterdir())
    assert files == sorted(f.rsplit("/", 1)[-1] for f in handle.manifest["key_files"])  # old parts gone

    part = tmp_path / "indexes" / MODEL / handle.manifest["key_files"][0]
    part.write_bytes(part.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(IndexIntegrityError, match="sha256|keys/part_"):
        open_index(root, MODEL)


def test_id_map_lookup_reads_only_the_row_groups_of_its_ids(tmp_path, monkeypatch):
    """Lookups give the id map's rows in the order asked (nulls for -1), decode only the
    row groups holding the ids, keep at most cache_bytes of them, read a pre-row-group id
    map (one group per slice) the same way, and refuse an id map out of id order."""
    import pickle

    from diffrep.index import build as work
    from diffrep.search.idmap import IdMapReader

    monkeypatch.setattr(work, "IDMAP_ROW_GROUP", 16)
    x = clustered_vectors(1200, 16, clusters=8, seed=4)
    write_embeddings(str(tmp_path), MODEL, x, 100)
    build(IndexConfig(root=str(tmp_path), model=MODEL, index_key="IVF4,Flat", rows_per_slice=100,
                      eval_queries=10), LocalExecutor())
    handle = open_index(str(tmp_path), MODEL)
    truth = pa.concat_tables([pq.read_table(handle.layout.path(handle.layout.idmap_name(s.slice_id)))
                              for s in handle.slices])
    assert pq.ParquetFile(handle.layout.path(handle.layout.idmap_name(0))).metadata.num_row_groups == 7

    ids = np.random.default_rng(0).permutation(1200)[:300]
    ids[::11] = -1
    rows = handle.lookup(ids)
    for name in ("id", "key", "url", "caption", "shard", "row"):
        want = truth[name].to_pylist()
        assert rows[name].to_pylist() == [want[i] if i >= 0 else None for i in ids], name
    assert handle.lookup(ids, columns=["key"]).column_names == ["key"]
    assert handle.lookup(np.array([-1, -1]), columns=["key"])["key"].to_pylist() == [None, None]

    reader = IdMapReader(handle.layout, handle.slices)
    reader.lookup(np.array([5, 7, 1000, 1001, 1015]))  # slice 0 group 0, slice 10 group 0
    assert reader.groups_read == 2
    reader.lookup(np.array([6, 1014]))  # cached
    assert reader.groups_read == 2
    with pytest.raises(IndexError):
        reader.lookup(np.array([1200]))
    small = IdMapReader(handle.layout, handle.slices, cache_bytes=4096)
    assert small.lookup(np.arange(1200))["key"].to_pylist() == truth["key"].to_pylist()
    assert small.cached_bytes <= 4096 and len(small._groups) < 75
    restored = pickle.loads(pickle.dumps(handle))  # open files and cache are not sent
    assert restored.lookup(ids[:5])["key"].to_pylist() == rows["key"].to_pylist()[:5]

    path = handle.layout.path(handle.layout.idmap_name(3))  # as built before row groups
    pq.write_table(pq.read_table(path), path)
    legacy = open_index(str(tmp_path), MODEL, verify_files=False)
    assert legacy.lookup(np.arange(290, 410))["key"].to_pylist() == truth["key"].to_pylist()[290:410]
    assert legacy.idmap.groups_read == 2 + 1 + 1  # slice 2: groups 5, 6; slice 3: whole; slice 4: group 0
    pq.write_table(pq.read_table(path).take(pa.array(np.arange(99, -1, -1))), path)
    with pytest.raises(IndexIntegrityError, match="not in id order"):
        open_index(str(tmp_path), MODEL, verify_files=False).lookup(np.array([301]))


def test_results_are_named_in_blocks_and_appear_only_whole(tmp_path):
    """ResultsWriter names up to name_rows rows by one lookup, more in one DuckDB join
    with the id map (spilled, then sorted back): the same rows either way; a failure while
    naming (an id in no id map) leaves no file and no spill, and is raised."""
    from diffrep.search.results import ResultsWriter, hits_table, results_schema
    from diffrep.search.searcher import Hits

    x = clustered_vectors(300, 16, clusters=4, seed=6)
    write_embeddings(str(tmp_path), MODEL, x, 100)
    build(IndexConfig(root=str(tmp_path), model=MODEL, index_key="IVF4,Flat", rows_per_slice=100,
                      eval_queries=10), LocalExecutor())
    handle = open_index(str(tmp_path), MODEL)
    rng = np.random.default_rng(1)
    batches = [Hits(ids=rng.integers(-1, 300, (5, 3)), sims=rng.random((5, 3)).astype(np.float32))
               for _ in range(4)]
    tables = {}
    for name_rows in (1, 7, 10_000):
        url = str(tmp_path / f"r{name_rows}.parquet")
        with ResultsWriter(url, results_schema(False), handle, name_rows) as writer:
            for b, hits in enumerate(batches):
                writer.write(hits_table([f"q{b}_{i}" for i in range(5)], hits))
        tables[name_rows] = pq.read_table(url)
    assert tables[1].equals(tables[7]) and tables[1].equals(tables[10_000])
    ids = np.concatenate([h.ids.ravel() for h in batches])
    assert tables[1]["id"].to_pylist() == ids[ids >= 0].tolist()
    truth = handle.lookup(ids[ids >= 0])
    assert tables[7]["key"].equals(truth["key"]) and tables[7]["caption"].equals(truth["caption"])
    assert pq.ParquetFile(tmp_path / "r10000.parquet").metadata.num_row_groups == 1

    assert writer.times.as_dict().keys() == {"naming", "writing"}

    for name_rows, error in ((100, IndexError), (1, IndexIntegrityError)):
        url = str(tmp_path / "failed.parquet")
        with pytest.raises(error), ResultsWriter(url, results_schema(False), handle, name_rows) as writer:
            for _ in range(3):
                writer.write(hits_table(["q"], Hits(ids=np.array([[5, 300]]), sims=np.ones((1, 2), np.float32))))
        assert not any(p.name.startswith("failed") for p in tmp_path.iterdir())  # nor its spill
    assert "spilling" in writer.times.as_dict()
    stale = tmp_path / "r1.parquet.naming.tmp-killed"  # a killed run's spill of r1.parquet
    (stale / "x").mkdir(parents=True)
    other = tmp_path / "r7.parquet.naming.tmp-running"
    other.mkdir()
    ResultsWriter(str(tmp_path / "r1.parquet"), results_schema(False), handle, 1)
    assert not stale.exists() and other.exists()


def test_kmeans_on_gpus_when_faiss_sees_them_else_cpu(tmp_path, monkeypatch):
    """The CPU path is real; the GPU path is checked for its wiring (the clustering index
    handed to faiss's GPU spreader), with faiss reporting a GPU and the spreader stubbed."""
    import faiss

    from diffrep.index import build as work

    x = clustered_vectors(1200, 16, clusters=8, seed=5)
    write_embeddings(str(tmp_path / "cpu"), MODEL, x, 600)
    build(IndexConfig(root=str(tmp_path / "cpu"), model=MODEL, index_key="IVF8,PQ4x8np", exact_below=0,
                      eval_queries=10), LocalExecutor())
    assert open_index(str(tmp_path / "cpu"), MODEL).infos["training_device"] == "cpu"

    spread: list = []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: spread.append(index) or index)
    write_embeddings(str(tmp_path / "gpu"), MODEL, x, 600)
    build(IndexConfig(root=str(tmp_path / "gpu"), model=MODEL, index_key="IVF8_HNSW32,PQ4x8np",
                      exact_below=0, eval_queries=10), LocalExecutor())
    handle = open_index(str(tmp_path / "gpu"), MODEL)
    assert handle.infos["training_device"] == "gpu:2"
    assert len(spread) == 1 and isinstance(spread[0], faiss.IndexFlatIP) and spread[0].d == 16
    assert spread[0].ntotal == 8  # k-means ran on it: it holds the 8 centroids
    assert work.training_device() == "gpu:2"


def test_one_id_map_reader_serves_many_threads(tmp_path, monkeypatch):
    """diffrep serve names hits from several request threads through one reader: with a
    cache small enough to evict on almost every lookup, 8 threads get exactly the rows a
    plain read gives."""
    import threading

    from diffrep.index import build as work
    from diffrep.search.idmap import IdMapReader

    monkeypatch.setattr(work, "IDMAP_ROW_GROUP", 16)
    x = clustered_vectors(1200, 16, clusters=8, seed=5)
    write_embeddings(str(tmp_path), MODEL, x, 100)
    build(IndexConfig(root=str(tmp_path), model=MODEL, index_key="IVF4,Flat", rows_per_slice=100,
                      eval_queries=10), LocalExecutor())
    handle = open_index(str(tmp_path), MODEL)
    keys = pa.concat_tables([pq.read_table(handle.layout.path(handle.layout.idmap_name(s.slice_id)))
                             for s in handle.slices])["key"].to_pylist()
    reader = IdMapReader(handle.layout, handle.slices, cache_bytes=2_000)
    problems: list[str] = []

    def work_thread(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(150):
                ids = rng.integers(0, 1200, 7)
                got = reader.lookup(ids, columns=["key"])["key"].to_pylist()
                if got != [keys[i] for i in ids]:
                    problems.append(f"wrong rows for {ids.tolist()}")
        except Exception as exc:  # noqa: BLE001 - a race shows as any error; collected
            problems.append(repr(exc))

    threads = [threading.Thread(target=work_thread, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems, problems[:3]
