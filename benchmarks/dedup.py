"""Dedup benchmarks (figures printed and written to JSON; not a test).

For n synthetic vectors with planted duplicate groups (5% of images, groups of 2-6), each
size in its own process: index build, then the dedup steps on one process (LocalExecutor):
pairs/s of the self-search, component merge time, assembly time, and the process's peak
RSS. Slices are `rows_per_slice` vectors at every size, so a slice task's memory does not
grow with n; what does grow is the assembly's (the duplicated images only).

Run: python -m benchmarks.dedup --out bench-results/dedup.json [--sizes 250000,500000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import peak_rss_mb, write_results
from diffrep.dedup.config import DedupConfig
from diffrep.dedup.run import run_dedup
from diffrep.executor import LocalExecutor
from diffrep.index.builder import build
from diffrep.index.config import IndexConfig
from diffrep.search import open_index
from diffrep.synthetic import write_embeddings

MODEL = "sscd_onnx"


def write_planted(root: str, n: int, dim: int, chunk: int = 50000, seed: int = 0) -> int:
    """Clustered vectors, 5% of them in planted near-copy groups (within a chunk).
    Returns the number of planted duplicated images."""
    rng = np.random.default_rng(seed)
    clusters = max(n // 100, 10)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    planted = 0
    for i, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, clusters, m)] + 1.4 * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        rows = rng.permutation(m)[: m // 20]
        pos = 0
        while pos + 6 <= len(rows):
            size = int(rng.integers(2, 7))
            group = rows[pos:pos + size]
            x[group[1:]] = x[group[0]] + 0.005 * rng.standard_normal((size - 1, dim)).astype(np.float32)
            planted += size
            pos += size
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        write_embeddings(root, MODEL, x, chunk, first_shard=i, dtype="float16")
    return planted


def child(n: int, dim: int, rows_per_slice: int, nprobe: int | None) -> None:
    """Write and index n vectors, then dedup them in a fresh process (its peak RSS is the
    dedup's own, not the index build's)."""
    with tempfile.TemporaryDirectory() as root:
        planted = write_planted(root, n, dim)
        t0 = time.perf_counter()
        build(IndexConfig(root=root, model=MODEL, index_key="IVF1024,PQ32x8np", num_shards=2,
                          rows_per_slice=rows_per_slice, eval_queries=200,
                          max_index_memory_usage="8GB"), LocalExecutor())
        build_s = time.perf_counter() - t0
        res = subprocess.run([sys.executable, "-m", "benchmarks.dedup", "--dedup-root", root,
                              "--nprobe", str(nprobe)], capture_output=True, text=True, check=True)
        out = json.loads(res.stdout.strip().splitlines()[-1])
        print(json.dumps({"n": n, "dim": dim, "rows_per_slice": rows_per_slice, "index_build_s": build_s,
                          "planted_duplicated_images": planted, **out}))


def dedup_only(root: str, nprobe: int | None) -> None:
    handle = open_index(root, MODEL)
    rss_before = peak_rss_mb() * 1024
    t0 = time.perf_counter()
    summary = run_dedup(DedupConfig(root=root, model=MODEL, threshold=0.95, report_groups=3,
                                    nprobe=nprobe), handle, LocalExecutor(), None)
    print(json.dumps({
        "nprobe": nprobe or handle.infos["nprobe"], "found_duplicated_images": summary["duplicated_images"],
        "pairs": summary["pairs"], "groups": summary["groups"], "dedup_s": time.perf_counter() - t0,
        "steps_s": summary["seconds"], "pairs_per_s": summary["pairs"] / summary["seconds"]["search"],
        "queries_per_s": handle.ntotal / summary["seconds"]["search"],
        "rss_mb_after_imports_and_open": rss_before / 1024,
        "peak_rss_mb": peak_rss_mb()}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench-results/dedup.json")
    p.add_argument("--sizes", default="250000,500000,1000000")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--rows-per-slice", type=int, default=100000)
    p.add_argument("--nprobe", type=int, default=8, help="IVF lists probed (dedup.nprobe)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dedup-root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.dedup_root:
        dedup_only(args.dedup_root, args.nprobe)
        return 0
    if args.child:
        child(args.child, args.dim, args.rows_per_slice, args.nprobe)
        return 0
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        res = subprocess.run([sys.executable, "-m", "benchmarks.dedup", "--child", str(n), "--dim",
                              str(args.dim), "--rows-per-slice", str(args.rows_per_slice), "--nprobe", str(args.nprobe)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    write_results(args.out, {"machine": {"cpus": os.cpu_count()}, "sizes": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
