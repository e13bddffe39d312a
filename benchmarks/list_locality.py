"""Shards per query with k-means' list numbering against the locality numbering
(diffrep.index.locality), on the rehearsal's corpus distribution (a benchmark, not a test).

For each (nlist, shards) the rehearsal uses at 3M and 10M vectors (one shard per 1M, lists
of ~1,000 vectors) and for LAION-2B's 64 shards: train the coarse quantizer of the
rehearsal's index key (`IVF<nlist>_HNSW32`, inner product) on vectors drawn as
benchmarks/rehearsal.py draws them, renumber a copy's lists, assign `--vectors` corpus
vectors to estimate the list sizes, cut the lists into shards as the build does
(diffrep.index.lists.partition), and count the shards owning each query's `nprobe` lists
(queries: noisy copies of corpus vectors, as a dedup query is). Also the renumbering's
cost at LAION-2B's quantizer shape (2^18 centroids x 512 dims, clustered).

Run: python -m benchmarks.list_locality --out benchmarks/results/list-locality.json
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from benchmarks.common import clustered_vectors, write_results
from benchmarks.rehearsal import pseudo_vectors
from diffrep.index import lists
from diffrep.index.build import deserialize, serialize
from diffrep.index.locality import locality_order, renumber_lists


def rehearsal_vectors(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """Unit vectors as benchmarks/rehearsal.py's write_corpus draws an image outside any
    planted group: its topic centre plus its own pseudo-random content."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    content = rng.integers(0, 10 ** 9, n)
    x = centres[content % clusters] + 0.9 * pseudo_vectors(content, dim, 0) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def shards_per_query(quantizer: faiss.Index, corpus: np.ndarray, queries: np.ndarray, nlist: int,
                     num_shards: int, nprobe: int) -> float:
    _, assigned = quantizer.search(corpus, 1)
    sizes = np.bincount(assigned[:, 0], minlength=nlist)
    owner = lists.owner_of_new_entries(
        [(p["first_list"], p["last_list"]) for p in lists.partition(sizes, num_shards)], nlist)
    _, probed = quantizer.search(queries, nprobe)
    return float(np.mean([len(set(owner[row].tolist())) for row in probed]))


def measure(nlist: int, shard_counts: list[int], nprobes: list[int], args: argparse.Namespace) -> dict:
    train = rehearsal_vectors(max(40 * nlist, 100_000), args.dim, seed=1)
    corpus = rehearsal_vectors(args.vectors, args.dim, seed=2)
    rng = np.random.default_rng(3)
    queries = corpus[rng.choice(len(corpus), args.queries, replace=False)]
    queries = queries + 0.02 * rng.standard_normal(queries.shape).astype(np.float32) / np.sqrt(args.dim)
    index = faiss.index_factory(args.dim, f"IVF{nlist}_HNSW32,Flat", faiss.METRIC_INNER_PRODUCT)
    t0 = time.perf_counter()
    index.train(train)
    train_s = time.perf_counter() - t0
    renumbered = deserialize(serialize(index))
    t0 = time.perf_counter()
    renumber_lists(renumbered)
    renumber_s = time.perf_counter() - t0
    out = {"nlist": nlist, "train_s": round(train_s, 1), "renumber_s": round(renumber_s, 2), "rows": []}
    for num_shards in shard_counts:
        for nprobe in nprobes:
            row = {"shards": num_shards, "nprobe": nprobe}
            for name, idx in (("kmeans_numbering", index), ("locality_numbering", renumbered)):
                quantizer = faiss.downcast_index(faiss.extract_index_ivf(idx).quantizer)
                row[name] = round(shards_per_query(quantizer, corpus, queries, nlist, num_shards, nprobe), 3)
            out["rows"].append(row)
            print(f"  nlist {nlist} shards {num_shards} nprobe {nprobe}: shards per query "
                  f"{row['kmeans_numbering']} -> {row['locality_numbering']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results/list-locality.json")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--vectors", type=int, default=500_000, help="corpus vectors assigned for list sizes")
    parser.add_argument("--queries", type=int, default=20_000)
    args = parser.parse_args()
    results: dict = {"dim": args.dim, "vectors": args.vectors, "queries": args.queries, "runs": []}
    for nlist, shard_counts in ((3000, [3, 64]), (10000, [10, 64])):
        results["runs"].append(measure(nlist, shard_counts, [1, 4, 16], args))
    centroids = clustered_vectors(2 ** 18, 512, clusters=4096, seed=4)
    t0 = time.perf_counter()
    locality_order(centroids)
    results["laion2b_quantizer_renumber_s"] = round(time.perf_counter() - t0, 1)
    print(f"  renumbering 2^18 x 512 centroids: {results['laion2b_quantizer_renumber_s']} s", flush=True)
    write_results(args.out, results)


if __name__ == "__main__":
    main()
