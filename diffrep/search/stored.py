"""Stored embeddings (and patch tokens) of an index looked up by global id: the exact
re-rank's reads.

Global ids map to (embedding file, row) through one sorted array of each file's first id
(one entry per file: 20k at 2B with 100k-row files; diffrep.index.plan.locate_in, which
the index build's position lookups use too). Local files are memory-mapped once and kept open
in an LRU of `MAX_OPEN` maps (one file descriptor each): the re-rank of one batch
touches files all over the corpus, and a map opened per batch faults every page it reads
in again; at 10M vectors (100 files) that doubled the re-rank's reads. A batch reads its
files in id order, so with more files than the LRU holds every file is a miss (a cache
of 256 maps over 30M vectors' 300 files: each batch opened all 300 again); the bound is
therefore half the process's open-file limit (LAION-2B: 20k files of 100k vectors), not a
fixed count. Mapped files cost address space, not memory: their pages are file-backed
and the kernel drops them under pressure.
Remote files are read whole per call and never cached (memory stays one file's).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from diffrep.embed.layout import ModelOutput
from diffrep.index.plan import SliceSpec, locate_in
from diffrep.index.vectors import load_npy

MIN_OPEN = 256
DOTS_BLOCK = 65536  # pairs whose vectors are gathered at once by dots()


def max_open() -> int:
    """Memory maps kept open: half the soft open-file limit (RLIMIT_NOFILE), at least MIN_OPEN."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return MIN_OPEN
    return MIN_OPEN if soft == resource.RLIM_INFINITY else max(MIN_OPEN, soft // 2)


MAX_OPEN = max_open()  # per process (a Ray worker imports this module itself)


class StoredVectors:
    """Row lookups by global id over the embedding files of `slices` (in id order)."""

    def __init__(self, root: str, model: str, slices: Sequence[SliceSpec]):
        self.output = ModelOutput(root, model)
        names, firsts = [], []
        for s in sorted(slices, key=lambda s: s.id_start):
            first = s.id_start
            for name, rows in zip(s.files, s.rows, strict=True):
                names.append(name)
                firsts.append(first)
                first += rows
        self.files = names
        self.first_id = np.asarray(firsts, np.int64)
        self.ntotal = int(sum(s.count for s in slices))
        self._maps: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def locate(self, ids: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Global ids -> [(embedding file, rows in it, positions in ids)], files in id order."""
        ids = np.asarray(ids, np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.ntotal):
            raise IndexError(f"ids out of range [0, {self.ntotal})")
        return locate_in(ids, self.first_id, self.files)

    def array(self, url: str) -> np.ndarray:
        """The .npy at `url`: a cached memory map when local, else read whole."""
        with self._lock:
            if url in self._maps:
                self._maps.move_to_end(url)
                return self._maps[url]
        arr = load_npy(url)
        if isinstance(arr, np.memmap):
            with self._lock:
                self._maps[url] = arr
                while len(self._maps) > MAX_OPEN:
                    self._maps.popitem(last=False)
        return arr

    def vectors(self, ids: np.ndarray, dim: int) -> np.ndarray:
        """Stored embeddings of `ids`, float32 (N, dim)."""
        out = np.empty((len(ids), dim), np.float32)
        for name, rows, sel in self.locate(ids):
            out[sel] = self.array(self.output.embeddings(name))[rows]
        return out

    def dots(self, ids: np.ndarray, queries: np.ndarray, query_of: np.ndarray,
             block: int = DOTS_BLOCK) -> np.ndarray:
        """Inner product of each pair (stored vector ids[i], queries[query_of[i]]), float32
        (N,): the search's exact re-rank, whose candidates are mostly distinct. Each
        file's rows are read once per call and multiplied where they were read, `block`
        pairs at a time: memory is two (block, dim) float32 arrays whatever N, and no
        (N, dim) gather is scattered back into pair order."""
        out = np.empty(len(ids), np.float32)
        dim = queries.shape[1]
        for name, rows, sel in self.locate(ids):
            arr = np.asarray(self.array(self.output.embeddings(name)))
            if arr.shape[1] != dim:
                raise ValueError(f"{name} has {arr.shape[1]} dims, queries {dim}")
            for s in range(0, len(sel), block):
                part = sel[s:s + block]
                vecs = arr.take(rows[s:s + block], axis=0).astype(np.float32, copy=False)
                out[part] = np.einsum("nd,nd->n", vecs, queries[query_of[part]])
        return out

    def __getstate__(self) -> dict:
        """Pickled (sent to a Ray worker) without its maps and lock."""
        state = self.__dict__.copy()
        state["_maps"] = OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
