"""Each indexed vector's probed lists, recorded when it is added: the dedup job's coarse
assignment without a second quantizer search.

The add searches the coarse quantizer for every vector anyway, to pick its list. Asking
that search for STORED_PROBES lists instead of one costs about the same (an HNSW search
explores efSearch >= 16 candidates whatever the k it returns), and its answer is what a
later search of the same vector at the same efSearch returns. The dedup job queries the
index with its own vectors, so it reads their probes back (`probes/slice_*.npy`) instead
of searching the quantizer again: 37 us per query at 30,000 lists and efSearch 64
(benchmarks/results/coarse-quantizer-30k.json), a cost that grows with the list count.

(A table of each list's nearest centroids, probed instead of the quantizer, was tried
first and dropped: on the rehearsal's 64-d corpus at 10,000 lists the partner of a pair
at cosine 0.95 sat in a probed list for 0.978 of pairs with 64 neighbours per list, 0.984
with 256, against 0.998 for the quantizer's own probes.)

Storage: STORED_PROBES int32 per vector (32 bytes: 16 MB per 500k-vector slice, 64 GB
at 2B vectors), one file per slice, memory-mapped by its readers. The coarse similarities
are not stored; a reader recomputes the ones it uses (nprobe dot products per query,
against a view of the quantizer's centroids).
"""

from __future__ import annotations

import faiss
import numpy as np

from diffrep.index.coarse import COARSE_NPROBE, apply_transforms, pre_transforms

STORED_PROBES = COARSE_NPROBE  # the probes the quantizer's efSearch is calibrated for


def add_with_probes(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray,
                    nprobe: int = STORED_PROBES) -> np.ndarray:
    """Add `vectors` with `ids` to the IVF `index` (inside any pre-transform) as
    add_with_ids does, each to its nearest list, from ONE quantizer search that also
    returns its `nprobe` nearest lists: (n, min(nprobe, nlist)) int32, nearest first (the
    first is the list it went to)."""
    ivf = faiss.extract_index_ivf(index)
    x = apply_transforms(pre_transforms(index), vectors)
    _, probes = ivf.quantizer.search(x, min(nprobe, ivf.nlist))
    if len(probes) and (probes[:, 0] < 0).any():
        raise RuntimeError("the coarse quantizer returned no list for some vectors")
    assign = np.ascontiguousarray(probes[:, 0], np.int64)
    ids = np.ascontiguousarray(ids, np.int64)
    ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))
    faiss.downcast_index(index).ntotal = ivf.ntotal  # a pre-transform's count follows its IVF's
    return probes.astype(np.int32)


def centroids_view(quantizer: faiss.Index) -> np.ndarray:
    """The (nlist, d) centroids of a flat or HNSW-flat quantizer: a read-only view of its
    storage (no copy), valid while `quantizer` lives."""
    quantizer = faiss.downcast_index(quantizer)
    flat = faiss.downcast_index(quantizer.storage) if isinstance(quantizer, faiss.IndexHNSW) else quantizer
    if not isinstance(flat, faiss.IndexFlat):
        raise TypeError(f"no flat centroids in a {type(flat).__name__} quantizer")
    view = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
    view.flags.writeable = False
    return view


def stored_assignment(queries: np.ndarray, probes: np.ndarray, centroids: np.ndarray,
                      nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """The coarse assignment of indexed vectors (`queries`, transformed) from their stored
    `probes`: (the first `nprobe` lists (n, nprobe) int64, their inner products with the
    queries (n, nprobe) float32), as the quantizer's search returns them."""
    probed = np.ascontiguousarray(probes[:, :nprobe], np.int64)
    sims = np.einsum("nd,npd->np", np.asarray(queries, np.float32), centroids[probed]).astype(np.float32)
    return probed, sims
