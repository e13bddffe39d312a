"""The coarse quantizer's search depth (HNSW efSearch), chosen per index by measurement.

An IVF index finds a neighbour only in the lists its coarse quantizer returns for the
query, and no re-rank recovers a list it missed. With an HNSW quantizer (autofaiss's
choice past ~100k lists, diffrep's keys at scale) the share of the true nearest centroids
it returns at a fixed efSearch falls as the centroids grow in number (faiss's default,
16: benchmarks/coarse_quantizer.py). So the build measures it: on sampled vectors, the
share of the exact `nprobe` nearest centroids that HNSW returns at growing efSearch, and
keeps the smallest efSearch that reaches `target`. The trained index carries it (stored
in its HNSW, so the add tasks assign with it) and searches use at least it
(build.search_params).

Memory and time: a flat search of `queries` vectors over the centroids (2,000 x 32,768
x 64 dims: 4 GFLOP) and one HNSW search per step tried.
"""

from __future__ import annotations

import faiss
import numpy as np

EF_STEPS = (16, 32, 64, 128, 256, 512)
COARSE_NPROBE = 8  # the probes calibrated: HNSW returns fewer of the nearest k as k grows,
# so an efSearch that reaches the target at 8 (configs/laion2b's nprobe) does at 4


def hnsw_quantizer(index: faiss.Index) -> faiss.IndexHNSW | None:
    """The HNSW coarse quantizer of an IVF index (inside any pre-transform), else None."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    quantizer = faiss.downcast_index(ivf.quantizer)
    return quantizer if isinstance(quantizer, faiss.IndexHNSW) else None


def stored_ef(index: faiss.Index) -> int | None:
    """The efSearch an index's HNSW quantizer carries (None: no HNSW quantizer)."""
    quantizer = hnsw_quantizer(index)
    return None if quantizer is None else int(quantizer.hnsw.efSearch)


def nearest_centroids(quantizer: faiss.Index, queries: np.ndarray, nprobe: int) -> np.ndarray:
    """Each query's exact `nprobe` nearest centroids (Q, nprobe): a flat search over the
    quantizer's own centroids."""
    flat = faiss.IndexFlat(quantizer.d, quantizer.metric_type)
    flat.add(quantizer.reconstruct_n(0, quantizer.ntotal))
    return flat.search(queries, nprobe)[1]


def probe_recall(quantizer: faiss.IndexHNSW, truth: np.ndarray, queries: np.ndarray, ef: int) -> float:
    """Share of each query's exact nearest centroids (`truth`, (Q, nprobe)) that the HNSW
    quantizer returns at efSearch `ef`."""
    quantizer.hnsw.efSearch = ef
    _, got = quantizer.search(queries, truth.shape[1])
    return float((got[:, :, None] == truth[:, None, :]).any(axis=2).sum() / truth.size)


def pre_transforms(index: faiss.Index) -> list:
    """The vector transforms of an IndexPreTransform, in order (none for another index)."""
    top = faiss.downcast_index(index)
    if not isinstance(top, faiss.IndexPreTransform):
        return []
    return [faiss.downcast_VectorTransform(top.chain.at(i)) for i in range(top.chain.size())]


def apply_transforms(transforms: list, x: np.ndarray) -> np.ndarray:
    """`x` (raw vectors) through `transforms` (pre_transforms'): the IVF's own input."""
    x = np.ascontiguousarray(x, np.float32)
    for t in transforms:
        x = np.ascontiguousarray(t.apply_py(x), np.float32)
    return x


def transformed_sample(index: faiss.Index, sample: np.ndarray, queries: int = 2000, seed: int = 0) -> np.ndarray:
    """`queries` rows of `sample` (raw vectors) drawn at random, through the index's
    trained pre-transforms: the coarse quantizer's input."""
    rng = np.random.default_rng(seed)
    return apply_transforms(pre_transforms(index),
                            sample[rng.choice(len(sample), min(queries, len(sample)), replace=False)])


def calibrate_ef(index: faiss.Index, sample: np.ndarray, nprobe: int, target: float = 0.99,
                 queries: int = 2000) -> dict | None:
    """Set the smallest efSearch of EF_STEPS (at least faiss's 16 and 2 x nprobe) whose
    probe recall on `queries` vectors of `sample` (raw vectors: the index's trained
    pre-transforms are applied) reaches `target`, or the largest step;
    returns {"ef", "nprobe", "recall", "tried": {ef: recall}}, None without an HNSW
    quantizer."""
    quantizer = hnsw_quantizer(index)
    if quantizer is None:
        return None
    q = transformed_sample(index, sample, queries)
    nprobe = min(nprobe, quantizer.ntotal)
    truth = nearest_centroids(quantizer, q, nprobe)
    tried: dict[int, float] = {}
    for ef in (e for e in EF_STEPS if e >= max(16, 2 * nprobe)):
        tried[ef] = round(probe_recall(quantizer, truth, q, ef), 5)
        if tried[ef] >= target:
            break
    ef = next((e for e, r in tried.items() if r >= target), max(tried))
    quantizer.hnsw.efSearch = ef
    return {"ef": ef, "nprobe": nprobe, "recall": tried[ef], "target": target, "queries": len(q),
            "tried": {str(e): r for e, r in tried.items()}}
