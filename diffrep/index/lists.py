"""Index shards partitioned by inverted list: each shard owns a run of IVF lists.

Concatenate every IVF list's entries in list order (within a list, in slice order) and
cut that sequence into `num_shards` runs of about equal vector counts: shard s holds the
entries [bounds[s], bounds[s+1]). A shard therefore owns a contiguous range of lists
[first_list, last_list]; only a list that straddles a cut is shared, by the two shards
beside it (so an index of fewer lists than shards, e.g. the exact `IVF1,Flat`, still
spreads over every shard). A query then only needs the shards that own the lists it
probes (diffrep.search.lists.ListRouter), not every shard.

The cuts are made from the list sizes measured after the add (each add task writes its
slice's sizes); each shard's merge task collects its entries from every slice's part
index (memory-mapped: it reads the pages of its own lists) and holds one shard, never
more. Later incremental adds give each list's new entries to the last shard whose range
holds the list, so routing stays valid; balance then drifts with what is added (logged).
"""

from __future__ import annotations

import io
import logging

import faiss
import numpy as np

from diffrep import storage

log = logging.getLogger("diffrep")


def list_sizes(index: faiss.Index) -> np.ndarray:
    """Entries per inverted list of an IVF index (or one wrapped in a pre-transform), int64."""
    invlists = faiss.extract_index_ivf(index).invlists
    return np.array([invlists.list_size(i) for i in range(invlists.nlist)], np.int64)


def write_sizes(url: str, sizes: np.ndarray) -> None:
    storage.write_npy(url, np.asarray(sizes, np.int64))


def read_sizes(url: str) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(url)), allow_pickle=False)


def partition(sizes: np.ndarray, num_shards: int) -> list[dict]:
    """Cut the lists (global `sizes`, in list order) into `num_shards` runs of about equal
    vector counts. Returns per shard {"start", "end"} (entries of the concatenation it
    holds) and {"first_list", "last_list"} (the lists it owns, inclusive; an empty shard
    owns first_list > last_list). Every list is owned by some shard (an empty list by the
    shard whose range it falls in), so later adds always have an owner."""
    sizes = np.asarray(sizes, np.int64)
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if len(ends) else 0
    bounds = [round(s * total / num_shards) for s in range(num_shards + 1)]
    out = []
    for s in range(num_shards):
        start, end = bounds[s], bounds[s + 1]
        if end > start:
            first = int(np.searchsorted(ends, start, side="right"))
            last = int(np.searchsorted(ends, end - 1, side="right"))
        else:
            first, last = 1, 0
        out.append({"start": start, "end": end, "first_list": first, "last_list": last})
    owning = [p for p in out if p["first_list"] <= p["last_list"]]
    if owning:  # close the gaps (empty lists between two shards' runs) and both ends
        owning[0]["first_list"] = 0
        for a, b in zip(owning, owning[1:], strict=False):
            a["last_list"] = max(a["last_list"], b["first_list"] - 1)
        owning[-1]["last_list"] = len(sizes) - 1
    return out


def owner_of_new_entries(ranges: list[tuple[int, int]], nlist: int) -> np.ndarray:
    """For an incremental add: the shard that gets each list's new entries (the last
    shard whose range holds the list), (nlist,) int64."""
    owner = np.full(nlist, -1, np.int64)
    for shard, (first, last) in enumerate(ranges):
        if first <= last:
            owner[first:last + 1] = shard
    if (owner < 0).any():
        raise RuntimeError(f"lists {np.nonzero(owner < 0)[0][:5].tolist()}... have no owning shard")
    return owner


def copy_entries(dst: faiss.IndexIVF, src: faiss.IndexIVF, lst: int, a: int, b: int) -> int:
    """Append entries [a, b) of list `lst` of `src` to the same list of `dst`."""
    n = b - a
    if n <= 0:
        return 0
    src_lists, code_size = src.invlists, src.invlists.code_size
    ids_ptr, codes_ptr = src_lists.get_ids(lst), src_lists.get_codes(lst)
    try:
        ids = faiss.rev_swig_ptr(ids_ptr, b)[a:b].copy()
        codes = faiss.rev_swig_ptr(codes_ptr, b * code_size)[a * code_size:b * code_size].copy()
    finally:
        src_lists.release_ids(lst, ids_ptr)
        src_lists.release_codes(lst, codes_ptr)
    dst.invlists.add_entries(lst, n, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
    return n


def collect(dst: faiss.IndexIVF, src: faiss.IndexIVF, take: np.ndarray, skip: np.ndarray) -> int:
    """Append to `dst`, for every list l with take[l] > 0, the entries
    [skip[l], skip[l] + take[l]) of `src`'s list l. Returns the entries copied."""
    moved = 0
    for lst in np.nonzero(take > 0)[0].tolist():
        moved += copy_entries(dst, src, lst, int(skip[lst]), int(skip[lst] + take[lst]))
    return moved


IMBALANCE_WARNING = 4.0


def imbalance(sizes: np.ndarray) -> float:
    """faiss's imbalance factor of the lists: nlist * sum(size^2) / total^2, the size of the
    list an entry (so a corpus query) falls in over the mean list size. A query's scan
    costs that many times a balanced index's: 1.39 on the rehearsal's 1M 64-d corpus, 125.9
    on its 512-d one, where k-means put 494k of 1M vectors in two lists (docs/scaling.md)."""
    sizes = np.asarray(sizes, np.float64)
    total = sizes.sum()
    return float(len(sizes) * (sizes ** 2).sum() / total ** 2) if total else 1.0


def balance(ntotals: list[int]) -> float:
    """Largest shard over the mean shard (1.0: perfectly balanced)."""
    mean = sum(ntotals) / max(len(ntotals), 1)
    return max(ntotals) / mean if mean else 1.0
