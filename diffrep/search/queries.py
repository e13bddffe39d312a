"""Query sets for the search job, streamed in batches: embeddings from an embed-job root
(read shard by shard, memory-mapped) or an .npy file (memory-mapped, keys read in
batches), or image files decoded and embedded here with the index's model, a batch at a
time. No process holds more than one batch of queries, so a corpus-sized query set (every
LAION image against the index) costs the same memory as a folder of images."""

from __future__ import annotations

import glob
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from diffrep import storage
from diffrep.config import ConfigError
from diffrep.data.folder import decode_any_image
from diffrep.data.images import SkipSample
from diffrep.embed.layout import ModelOutput
from diffrep.index.vectors import list_embedding_files, load_npy, read_npy_header
from diffrep.models import model_dir_name
from diffrep.search.regions import RegionQueries, RegionSpec, embed_regions

log = logging.getLogger("diffrep")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
SIDECAR_EXTENSIONS = (".txt", ".json")


@dataclass
class QueryBatch:
    """At most one batch of queries: keys, vectors (B, dim) float32, their region
    descriptors (image queries with region matching on) and the files skipped in it."""

    keys: list[str]
    vectors: np.ndarray
    regions: RegionQueries | None = None
    skipped: Counter = field(default_factory=Counter)


class EmbedRootQueries:
    """Every completed shard of `model` under an embed-job output root, shard by shard.

    Raises ConfigError when the root holds embeddings of other models only (queries must
    be embedded with the index's model).
    """

    def __init__(self, root: str, model: str):
        self.files = list_embedding_files(root, model)
        if not self.files:
            base = os.path.join(root, "embeddings")
            others = sorted(os.listdir(base)) if os.path.isdir(base) else []
            raise ConfigError(
                f"search.queries {root!r} holds no embeddings of the index's model {model!r} "
                f"(found: {others or 'none'}); queries must be embedded with {model}")
        self.out = ModelOutput(root, model)
        self.count = sum(f.rows for f in self.files)
        self.dim = self.files[0].dim

    def num_batches(self, batch_size: int) -> int:
        return sum(-(-f.rows // batch_size) for f in self.files)

    def batches(self, batch_size: int) -> Iterator[QueryBatch]:
        for f in self.files:  # batches do not span shards
            vectors = load_npy(self.out.embeddings(f.shard))
            keys = storage.read_table(self.out.metadata(f.shard), columns=["key"])["key"].to_pylist()
            for start in range(0, len(keys), batch_size):
                yield QueryBatch(keys[start:start + batch_size],
                                 np.asarray(vectors[start:start + batch_size], np.float32))


class NpyQueries:
    """An (N, dim) .npy of query embeddings (memory-mapped when local), keys from
    `metadata` (parquet, column key, read in batches) or the row numbers."""

    def __init__(self, path: str, metadata: str | None, query_model: str | None, model: str):
        if query_model is None or model_dir_name(query_model) != model_dir_name(model):
            raise ConfigError(
                f"search.query_model is {query_model!r}, the index holds {model!r} embeddings: "
                f"set query_model to the model that embedded {path} (it must be {model})")
        try:
            shape, _ = read_npy_header(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"search.queries {path!r} is not a readable .npy: {exc}") from None
        if len(shape) != 2:
            raise ConfigError(f"{path}: expected an (N, dim) array, found shape {shape}")
        self.path, self.metadata = path, metadata
        self.count, self.dim = shape
        if metadata:
            rows = pq.ParquetFile(metadata).metadata.num_rows
            if rows != self.count:
                raise ConfigError(f"{metadata} has {rows} rows, {path} has {self.count}")

    def num_batches(self, batch_size: int) -> int:
        return -(-self.count // batch_size)

    def batches(self, batch_size: int) -> Iterator[QueryBatch]:
        vectors = load_npy(self.path)
        if self.metadata:
            keys = rechunk((b["key"].to_pylist() for b in pq.ParquetFile(self.metadata).iter_batches(
                batch_size, columns=["key"])), batch_size)
        else:
            keys = ([str(i) for i in range(s, min(s + batch_size, self.count))]
                    for s in range(0, self.count, batch_size))
        for start, batch_keys in zip(range(0, self.count, batch_size), keys, strict=True):
            yield QueryBatch(batch_keys, np.asarray(vectors[start:start + len(batch_keys)], np.float32))


def rechunk(lists: Iterator[list], size: int) -> Iterator[list]:
    """The items of `lists` in lists of exactly `size` (the last one shorter)."""
    pending: list = []
    for items in lists:
        pending.extend(items)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


class ImageQueries:
    """Image files, decoded and embedded a batch at a time; unreadable ones are skipped and
    counted by reason. Keys are the file paths. With `regions`, every image's region
    descriptors too (region 0 is the whole image, so the global vectors come from them)."""

    def __init__(self, paths: list[str], embedder, regions: RegionSpec | None = None,
                 embed_batch_size: int = 32, unlisted: Counter | None = None):
        self.paths, self.embedder, self.regions = paths, embedder, regions
        self.unlisted = unlisted or Counter()  # files left out of `paths`, by reason
        self.embed_batch_size = embed_batch_size
        self.count, self.dim = len(paths), embedder.dim

    def num_batches(self, batch_size: int) -> int:
        return -(-self.count // batch_size)

    def batches(self, batch_size: int) -> Iterator[QueryBatch]:
        for start in range(0, len(self.paths), batch_size):
            keys, images = [], []
            skipped = Counter(self.unlisted) if start == 0 else Counter()
            for path in self.paths[start:start + batch_size]:
                try:
                    with open(path, "rb") as f:
                        images.append(decode_any_image(f.read()).image)
                    keys.append(path)
                except SkipSample as exc:
                    skipped[exc.reason] += 1
                    log.warning("search: skipping %s (%s)", path, exc.reason)
            if self.regions is not None:
                rq = embed_regions(self.embedder, images, self.regions, self.embed_batch_size)
                yield QueryBatch(keys, rq.global_vectors, rq, skipped)
            else:
                vectors = self.embedder.embed_images(images, batch_size=self.embed_batch_size) \
                    if images else np.zeros((0, self.dim), np.float32)
                yield QueryBatch(keys, vectors, None, skipped)


def list_images(pattern: str, unlisted: Counter | None = None) -> list[str]:
    """Image files of a folder (recursively) or a glob pattern, sorted. Other files, except
    .txt/.json sidecars, are counted in `unlisted` as `unsupported_format:<ext>`."""
    if os.path.isdir(pattern):
        paths = [os.path.join(d, f) for d, _, fs in os.walk(pattern) for f in fs]
    else:
        paths = glob.glob(pattern, recursive=True)
    if unlisted is not None:
        for p in paths:
            ext = os.path.splitext(p)[1].lower()
            if ext not in IMAGE_EXTENSIONS + SIDECAR_EXTENSIONS and os.path.isfile(p):
                unlisted[f"unsupported_format:{ext.lstrip('.') or 'none'}"] += 1
    return sorted(p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS))


def image_embedder(cfg, handle):
    """The descriptor image queries are embedded with: the index's model, with the weights
    its embeddings used (random or default) unless search.weights says otherwise."""
    from diffrep.models import create_embedder, default_weights

    random_init = handle.infos.get("embedder", {}).get("random_init", False)
    weights = cfg.weights or ("random" if random_init else default_weights(cfg.model))
    return create_embedder(cfg.model, weights=weights)


def load_queries(cfg, handle, embedder=None) -> EmbedRootQueries | NpyQueries | ImageQueries:
    """The search job's query source (SearchConfig: images, a .npy, or an embed root),
    checked against the index's model and dimension before any query is searched; image
    queries are embedded with `embedder` (default: image_embedder(cfg, handle)). Raises
    ConfigError naming the problem."""
    if cfg.images is not None:
        unlisted: Counter = Counter()
        paths = list_images(cfg.images, unlisted)
        if not paths:
            raise ConfigError(f"search.images {cfg.images!r} matches no image file "
                              f"({' '.join(IMAGE_EXTENSIONS)})")
        spec = cfg.region_spec(cfg.model) if cfg.regions else None
        queries = ImageQueries(paths, embedder or image_embedder(cfg, handle), regions=spec,
                               unlisted=unlisted)
    elif cfg.queries.endswith(".npy"):
        queries = NpyQueries(cfg.queries, cfg.queries_metadata, cfg.query_model, cfg.model)
    else:
        queries = EmbedRootQueries(cfg.queries, cfg.model)
    if queries.dim != handle.dim:
        raise ConfigError(f"queries have {queries.dim} dims, the index of {cfg.model} {handle.dim}")
    return queries
