"""Dedup with diffrep's jobs against what a user would otherwise write: one faiss process
(a benchmark, not a test; figures printed and written to JSON).

For each N, on the rehearsal's synthetic LAION-shaped corpus (benchmarks/rehearsal.py:
planted near-duplicate groups, 64 dims):

- diffrep: `jobs.build_index` then `jobs.dedup` as a user runs them, each its own driver,
  on a local Ray cluster of several raylets; index `IVF<nlist>_HNSW32,Flat`, one shard
  per 1M vectors, list-routed search;
- one process: every vector loaded into memory, one faiss `IVF<nlist>_HNSW32,Flat` with
  the same nlist, training sample, nprobe and efSearch, `range_search` at the same
  threshold, scipy's connected components.

Both walls, their ratio, both peak RSS (diffrep: the largest of any of its processes,
driver or Ray worker, and their sum; one process: its own) and both planted-pair recalls.

Run: python -m benchmarks.dedup_vs_faiss --sizes 1000000,3000000 --out benchmarks/results/dedup-vs-faiss.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import WorkerRss
from benchmarks.rehearsal import MODEL, pair_quality, run_sizes, run_stage, write_corpus
from diffrep import storage
from diffrep.index.build import search_params

THRESHOLD = 0.95


def one_process(root: str, nlist: int, nprobe: int, train_size: int) -> dict:
    """The plain way, in this process: load, train, add, range_search, components."""
    import faiss
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    t0 = time.perf_counter()
    emb = os.path.join(root, "embeddings", MODEL, "img_emb")
    x = np.concatenate([np.load(os.path.join(emb, f)).astype(np.float32) for f in sorted(os.listdir(emb))])
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    key = f"IVF{nlist}_HNSW32,Flat"
    index = faiss.index_factory(x.shape[1], key, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(1)
    index.train(x[np.sort(rng.choice(len(x), min(train_size, len(x)), replace=False))])
    index.add(x)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    faiss.ParameterSpace().set_index_parameters(index, search_params(key, nprobe))
    lims, _, ids = index.range_search(x, THRESHOLD)
    query = np.repeat(np.arange(len(x)), np.diff(lims).astype(np.int64))
    lo, hi = np.minimum(query, ids), np.maximum(query, ids)
    distinct = lo != hi  # each undirected pair once, whichever side found it
    pairs = np.unique(lo[distinct] * len(x) + hi[distinct])
    a, b = pairs // len(x), pairs % len(x)
    search_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = sp.coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(len(x), len(x))).tocsr()
    n_comp, _ = connected_components(graph, directed=False)
    components_s = time.perf_counter() - t0
    group = np.load(os.path.join(root, "truth.npy"))
    true = int(((group[a] == group[b]) & (group[a] >= 0)).sum())
    sizes = np.bincount(group[group >= 0])
    planted = int((sizes * (sizes - 1) // 2).sum())
    return {"load_s": round(load_s, 2), "build_s": round(build_s, 2), "range_search_s": round(search_s, 2),
            "components_s": round(components_s, 2), "found_pairs": int(len(a)),
            "pair_recall": true / max(planted, 1), "pair_precision": true / max(len(a), 1),
            "components": int(n_comp)}


def run_one_process(root: str, nlist: int, nprobe: int, train_size: int) -> tuple[dict, float, float]:
    """one_process in a child process: (its figures, wall s, peak RSS MB)."""
    with WorkerRss() as monitor:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.dedup_vs_faiss", "--one-process", root,
                                 "--nlist", str(nlist), "--nprobe", str(nprobe), "--train_size", str(train_size)],
                                stdout=subprocess.PIPE, text=True)
        monitor.driver_pid = proc.pid
        out, _ = proc.communicate()
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"one process failed (rc {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1]), wall, monitor.driver_peak / 2**20


def compare(n: int, args: argparse.Namespace, address: str, cores: int) -> dict:
    with tempfile.TemporaryDirectory(dir=args.work_dir) as root:
        truth = write_corpus(root, n, args.dim, args.shard_rows)
        nlist = 2 ** max(6, round(math.log2(n / args.list_size)))
        train_size = 39 * nlist
        shards = max(1, math.ceil(n / args.vectors_per_shard))
        logs = os.path.join(args.log_dir, str(n))
        os.makedirs(logs, exist_ok=True)
        common = ["--root", root, "--model", MODEL, "--ray_address", address]
        stages = [run_stage("build_index", [
            "-m", "jobs.build_index", *common, "--index_key", f"IVF{nlist}_HNSW32,Flat",
            "--num_shards", str(shards), "--rows_per_slice", str(args.rows_per_slice),
            "--train_points_per_centroid", "39", "--eval_queries", str(args.eval_queries),
            "--cpus_per_worker", "1", "--max_index_memory_usage", "64GB",
            "--current_memory_available", "8GB"], n, cores, os.path.join(root, "indexes"), logs)]
        stages.append(run_stage("dedup", [
            "-m", "jobs.dedup", *common, "--threshold", str(THRESHOLD), "--nprobe", str(args.nprobe),
            "--query_batch", "8192", "--partition_ids", "1000000", "--shard_actors", "always",
            "--shard_actor_cpus", str(round(0.5 / shards, 3)),
            "--shard_actor_threads", str(max(1, args.nodes // shards)), "--report_groups", "4",
            "--report_members", "4"], n, cores, os.path.join(root, "dedup"), logs))
        quality = pair_quality(root)
        infos = storage.read_json(os.path.join(root, "indexes", MODEL, "index_infos.json"))
        summary = storage.read_json(os.path.join(root, "dedup", MODEL, "summary.json"))
        plain, plain_wall, plain_rss = run_one_process(root, nlist, args.nprobe, train_size)
    diffrep_wall = sum(s["wall_s"] for s in stages)
    row = {
        "n": n, "dim": args.dim, "nlist": nlist, "nprobe": args.nprobe, "threshold": THRESHOLD,
        "index_shards": shards, "planted_pairs": truth["planted_pairs"],
        "diffrep_wall_s": round(diffrep_wall, 1), "faiss_wall_s": round(plain_wall, 1),
        "wall_ratio": round(diffrep_wall / plain_wall, 2),
        "diffrep_recall": round(quality["pair_recall"], 5), "faiss_recall": round(plain["pair_recall"], 5),
        "diffrep_precision": round(quality["pair_precision"], 5),
        "faiss_precision": round(plain["pair_precision"], 5),
        "diffrep_peak_rss_mb": max(max(s["driver_peak_rss_mb"], s["largest_worker_peak_rss_mb"]) for s in stages),
        "faiss_peak_rss_mb": round(plain_rss, 1),
        "diffrep_stages": {s["stage"]: {"wall_s": s["wall_s"], "driver_peak_rss_mb": s["driver_peak_rss_mb"],
                                        "largest_worker_peak_rss_mb": s["largest_worker_peak_rss_mb"],
                                        "peak_by_task_mb": s.get("peak_by_task_mb")} for s in stages},
        "diffrep_build_seconds": infos["build_seconds"], "diffrep_dedup_seconds": summary["seconds"],
        "diffrep_routing": summary.get("routing"), "faiss_steps_s": plain,
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/dedup-vs-faiss.json")
    p.add_argument("--sizes", default="1000000,3000000")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--shard_rows", type=int, default=100_000)
    p.add_argument("--rows_per_slice", type=int, default=500_000)
    p.add_argument("--vectors_per_shard", type=int, default=1_000_000)
    p.add_argument("--list_size", type=int, default=1000)
    p.add_argument("--nprobe", type=int, default=4)
    p.add_argument("--eval_queries", type=int, default=500)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--work_dir", default=None)
    p.add_argument("--log_dir", default="bench-results/dedup-vs-faiss-logs")
    p.add_argument("--one-process", help=argparse.SUPPRESS)
    p.add_argument("--nlist", type=int, help=argparse.SUPPRESS)
    p.add_argument("--train_size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one_process:
        print(json.dumps(one_process(args.one_process, args.nlist, args.nprobe, args.train_size)))
        return 0
    results = run_sizes(args, lambda n, address, cores: compare(n, args, address, cores))
    for r in results["sizes"]:
        print(f"N={r['n']:,}: diffrep {r['diffrep_wall_s']} s ({r['diffrep_peak_rss_mb']:,.0f} MB, recall "
              f"{r['diffrep_recall']}) vs one faiss process {r['faiss_wall_s']} s ({r['faiss_peak_rss_mb']:,.0f} MB, "
              f"recall {r['faiss_recall']}): x{r['wall_ratio']}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
