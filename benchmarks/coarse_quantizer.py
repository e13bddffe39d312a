"""The coarse assignment of an IVF index with an HNSW quantizer: recall of the nprobe
lists it returns against the exact nearest centroids, and its cost, at several efSearch.

A query finds a neighbour only in the lists it probes, so a list the quantizer misses is
a loss no re-rank recovers. HNSW's recall at a fixed efSearch falls as the centroids grow
in number, and so does the rehearsal's pair recall at a fixed nprobe (0.9994 at 1,024
lists, 0.9796 at 32,768). This measures it on a built (or only trained) index: queries
are vectors sampled from the corpus's embeddings, the truth is a flat search over the
quantizer's own centroids. One faiss thread, times in microseconds per query.

  python -m benchmarks.coarse_quantizer --root R --model M --nprobe 4 --out out.json
"""

from __future__ import annotations

import argparse
import glob
import os
import time

import faiss
import numpy as np

from benchmarks.common import write_results
from diffrep import storage
from diffrep.embed.layout import ModelOutput
from diffrep.index.build import deserialize
from diffrep.index.coarse import hnsw_quantizer, nearest_centroids, probe_recall
from diffrep.index.layout import IndexLayout
from diffrep.index.vectors import load_npy


def sample_queries(root: str, model: str, n: int, seed: int = 0) -> np.ndarray:
    """`n` embeddings drawn at random from the corpus's embedding files (memory-mapped)."""
    files = sorted(glob.glob(os.path.join(ModelOutput(root, model).base, "img_emb", "*.npy")))
    rng = np.random.default_rng(seed)
    picks = np.bincount(rng.integers(0, len(files), n), minlength=len(files))
    out = []
    for f, k in zip(files, picks, strict=True):
        if k:
            v = load_npy(f)
            out.append(np.asarray(v[np.sort(rng.choice(len(v), min(k, len(v)), replace=False))], np.float32))
    return np.ascontiguousarray(np.concatenate(out))


def coarse_recall(quantizer: faiss.IndexHNSW, queries: np.ndarray, nprobe: int, efs: list[int]) -> list[dict]:
    """For each efSearch: recall of the nprobe lists (diffrep.index.coarse.probe_recall,
    the build's own measure) and microseconds per query, one thread; the flat search's
    own cost comes first (ef None)."""
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    truth = nearest_centroids(quantizer, queries, nprobe)
    rows = [{"ef": None, "recall": 1.0, "us_per_query": round((time.perf_counter() - t0) / len(queries) * 1e6, 2)}]
    for ef in efs:
        t0 = time.perf_counter()
        recall = probe_recall(quantizer, truth, queries, ef)
        rows.append({"ef": ef, "recall": round(recall, 5),
                     "us_per_query": round((time.perf_counter() - t0) / len(queries) * 1e6, 2)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="a diffrep root holding the index (trained.index at least)")
    p.add_argument("--model", required=True)
    p.add_argument("--queries", type=int, default=20_000)
    p.add_argument("--nprobe", type=int, default=4)
    p.add_argument("--efs", default="16,32,64,128,256")
    p.add_argument("--out", default="bench-results/coarse-quantizer.json")
    args = p.parse_args()
    trained = deserialize(np.frombuffer(storage.read_bytes(IndexLayout(args.root, args.model).trained), np.uint8))
    ivf = faiss.extract_index_ivf(trained)
    queries = sample_queries(args.root, args.model, args.queries)
    rows = coarse_recall(hnsw_quantizer(trained), queries, args.nprobe, [int(e) for e in args.efs.split(",")])
    result = {"nlist": int(ivf.nlist), "dim": int(queries.shape[1]),
              "nprobe": args.nprobe, "queries": len(queries), "rows": rows}
    write_results(args.out, result)


if __name__ == "__main__":
    main()
