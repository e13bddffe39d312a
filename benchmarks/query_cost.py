"""Where one dedup query's time goes (a benchmark, not a test): figures printed and written to JSON.

For each index root given (e.g. the rehearsal's corpora at 1M and 10M, built by
`python -m benchmarks.rehearsal ... --keep DIR`), it runs dedup's routed range search on the
same number of random corpus vectors, in this process on one thread, and times each
part per query: reading the query vectors, the coarse assignment (one quantizer search),
the shard scans (faiss range_search_preassigned on the owners' lists), reading the
candidates' stored embeddings, and their exact inner products. It also counts candidates
and hits per query. Each root is measured twice: with stored-embedding maps kept open
(diffrep.search.stored, MAX_OPEN) and with a map opened per read (MAX_OPEN = 0, as before
2026-12-03), side by side in one run.

Run: python -m benchmarks.query_cost --roots R1,R2 --out benchmarks/results/query-cost.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import faiss
import numpy as np

from benchmarks.common import write_results
from diffrep.search import LocalShards, open_index
from diffrep.search import stored as stored_module

MODEL = "sscd_onnx"
KEPT_MAPS = stored_module.MAX_OPEN
PARTS = ("query_read", "assign", "scan", "rerank_read", "rerank_dot")


def measure(root: str, queries: int, batch: int, nprobe: int, threshold: float, margin: float,
            max_open: int) -> dict:
    """Per-query microseconds of each part, over `queries` random corpus vectors."""
    stored_module.MAX_OPEN = max_open
    handle = open_index(root, MODEL, verify_files=False)
    backend = LocalShards(handle)
    router = backend.router
    if router is None:
        raise SystemExit(f"{root}: index not partitioned by list (rebuild with build_index)")
    seconds = dict.fromkeys(PARTS, 0.0)
    candidates = hits = 0
    rng = np.random.default_rng(0)
    for _ in range(0, queries, batch):
        ids = np.sort(rng.choice(handle.ntotal, batch, replace=False))
        t0 = time.perf_counter()
        q = handle.vectors(ids)
        t1 = time.perf_counter()
        jobs = router.plan(q, nprobe)
        t2 = time.perf_counter()
        found = [backend.shards[j.shard].range_search_lists(j.queries, threshold - margin, j.lists, j.coarse)
                 for j in jobs]
        t3 = time.perf_counter()
        labels = np.concatenate([f[2] for f in found])
        rows = np.concatenate([np.repeat(j.rows, np.diff(f[0]).astype(np.int64))
                               for j, f in zip(jobs, found, strict=True)])
        uniq, inv = np.unique(labels, return_inverse=True)
        vecs = handle.vectors(uniq)
        t4 = time.perf_counter()
        sims = np.einsum("nd,nd->n", q[rows], vecs[inv])
        t5 = time.perf_counter()
        for part, dt in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            seconds[part] += dt
        candidates += len(labels)
        hits += int((sims > threshold).sum())
    n = (queries // batch) * batch
    us = {p: round(s / n * 1e6, 1) for p, s in seconds.items()}
    return {"root": root, "n": handle.ntotal, "nlist": int(router.ivf.nlist), "shards": len(backend.shards),
            "max_open_maps": max_open, "us_per_query": us, "total_us_per_query": round(sum(us.values()), 1),
            "candidates_per_query": round(candidates / n, 1), "hits_per_query": round(hits / n, 1),
            "shards_per_query": router.stats.as_dict()["shards_per_query"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--roots", required=True, help="comma-separated index roots (model sscd_onnx)")
    p.add_argument("--out", default="benchmarks/results/query-cost.json")
    p.add_argument("--queries", type=int, default=40960)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--nprobe", type=int, default=4)
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--margin", type=float, default=0.1)
    p.add_argument("--kept_only", action="store_true", help="measure with maps kept open only "
                   "(not also with a map opened per read)")
    args = p.parse_args()
    faiss.omp_set_num_threads(1)
    rows = []
    for root in args.roots.split(","):
        for max_open in (KEPT_MAPS,) if args.kept_only else (KEPT_MAPS, 0):
            measure(root, args.batch, args.batch, args.nprobe, args.threshold, args.margin, max_open)  # warm
            rows.append(measure(root, args.queries, args.batch, args.nprobe, args.threshold, args.margin,
                                max_open))
            print(json.dumps(rows[-1]), flush=True)
    write_results(args.out, {"settings": vars(args), "rows": rows})
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
