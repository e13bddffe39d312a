"""Query sets for the search job: embeddings from an embed-job root or an .npy file, or
image files embedded here with the index's model."""

from __future__ import annotations

import glob
import logging
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from diffrep.config import ConfigError
from diffrep.data.images import SkipSample, decode_image
from diffrep.embed.layout import ModelOutput
from diffrep.index.vectors import list_embedding_files, load_npy
from diffrep.models import model_dir_name
from diffrep.search.regions import RegionQueries, RegionSpec, embed_regions

log = logging.getLogger("diffrep")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


@dataclass
class QuerySet:
    keys: list[str]
    vectors: np.ndarray          # (Q, dim) float32
    skipped: dict[str, int]
    regions: RegionQueries | None = None  # image queries with region matching on

    def block(self, start: int, stop: int) -> RegionQueries | None:
        """Region descriptors of queries [start, stop), or None."""
        if self.regions is None:
            return None
        return RegionQueries(self.regions.vectors[start:stop], self.regions.boxes, self.regions.spec)


def from_embed_root(root: str, model: str) -> QuerySet:
    """Every completed shard of `model` under an embed-job output root.

    Raises ConfigError when the root holds embeddings of other models only (queries must
    be embedded with the index's model).
    """
    files = list_embedding_files(root, model)
    if not files:
        base = os.path.join(root, "embeddings")
        others = sorted(os.listdir(base)) if os.path.isdir(base) else []
        raise ConfigError(
            f"search.queries {root!r} holds no embeddings of the index's model {model!r} "
            f"(found: {others or 'none'}); queries must be embedded with {model}")
    out = ModelOutput(root, model)
    keys, parts = [], []
    for f in files:
        parts.append(np.asarray(load_npy(out.embeddings(f.shard)), np.float32))
        keys.extend(pq.read_table(out.metadata(f.shard), columns=["key"])["key"].to_pylist())
    return QuerySet(keys, np.concatenate(parts), {})


def from_npy(path: str, metadata: str | None, query_model: str | None, model: str) -> QuerySet:
    """An (N, dim) .npy of query embeddings, keys from `metadata` (parquet, column key)."""
    if query_model is None or model_dir_name(query_model) != model_dir_name(model):
        raise ConfigError(
            f"search.query_model is {query_model!r}, the index holds {model!r} embeddings: "
            f"set query_model to the model that embedded {path} (it must be {model})")
    vectors = np.asarray(load_npy(path), np.float32)
    if vectors.ndim != 2:
        raise ConfigError(f"{path}: expected an (N, dim) array, found shape {vectors.shape}")
    if metadata:
        keys = pq.read_table(metadata, columns=["key"])["key"].to_pylist()
        if len(keys) != len(vectors):
            raise ConfigError(f"{metadata} has {len(keys)} rows, {path} has {len(vectors)}")
    else:
        keys = [str(i) for i in range(len(vectors))]
    return QuerySet(keys, vectors, {})


def list_images(pattern: str) -> list[str]:
    """Image files of a folder (recursively) or a glob pattern, sorted."""
    if os.path.isdir(pattern):
        paths = [os.path.join(d, f) for d, _, fs in os.walk(pattern) for f in fs]
    else:
        paths = glob.glob(pattern, recursive=True)
    return sorted(p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS))


def from_images(paths: list[str], embedder, batch_size: int = 32,
                regions: RegionSpec | None = None) -> QuerySet:
    """Decode and embed image files; unreadable ones are skipped and counted by reason.
    Keys are the file paths. With `regions`, every image's region descriptors too (region 0
    is the whole image, so the global vectors come from them)."""
    keys, images, skipped = [], [], Counter()
    for path in paths:
        try:
            with open(path, "rb") as f:
                images.append(decode_image(f.read()).image)
            keys.append(path)
        except SkipSample as exc:
            skipped[exc.reason] += 1
            log.warning("search: skipping %s (%s)", path, exc.reason)
    if regions is not None:
        rq = embed_regions(embedder, images, regions, batch_size)
        return QuerySet(keys, rq.global_vectors, dict(skipped), rq)
    vectors = embedder.embed_images(images, batch_size=batch_size) if images else \
        np.zeros((0, embedder.dim), np.float32)
    return QuerySet(keys, vectors, dict(skipped))


def image_embedder(cfg, handle):
    """The descriptor image queries are embedded with: the index's model, with the weights
    its embeddings used (random or default) unless search.weights says otherwise."""
    from diffrep.models import create_embedder, default_weights

    random_init = handle.infos.get("embedder", {}).get("random_init", False)
    weights = cfg.weights or ("random" if random_init else default_weights(cfg.model))
    return create_embedder(cfg.model, weights=weights)


def load_queries(cfg, handle, embedder=None) -> QuerySet:
    """The search job's queries (SearchConfig: images, a .npy, or an embed root), checked
    against the index's model and dimension; image queries are embedded with `embedder`
    (default: image_embedder(cfg, handle)). Raises ConfigError naming the problem."""
    if cfg.images is not None:
        paths = list_images(cfg.images)
        if not paths:
            raise ConfigError(f"search.images {cfg.images!r} matches no image file")
        spec = RegionSpec(tuple(cfg.region_scales), rerank=cfg.region_rerank) if cfg.regions else None
        queries = from_images(paths, embedder or image_embedder(cfg, handle), regions=spec)
    elif cfg.queries.endswith(".npy"):
        queries = from_npy(cfg.queries, cfg.queries_metadata, cfg.query_model, cfg.model)
    else:
        queries = from_embed_root(cfg.queries, cfg.model)
    if queries.vectors.shape[1] != handle.dim:
        raise ConfigError(f"queries have {queries.vectors.shape[1]} dims, the index of "
                          f"{cfg.model} {handle.dim}")
    return queries
