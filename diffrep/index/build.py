"""The index build's work, as plain functions that run anywhere (a Ray task, a test):
train on a sample, add a slice to the trained index, collect a shard's lists, sweep
nprobe on a shard. The job (jobs/build_index.py) decides where each runs."""

from __future__ import annotations

import contextlib
import io
import time

import faiss
import numpy as np
import pyarrow as pa

from diffrep import storage
from diffrep.embed.layout import ModelOutput
from diffrep.index import lists
from diffrep.index.coarse import COARSE_NPROBE, calibrate_ef, stored_ef
from diffrep.index.keys import key_run_writer, write_keys
from diffrep.index.layout import IndexLayout
from diffrep.index.locality import renumber_lists
from diffrep.index.plan import SliceSpec
from diffrep.index.probes import STORED_PROBES, add_with_probes
from diffrep.index.vectors import exact_topk, load_npy, merge_topk, read_rows

ADD_BATCH = 65536
IDMAP_SCHEMA = pa.schema([("id", pa.int64()), ("key", pa.string()), ("url", pa.string()),
                          ("caption", pa.string()), ("shard", pa.string()), ("row", pa.int64())])
# Rows per id-map row group: a lookup decodes the groups holding its ids (search.idmap),
# so a hit costs ~1 ms of decoding, not a read of its whole slice.
IDMAP_ROW_GROUP = 8192


def serialize(index: faiss.Index) -> np.ndarray:
    return faiss.serialize_index(index)


def deserialize(data: np.ndarray) -> faiss.Index:
    return faiss.deserialize_index(np.asarray(data, np.uint8))


def write_index(url: str, index: faiss.Index) -> None:
    """Write `index` to `url` atomically, streamed to the file as faiss serializes it
    (no copy of the index in memory: a serialized copy and its bytes were two)."""
    with storage.atomic_open(url) as f:
        writer = faiss.PyCallbackIOWriter(f.write)
        try:
            faiss.write_index(index, writer)
        finally:
            del writer  # flushes its last chunk


def read_index(url: str, mmap: bool = True) -> faiss.Index:
    """Load a faiss index, memory-mapped when local. Verify it against the manifest first
    (diffrep.index.manifest.verify): faiss's reader trusts its input."""
    fs, path = storage.filesystem(url)
    if storage.is_local(fs):
        return faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0)
    with fs.open(path, "rb") as f:
        return deserialize(np.frombuffer(f.read(), np.uint8))


def gather(root: str, model: str, located: list[tuple[str, np.ndarray, np.ndarray]],
           count: int, dim: int) -> np.ndarray:
    """Vectors at located positions (see plan.locate), in position order, float32."""
    out = np.empty((count, dim), np.float32)
    for shard, rows, sel in located:
        out[sel] = read_rows(root, model, shard, rows)
    return out


def training_device() -> str:
    """Where k-means runs: "gpu:N" when faiss sees N GPUs (a faiss GPU build), else "cpu"."""
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return f"gpu:{gpus}" if gpus > 0 else "cpu"


def train_index(root: str, model: str, key: str, dim: int,
                located: list[tuple[str, np.ndarray, np.ndarray]], count: int,
                threads: int = 0, coarse_recall: float = 0.99) -> tuple[np.ndarray, dict]:
    """Train an empty inner-product index `key` on the sampled vectors; returns it
    serialized and {"training_device": where its coarse k-means ran, "coarse_quantizer":
    the HNSW quantizer's calibrated efSearch (diffrep.index.coarse) or None}. On GPUs the
    IVF's coarse k-means runs on a flat index spread over every GPU (its
    `clustering_index`, as autofaiss does); the rest (PQ, HNSW quantizer) trains on the
    CPU. The lists are then renumbered so that near centroids get near ids
    (diffrep.index.locality), and an HNSW quantizer's efSearch set to the smallest that
    returns `coarse_recall` of the sample's nearest COARSE_NPROBE centroids."""
    if threads:
        faiss.omp_set_num_threads(threads)
    sample = gather(root, model, located, count, dim)
    index = faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)
    device, coarse = "cpu", None
    if not index.is_trained:
        ivf = _ivf_of(index)
        device = training_device() if ivf is not None else "cpu"
        if device != "cpu":
            flat = faiss.IndexFlatIP(dim) if ivf.metric_type == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dim)
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(flat)
        index.train(sample)
        if ivf is not None:
            ivf.clustering_index = None  # GPU resources are not part of the saved index
            renumber_lists(index)  # near lists in one shard: a query asks fewer shards
            coarse = calibrate_ef(index, sample, COARSE_NPROBE, coarse_recall)
    return serialize(index), {"training_device": device, "coarse_quantizer": coarse}


def _ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def add_slice(layout: IndexLayout, spec: SliceSpec, trained: np.ndarray,
              eval_queries: np.ndarray, eval_k: int, threads: int = 0, key_parts: int | None = None) -> dict:
    """Add one slice's vectors (ids id_start..) to a copy of the trained index.

    Writes the slice's id map and its key run (routed to `key_parts` key index partitions,
    when given), both streamed file by file, then the part index, its vectors' probed lists
    (diffrep.index.probes) and the exact top-k of the eval queries within the slice, then
    the completion marker last. Memory: the part index, the probes ((rows, 8) int32) and
    the key run's (key, id) rows; the id map's other columns one embedding file at a time.
    Returns the marker's content.
    """
    if threads:
        faiss.omp_set_num_threads(threads)
    t0 = time.monotonic()
    out = ModelOutput(layout.root, layout.model)
    index = deserialize(trained)
    best_s = np.full((len(eval_queries), eval_k), -np.inf, np.float32)
    best_i = np.full((len(eval_queries), eval_k), -1, np.int64)
    ivf = _ivf_of(index)
    probes = None if ivf is None else np.empty((sum(spec.rows), min(STORED_PROBES, ivf.nlist)), np.int32)
    next_id = spec.id_start
    with contextlib.ExitStack() as files:
        idmap = files.enter_context(storage.parquet_writer(layout.idmap(spec.slice_id), IDMAP_SCHEMA))
        key_run = files.enter_context(key_run_writer(layout, spec.slice_id)) if key_parts else None
        for shard, rows in zip(spec.files, spec.rows, strict=True):
            vectors = load_npy(out.embeddings(shard))
            if len(vectors) != rows:
                raise RuntimeError(f"{out.embeddings(shard)} has {len(vectors)} rows, the plan says "
                                   f"{rows}: embeddings changed during the build; rerun with --overwrite true")
            meta = storage.read_table(out.metadata(shard), columns=["key", "url", "caption", "row"])
            if meta.num_rows != rows:
                raise RuntimeError(f"{out.metadata(shard)} has {meta.num_rows} rows, {out.embeddings(shard)} "
                                   f"has {rows}")
            for start in range(0, rows, ADD_BATCH):
                block = np.ascontiguousarray(vectors[start:start + ADD_BATCH], np.float32)
                ids = np.arange(next_id + start, next_id + start + len(block), dtype=np.int64)
                if probes is None:
                    index.add_with_ids(block, ids)
                else:  # one quantizer search: the list, and the probes the dedup job reads back
                    at = next_id - spec.id_start + start
                    probes[at:at + len(block)] = add_with_probes(index, block, ids)
                if len(eval_queries):
                    best_s, best_i = merge_topk(
                        [(best_s, best_i), exact_topk(eval_queries, block, ids, eval_k)], eval_k)
            file_ids = np.arange(next_id, next_id + rows, dtype=np.int64)
            idmap.write_table(pa.table({
                "id": pa.array(file_ids), "key": meta["key"], "url": meta["url"], "caption": meta["caption"],
                "shard": pa.array([shard] * rows, pa.string()), "row": meta["row"].cast(pa.int64()),
            }, schema=IDMAP_SCHEMA), row_group_size=IDMAP_ROW_GROUP)
            if key_run is not None:
                write_keys(key_run, meta["key"], file_ids, key_parts)
            next_id += rows
    vectors_added = int(index.ntotal)
    write_index(layout.part(spec.slice_id), index)
    lists.write_sizes(layout.part_sizes(spec.slice_id), lists.list_sizes(index))
    del index, ivf  # the part is on disk: what follows does not need it in memory
    if probes is not None and len(probes):
        storage.write_npy(layout.path(layout.probes_name(spec.slice_id)), probes)
    buf = io.BytesIO()
    np.savez(buf, sims=best_s, ids=best_i)
    storage.write_bytes(layout.path(layout.eval_name(spec.slice_id)), buf.getvalue())
    marker = {"slice": spec.slice_id, "vectors": vectors_added,
              "seconds": round(time.monotonic() - t0, 3)}
    storage.write_json(layout.part_done(spec.slice_id), marker)
    return marker


def merge_lists(layout: IndexLayout, out_name: str, base_name: str | None, slice_ids: list[int],
                take_range: tuple[int, int] | None, shard: int, trained: np.ndarray,
                list_start: np.ndarray | None = None, owner: np.ndarray | None = None,
                threads: int = 0) -> dict:
    """Build one list-partitioned shard (diffrep.index.lists), written atomically as
    `out_name`: the shard's entries collected from every slice's part index (memory-mapped).

    A first build (`take_range` = (start, end), `list_start`: global start of every list
    in the lists' concatenation) takes the entries [start, end) of that concatenation. An
    incremental add (`base_name`: the shard's current file, `owner`: the shard of each
    list's new entries) appends the new slices' entries of the lists it owns. Memory: the
    one shard it writes, never more."""
    if threads:
        faiss.omp_set_num_threads(threads)
    t0 = time.monotonic()
    merged = read_index(layout.path(base_name), mmap=False) if base_name else deserialize(trained)
    ivf = faiss.extract_index_ivf(merged)
    pos = None if list_start is None else np.asarray(list_start, np.int64).copy()
    moved = 0
    for slice_id in slice_ids:
        sizes = lists.read_sizes(layout.part_sizes(slice_id))
        if take_range is not None:
            start, end = take_range
            skip = np.clip(start - pos, 0, sizes)
            take = np.clip(end - pos, 0, sizes) - skip
            pos += sizes
        else:
            take, skip = np.where(owner == shard, sizes, 0), np.zeros_like(sizes)
        if take.any():
            part = read_index(layout.part(slice_id), mmap=True)
            moved += lists.collect(ivf, faiss.extract_index_ivf(part), take, skip)
            del part
    ivf.ntotal += moved
    merged.ntotal = ivf.ntotal
    write_index(layout.path(out_name), merged)
    return {"file": out_name, "ntotal": int(merged.ntotal), "seconds": round(time.monotonic() - t0, 3)}


def search_params(key: str, nprobe: int, ef: int | None = None) -> str:
    """faiss ParameterSpace string for `nprobe` and the HNSW coarse quantizer's efSearch:
    at least `ef`, the index's calibrated one (diffrep.index.coarse.stored_ef)."""
    if "HNSW" in key:
        return f"nprobe={nprobe},efSearch={max(2 * nprobe, 16, ef or 0)}"
    return f"nprobe={nprobe}"


def sweep_shard(url: str, key: str, queries: np.ndarray, k: int, nprobes: list[int],
                threads: int = 0) -> list[tuple[int, np.ndarray, np.ndarray, float]]:
    """Top-k of `queries` in one shard for each nprobe: [(nprobe, sims, ids, seconds)]."""
    if threads:
        faiss.omp_set_num_threads(threads)
    index = read_index(url)
    ef = stored_ef(index)
    out = []
    for nprobe in nprobes:
        faiss.ParameterSpace().set_index_parameters(index, search_params(key, nprobe, ef))
        t0 = time.perf_counter()
        sims, ids = index.search(np.ascontiguousarray(queries, np.float32), k)
        out.append((nprobe, sims, ids, time.perf_counter() - t0))
    return out
