"""Index benchmarks (figures printed and written to JSON; not a test).

1. vs_autofaiss: for n x dim normalised vectors (clustered, and uniform on the sphere) at
   one memory budget: our build (autofaiss's choice, cheaper training, recall-tuned nprobe)
   against autofaiss's own `build_index` defaults: build seconds, recall@10 against exact
   IndexFlatIP on held-out queries, ms/query; exact search time for the same queries.
2. fanout: queries/s over K shard actors (Ray) vs one shard, same vectors.
3. scaling: build seconds and peak RSS of the build process from 100k vectors up, each
   size in its own process (budget scaled with n).

Run: python -m benchmarks.index --out bench-results/index.json [--autofaiss] [--sizes ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import faiss
import numpy as np

from benchmarks.common import peak_rss_mb, write_results
from diffrep.executor import LocalExecutor
from diffrep.index.builder import build
from diffrep.index.config import IndexConfig
from diffrep.search import RayShards, Searcher, open_index
from diffrep.synthetic import clustered_vectors, write_embeddings

MODEL = "sscd_onnx"
SCALING_KEY = "IVF2048_HNSW32,PQ64x8np"


def make_data(kind: str, n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(corpus, queries): 1000 queries from the same distribution, not in the corpus."""
    if kind == "clustered":
        x = clustered_vectors(n + 1000, dim, clusters=max(n // 100, 10), seed=seed)
    else:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n + 1000, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


def recall10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def ours(root: str, x: np.ndarray, budget: str, shards: int) -> dict:
    write_embeddings(root, MODEL, x, 10000, dtype="float16")
    t0 = time.perf_counter()
    infos = build(IndexConfig(root=root, model=MODEL, max_index_memory_usage=budget,
                              current_memory_available="8GB", num_shards=shards), LocalExecutor())
    return {"build_s": time.perf_counter() - t0, "infos": infos}


def run_vs_autofaiss(n: int, dim: int, budget: str, with_autofaiss: bool,
                     autofaiss_kinds: tuple[str, ...] = ("clustered",)) -> dict:
    from autofaiss import build_index

    out = {}
    for kind in ("clustered", "uniform"):
        x, q = make_data(kind, n, dim)
        xf = x.astype(np.float16).astype(np.float32)  # what the index sees (float16 storage)
        flat = faiss.IndexFlatIP(dim)
        flat.add(xf)
        t0 = time.perf_counter()
        _, truth = flat.search(q, 10)
        exact_s = time.perf_counter() - t0
        row = {"n": n, "dim": dim, "budget": budget, "exact_1000_queries_s": exact_s}
        with tempfile.TemporaryDirectory() as root:
            r = ours(root, x, budget, shards=1)
            handle = open_index(root, MODEL)
            searcher = Searcher(handle)
            t0 = time.perf_counter()
            hits = searcher.search(q, 10)
            row["ours"] = {"build_s": r["build_s"], "index_key": r["infos"]["index_key"],
                           "autofaiss_key": r["infos"]["autofaiss_key"],
                           "nprobe": r["infos"]["nprobe"], "size_bytes": r["infos"]["size_bytes"],
                           "build_seconds": r["infos"]["build_seconds"],
                           "recall_at_10": recall10(hits.ids, truth),
                           "queries_1000_s": time.perf_counter() - t0}
            t0 = time.perf_counter()
            rr = searcher.search(q, 10, rerank="exact", candidates=100)
            row["ours"]["recall_at_10_rerank100"] = recall10(rr.ids, truth)
            row["ours"]["queries_1000_rerank_s"] = time.perf_counter() - t0
        if with_autofaiss and kind in autofaiss_kinds:
            t0 = time.perf_counter()
            index, infos = build_index(xf, save_on_disk=False, max_index_memory_usage=budget,
                                       current_memory_available="8G", metric_type="ip", verbose=30)
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            _, found = index.search(q, 10)
            row["autofaiss"] = {"build_s": build_s, "index_key": infos.get("index_key"),
                                "index_param": infos.get("index_param"),
                                "recall_at_10": recall10(found, truth),
                                "queries_1000_s": time.perf_counter() - t0}
            row["build_time_ratio_autofaiss_over_ours"] = build_s / row["ours"]["build_s"]
        out[kind] = row
        print(json.dumps({kind: row}, indent=1), flush=True)
    return out


def run_fanout(n: int, dim: int, shards: int) -> dict:
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    x, q = make_data("clustered", n, dim, seed=1)
    q = np.tile(q, (4, 1))
    out = {}
    for k in (1, shards):
        with tempfile.TemporaryDirectory() as root:
            write_embeddings(root, MODEL, x, 10000, dtype="float16")
            build(IndexConfig(root=root, model=MODEL, max_index_memory_usage="1GB", num_shards=k,
                              index_key="IVF1024,PQ64x8np", eval_queries=200), LocalExecutor())
            handle = open_index(root, MODEL)
            backend = RayShards(handle, num_cpus=0.25, threads=1)
            searcher = Searcher(handle, backend, nprobe=16)
            searcher.search(q[:10], 10)
            t0 = time.perf_counter()
            for block in np.array_split(q, 8):
                searcher.search(block, 10)
            out[f"shards_{k}_queries_per_s"] = len(q) / (time.perf_counter() - t0)
            backend.close()
    ray.shutdown()
    out["speedup"] = out[f"shards_{shards}_queries_per_s"] / out["shards_1_queries_per_s"]
    print(json.dumps({"fanout": out}, indent=1), flush=True)
    return out


def write_clustered_chunks(root: str, n: int, dim: int, chunk: int = 50000, seed: int = 2) -> None:
    """n clustered vectors written chunk by chunk (the writer never holds more than one
    chunk, so the build's peak memory is what the process's peak RSS shows)."""
    rng = np.random.default_rng(seed)
    clusters = max(n // 100, 10)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for i, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, clusters, m)] + 1.4 * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        write_embeddings(root, MODEL, x, chunk, first_shard=i, dtype="float16")


def scaling_child(n: int, dim: int) -> None:
    # One index family at every size, so that time and memory vary with n alone: the
    # DESIGN.md scale plan's 64-byte PQ codes; no OPQ, whose training (300 s at 100k on 2
    # cores) is a fixed cost that would hide how the rest grows.
    budget = f"{(n * 72 + 2 * 8 * 2**20) / 2**20:.0f}MB"
    with tempfile.TemporaryDirectory() as root:
        write_clustered_chunks(root, n, dim)
        base = peak_rss_mb() * 1024
        t0 = time.perf_counter()
        infos = build(IndexConfig(root=root, model=MODEL, max_index_memory_usage=budget,
                                  index_key=SCALING_KEY, current_memory_available="8GB",
                                  num_shards=2), LocalExecutor())
        print(json.dumps({"n": n, "dim": dim, "budget": budget, "build_s": time.perf_counter() - t0,
                          "index_key": infos["index_key"], "size_bytes": infos["size_bytes"],
                          "train_size": infos["train_size"],
                          "recall_at_10": infos["recall_at_10"], "nprobe": infos["nprobe"],
                          "peak_rss_mb_before_build": base / 1024,
                          "peak_rss_mb": peak_rss_mb(),
                          "build_seconds": infos["build_seconds"]}))


def run_scaling(sizes: list[int], dim: int) -> list[dict]:
    rows = []
    for n in sizes:
        res = subprocess.run([sys.executable, "-m", "benchmarks.index", "--scaling-child", str(n),
                              "--dim", str(dim)], capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps({"scaling": rows[-1]}), flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench-results/index.json")
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--budget", default="100MB")
    p.add_argument("--autofaiss", action="store_true",
                   help="also run autofaiss build_index defaults (about 20 min at 200k x 512 on 2 cores)")
    p.add_argument("--autofaiss-kinds", default="clustered",
                   help="data kinds autofaiss is run on (clustered,uniform): 20 min each")
    p.add_argument("--sizes", default="100000,200000,500000,1000000,2000000")
    p.add_argument("--skip", default="", help="comma list of parts to skip: compare,fanout,scaling")
    p.add_argument("--scaling-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.scaling_child:
        scaling_child(args.scaling_child, args.dim)
        return 0
    skip = set(filter(None, args.skip.split(",")))
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "faiss": faiss.__version__}}
    if "compare" not in skip:
        results["vs_autofaiss"] = run_vs_autofaiss(args.n, args.dim, args.budget, args.autofaiss,
                                                   tuple(args.autofaiss_kinds.split(",")))
    if "fanout" not in skip:
        results["fanout"] = run_fanout(args.n, args.dim, shards=4)
    if "scaling" not in skip:
        results["scaling"] = run_scaling([int(s) for s in args.sizes.split(",")], args.dim)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
