"""Region descriptors of training images, for re-ranking a query's top candidates region to
region (diffrep.search.regions.region_pair_scores): an object pasted into a generation is
usually only part of its training image, and its crop matches a crop of that image far
better than the whole image's descriptor.

The index does not change: the candidates' pixels are read from the corpus tars the embed
stats name (diffrep.report.images.fetch_corpus_images: one ranged read per image where the
embed job recorded its byte range, else one pass over its tar) and their regions embedded with the index's descriptor, `RegionSpec.count()`
descriptor calls per candidate. Memory: an LRU of `cache_size` images' descriptors
((R, dim) float32 each), bounded by config, not by the corpus.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from diffrep.search.regions import RegionSpec, embed_regions

log = logging.getLogger("diffrep")


class TrainingRegions:
    """Callable ids (n,) int64 -> (n, R, dim) float32 region descriptors of those training
    images, region 0 being the whole image. An image that cannot be read gets its stored
    global embedding as region 0 and zero vectors elsewhere (so it scores as without
    re-ranking), and is counted in `missing`."""

    def __init__(self, handle, embedder, spec: RegionSpec, cache_size: int = 2048,
                 batch_size: int = 32):
        self.handle, self.embedder, self.spec = handle, embedder, spec
        self.cache_size, self.batch_size = cache_size, batch_size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.missing = 0

    @classmethod
    def for_spec(cls, handle, embedder, spec: RegionSpec | None) -> TrainingRegions | None:
        """What a Searcher's candidate_regions should be for `spec`: None without regions
        or with the re-rank off (spec.rerank 0)."""
        return cls(handle, embedder, spec) if spec is not None and spec.rerank else None

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        fresh: dict[int, np.ndarray] = {}  # this call's, whatever the cache evicts
        todo = np.unique(np.asarray([i for i in ids.tolist() if i not in self._cache], np.int64))
        if len(todo):
            keys = self.handle.lookup(todo, columns=["key"])["key"].to_pylist()
            images = self.handle.corpus_images(todo, keys)
            have = [j for j, key in enumerate(keys) if key in images]
            if have:
                vecs = embed_regions(self.embedder, [images[keys[j]] for j in have], self.spec,
                                     self.batch_size).vectors
                fresh.update((int(todo[j]), v) for j, v in zip(have, vecs, strict=True))
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
