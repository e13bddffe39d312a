"""Region descriptors of training images, for re-ranking a query's top candidates region to
region (diffrep.search.regions.region_pair_scores): an object pasted into a generation is
usually only part of its training image, and its crop matches a crop of that image far
better than the whole image's descriptor.

The index does not change: the candidates' pixels are read from the corpus tars the embed
stats name (diffrep.report.images.fetch_corpus_images: one ranged read per image where the
embed job recorded its byte range, else one pass over its tar) and their regions embedded with the index's descriptor, `RegionSpec.count()`
descriptor calls per candidate. With a region store (opt-in: `region_store` of scan and
search; diffrep.search.region_store) descriptors computed once are read back by every
later call, scan and search. Memory: an LRU of images' descriptors ((R, dim) float32
each) of at most `cache_mb` MB (~540 images with pooled regions, R = 116, at 512 dims;
~2,900 with crops, R = 22), bounded by config, not by the corpus.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from diffrep.search.region_store import RegionStore
from diffrep.search.regions import RegionSpec, embed_regions

log = logging.getLogger("diffrep")


class TrainingRegions:
    """Callable ids (n,) int64 -> (n, R, dim) float32 region descriptors of those training
    images, region 0 being the whole image. An image that cannot be read gets its stored
    global embedding as region 0 and zero vectors elsewhere (so it scores as without
    re-ranking), and is counted in `missing`."""

    def __init__(self, handle, embedder, spec: RegionSpec, cache_mb: float = 128,
                 batch_size: int = 32, store: RegionStore | None = None):
        self.handle, self.embedder, self.spec = handle, embedder, spec
        self.cache_size = max(1, int(cache_mb * 2**20 // (spec.count() * handle.dim * 4)))
        self.batch_size, self.store = batch_size, store
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.missing = self.embedded = 0

    @classmethod
    def for_spec(cls, handle, embedder, spec: RegionSpec | None, store: bool = False
                 ) -> TrainingRegions | None:
        """What a Searcher's candidate_regions should be for `spec`: None without regions
        or with the re-rank off (spec.rerank 0). store: read and write the index root's
        region store (diffrep.search.region_store)."""
        if spec is None or not spec.rerank:
            return None
        return cls(handle, embedder, spec,
                   store=RegionStore.for_handle(handle, spec) if store else None)

    def _from_store(self, todo: np.ndarray, fresh: dict[int, np.ndarray]) -> np.ndarray:
        """Fill `fresh` with the stored ones among `todo`; returns the rest."""
        for shard, rows, sel in self.handle.locate(todo):
            got = self.store.get(shard, rows)
            fresh.update((int(todo[j]), got[r]) for r, j in zip(rows.tolist(), sel.tolist(),
                                                                 strict=True) if r in got)
        return np.asarray([i for i in todo.tolist() if i not in fresh], np.int64)

    def _to_store(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for shard, rows, sel in self.handle.locate(ids):
            self.store.put(shard, rows, vectors[sel])

    def remember(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Cache descriptors (n, R, dim) that a caller computed from these training images'
        own pixels (the region baseline's queries are training images, and each is its
        own top candidate): they are not read and embedded a second time."""
        for i, v in zip(np.asarray(ids, np.int64).tolist(), vectors, strict=True):
            self._cache[i] = np.asarray(v, np.float32)
            self._cache.move_to_end(i)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        fresh: dict[int, np.ndarray] = {}  # this call's, whatever the cache evicts
        todo = np.unique(np.asarray([i for i in ids.tolist() if i not in self._cache], np.int64))
        if len(todo) and self.store is not None:
            todo = self._from_store(todo, fresh)
        if len(todo):
            keys = self.handle.lookup(todo, columns=["key"])["key"].to_pylist()
            images = self.handle.corpus_images(todo, keys)
            have = [j for j, key in enumerate(keys) if key in images]
            if have:
                vecs = embed_regions(self.embedder, [images[keys[j]] for j in have], self.spec,
                                     self.batch_size).vectors
                fresh.update((int(todo[j]), v) for j, v in zip(have, vecs, strict=True))
                self.embedded += len(have)
                if self.store is not None:
                    self._to_store(todo[have], vecs)
            lost = [j for j in range(len(todo)) if keys[j] not in images]
            if lost:
                self.missing += len(lost)
                log.warning("regions: %d candidate image(s) unreadable; scored by their "
                            "stored embedding only", len(lost))
                stored = self.handle.vectors(todo[lost])
                for j, g in zip(lost, stored, strict=True):
                    v = np.zeros((self.spec.count(), len(g)), np.float32)
                    v[0] = g
                    fresh[int(todo[j])] = v
        out = np.zeros((len(ids), self.spec.count(), self.handle.dim), np.float32)
        for row, i in enumerate(ids.tolist()):
            if i in fresh:
                out[row] = fresh[i]
            else:
                out[row] = self._cache[i]
                self._cache.move_to_end(i)
        for i, v in fresh.items():
            self._cache[i] = v
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out
