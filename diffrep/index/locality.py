"""Number an IVF index's lists so that near centroids get near list ids.

Index shards own contiguous runs of list ids (diffrep.index.lists) and a query probes its
nprobe nearest centroids. k-means numbers its centroids in no particular order, so a
query's nprobe lists land in about min(nprobe, shards) different shards, and each of
those shards pays a call and a scan set-up for that query (3.45 shards per query at 10
shards and nprobe 4 on the rehearsal's corpus, docs/scaling.md). Renumbering the
centroids in the depth-first order of a hierarchical k-means over the centroids themselves
(32 branches per node, siblings in principal-axis order) makes every run of consecutive
ids a compact region of the space, wherever a shard's cut falls, so a query's probed lists
mostly share one shard. Measured on the rehearsal's 64-d corpus (10,000 lists, nprobe 4,
`benchmarks/list_locality.py`): shards per query 3.44 -> 1.08 at 10 shards, 3.91 -> 1.20
at 64, and at nprobe 16 on 64 shards 14.3 -> 1.55; a balanced principal-axis tree alone
gave 1.97 at 10 shards (median cuts split the data's own clusters). Renumbering LAION-2B's
quantizer shape (2^18 centroids x 512 dims) takes 34 s on 2 cores.

It is done once, after training and before any vector is added: the lists are still
empty, and nothing but the coarse quantizer depends on the numbering (PQ and scalar
codes by residual are trained on residuals, which a renumbering does not change).
Memory: the centroids (nlist x dim x 4 B: 0.5 GB at 2^18 lists x 512 dims) and one node's
copy, held by the training task only; k-means samples at most 256 points per branch.
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np

log = logging.getLogger("diffrep")

BRANCHES = 32


def principal_axis_order(points: np.ndarray, leaf: int = 1, iters: int = 8, seed: int = 0) -> np.ndarray:
    """A permutation of the rows of `points` (n, d) in balanced principal-axis-tree order:
    a node's rows split at the median of their projection on the node's own first
    principal axis (power iteration from a seeded start), lower half first, down to
    `leaf` rows. Deterministic."""
    x = np.asarray(points, np.float32)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    stack = [np.arange(len(x), dtype=np.int64)]
    while stack:
        ids = stack.pop()
        if len(ids) <= max(leaf, 1):
            order.extend(ids.tolist())
            continue
        pts = x[ids] - x[ids].mean(axis=0)
        axis = rng.standard_normal(x.shape[1]).astype(np.float32)
        for _ in range(iters):
            axis = pts.T @ (pts @ axis)
            norm = float(np.linalg.norm(axis))
            if norm == 0.0:  # every point equal: any split is as good
                break
            axis /= norm
        by_projection = ids[np.argsort(pts @ axis, kind="stable")]
        half = len(ids) // 2
        stack.append(by_projection[half:])  # popped second: the upper half after the lower
        stack.append(by_projection[:half])
    return np.asarray(order, np.int64)


def locality_order(centroids: np.ndarray, branches: int = BRANCHES, seed: int = 0) -> np.ndarray:
    """A permutation of the rows of `centroids` (n, d) such that runs of consecutive rows
    are compact: the depth-first order of a hierarchical k-means (min(`branches`,
    sqrt(rows)) clusters per node, 20 iterations; a node of at most `branches` rows is a
    leaf), siblings ordered along the principal axes of their centroids. Deterministic
    for a given `seed`."""
    x = np.ascontiguousarray(centroids, dtype=np.float32)
    order: list[int] = []
    stack = [np.arange(len(x), dtype=np.int64)]
    while stack:
        ids = stack.pop()
        if len(ids) <= branches:
            order.extend(ids.tolist())
            continue
        kmeans = faiss.Kmeans(x.shape[1], min(branches, math.isqrt(len(ids))), niter=20, seed=seed,
                              min_points_per_centroid=1)
        kmeans.train(x[ids])
        _, label = kmeans.index.search(x[ids], 1)
        children = [ids[label[:, 0] == c] for c in principal_axis_order(kmeans.centroids, seed=seed)]
        children = [c for c in children if len(c)]
        if len(children) == 1:  # points k-means cannot tell apart
            order.extend(ids.tolist())
            continue
        stack.extend(reversed(children))  # the first child is popped first
    return np.asarray(order, np.int64)


def renumber_lists(index: faiss.Index) -> bool:
    """Renumber the lists of the trained, still empty IVF inside `index` (an IndexIVF or
    one behind a pre-transform such as OPQ) in locality order, in place: its coarse
    quantizer is refilled with the same centroids, reordered. Returns False (and changes
    nothing) when there is nothing to order (fewer than 3 lists), vectors were already
    added, or the quantizer is not a flat or HNSW-flat one."""
    ivf = faiss.extract_index_ivf(index)
    if ivf.nlist < 3 or ivf.ntotal > 0:
        return False
    quantizer = faiss.downcast_index(ivf.quantizer)
    if not isinstance(quantizer, (faiss.IndexFlat, faiss.IndexHNSWFlat)) or quantizer.ntotal != ivf.nlist:
        log.info("lists keep k-means' numbering: quantizer %s", type(quantizer).__name__)
        return False
    centroids = quantizer.reconstruct_n(0, ivf.nlist)
    order = locality_order(centroids)
    quantizer.reset()
    quantizer.add(np.ascontiguousarray(centroids[order]))
    if isinstance(ivf, faiss.IndexIVFPQ) and ivf.by_residual:
        ivf.precompute_table()  # its tables (where used) are per list
    return True
