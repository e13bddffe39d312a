"""Searching an index for the app: an uploaded image, a corpus key or a given embedding,
through the jobs' Searcher (routed by inverted list; in this process, or through one Ray
actor per shard when the app runs on a cluster), optionally with object-level regions.

Memory: the index shards are memory-mapped by faiss (or held by the shard actors); the
descriptor model is loaded on the first image query. A query holds its k results.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from diffrep.search import LocalShards, RayShards, Searcher, open_index
from diffrep.search.regions import RegionSpec, embed_regions
from diffrep.search.training_regions import TrainingRegions
from diffrep.serve.catalog import NotFound

MAX_K = 1000


@dataclass
class Match:
    id: int
    key: str | None
    url: str | None
    caption: str | None
    similarity: float
    global_similarity: float | None = None
    box: list[float] | None = None


class IndexSearch:
    """One index of the root (`folder` under indexes/, of `model`)."""

    def __init__(self, root: str, folder: str, model: str, shard_actors: bool = False,
                 shard_actor_cpus: float = 1.0, spec: RegionSpec | None = None):
        self.folder, self.model = folder, model
        self.handle = open_index(root, model, verify_files="metadata" if shard_actors else True)
        self.backend = (RayShards(self.handle, num_cpus=shard_actor_cpus) if shard_actors
                        else LocalShards(self.handle))
        self.spec = spec or RegionSpec()
        self._embedder = None
        self._lock = threading.Lock()  # one model load (searches and forward passes run concurrently)

    def close(self) -> None:
        if isinstance(self.backend, RayShards):
            self.backend.close()

    @property
    def dim(self) -> int:
        return self.handle.dim

    def embedder(self):
        with self._lock:
            if self._embedder is None:
                from diffrep.models import create_embedder, default_weights

                random_init = self.handle.infos.get("embedder", {}).get("random_init", False)
                self._embedder = create_embedder(self.model, weights="random" if random_init
                                                 else default_weights(self.model))
        return self._embedder

    def _matches(self, hits) -> list[Match]:
        ids = hits.ids[0]
        keep = ids >= 0
        names = self.handle.lookup(ids[keep], columns=["key", "url", "caption"]).to_pylist()
        out, j = [], 0
        for i, id_ in enumerate(ids):
            if id_ < 0:
                continue
            n = names[j]
            j += 1
            out.append(Match(int(id_), n["key"], n["url"], n["caption"], float(hits.sims[0, i]),
                             None if hits.global_sims is None else float(hits.global_sims[0, i]),
                             None if hits.boxes is None else [round(float(v), 4) for v in hits.boxes[0, i]]))
        return out

    def by_image(self, image: Image.Image, k: int, regions: bool = False) -> list[Match]:
        """Top-k training images for `image`: exact similarity of the whole image, or with
        `regions` the region score (best crop-to-image similarity) with its box."""
        k = _check_k(k)
        embedder = self.embedder()
        if regions:
            queries = embed_regions(embedder, [image], self.spec)
            searcher = Searcher(self.handle, self.backend, candidate_regions=TrainingRegions.for_spec(
                self.handle, embedder, self.spec))
            return self._matches(searcher.search(queries.global_vectors, k, regions=queries))
        vec = embedder.embed_images([image])
        return self._matches(Searcher(self.handle, self.backend).search(vec, k, rerank="exact"))

    def by_vector(self, vector: np.ndarray, k: int) -> list[Match]:
        """Top-k for a query embedding (normalised here; cosine = inner product)."""
        k = _check_k(k)
        v = np.asarray(vector, np.float32).reshape(1, -1)
        if v.shape[1] != self.dim or not np.isfinite(v).all() or not np.linalg.norm(v):
            raise ValueError(f"the embedding must be {self.dim} finite numbers, not all zero")
        v /= np.linalg.norm(v)
        return self._matches(Searcher(self.handle, self.backend).search(v, k, rerank="exact"))

    def by_key(self, key: str, k: int) -> list[Match]:
        """Top-k for the corpus image `key` (its own stored vector; itself first)."""
        ids = self.handle.key_to_id([key])
        if key not in ids:
            raise NotFound(f"no image with key {key!r} in the index of {self.model}")
        return self.by_vector(self.handle.vectors(np.array([ids[key]]))[0], k)

    def verify(self, image: Image.Image, matches: list[Match], limit: int = 10) -> list:
        """Geometric verification (diffrep.search.geometry) of the first `limit` matches:
        their training images read from the corpus, each checked against the query (its
        matched region when there is one). A Verification per match; None where the
        training image could not be read or the match was beyond `limit`."""
        from diffrep.search.geometry import verify_pair

        head = matches[:limit]
        images = self.handle.corpus_images([m.id for m in head], [m.key for m in head])
        return [verify_pair(image, images[m.key], query_box=m.box) if m.key in images else None
                for m in head] + [None] * (len(matches) - len(head))

    def vectors(self, ids: list[int]) -> np.ndarray:
        return self.handle.vectors(np.asarray(ids, np.int64))


def _check_k(k: int) -> int:
    if not 1 <= int(k) <= MAX_K:
        raise ValueError(f"k must be in 1..{MAX_K}")
    return int(k)
