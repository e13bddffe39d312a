"""Training images' region descriptors stored on first use (object-level matching, issue 20
part 3), so that scans and searches stop reading and re-embedding the same training images'
regions: the region re-rank (diffrep.search.training_regions) embeds `RegionSpec.count()`
crops of every candidate it re-scores, and the region baseline alone re-scores ~10
candidates for each of its 1,000 images.

Layout, partitioned by embedding shard (`handle.locate`: a shard row is stable, whatever
index is built over the shard):

    <root>/region_store/<model>/<tag>/<shard>/<chunk>.npy       float16 (n, R, dim)
    <root>/region_store/<model>/<tag>/<shard>/<chunk>.rows.npy  int64 (n,) shard rows

`tag` names every setting the descriptors depend on (region grid, blank-crop rule, the
embedder's identity). A chunk is written by whoever computed its rows, vectors first and
its rows file last, each atomically: a chunk without its rows file is not read, so a worker
killed mid-write leaves nothing half-read, and concurrent workers never write the same
file. A row stored twice (two workers computing it at once) is read once.

A reader lists a shard's chunks when it first asks for it, and again for rows it lacks
at most every RESCAN_S seconds (not once per call: a miss is the common case on first
use, and a listing is a round trip on an object store).

Memory: the rows of the shards touched (8 bytes per stored row) and an LRU of open chunk
maps; vectors are memory-mapped where the root is local, read whole otherwise. Size:
R x dim x 2 bytes per stored image (14 x 512 x 2 = 14.3 KB for SSCD): 14.3 TB per billion
images were every image stored; on first use only the candidates that are re-scored are.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from collections import OrderedDict

import numpy as np

from diffrep import storage
from diffrep.models import model_dir_name
from diffrep.search.regions import RegionSpec

ROWS_SUFFIX = ".rows.npy"
MAX_OPEN = 64  # chunk maps kept open
RESCAN_S = 30.0  # a shard's chunks are listed again at most this often (its misses are new)


def store_tag(spec: RegionSpec, embedder_info: dict) -> str:
    """A short hash of everything a stored descriptor depends on."""
    key = {"boxes": spec.boxes().round(4).tolist(), "min_std": spec.min_std,
           "embedder": embedder_info}
    if spec.proposals != "grid":
        key["proposals"] = [spec.proposals, spec.max_segments]
    if spec.descriptors != "crops":
        key["descriptors"] = [spec.descriptors, spec.pooled_side]
    if spec.segment_side:  # only when set: stores written before it keep their tag
        key["segment_side"] = spec.segment_side
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class RegionStore:
    """get(shard, rows) -> {row: (R, dim) float32} of the stored ones; put(shard, rows,
    vectors) stores newly computed ones."""

    def __init__(self, url: str):
        self.url = url
        self._rows: dict[str, dict[int, tuple[str, int]]] = {}  # shard -> row -> (chunk, i)
        self._maps: OrderedDict[str, np.ndarray] = OrderedDict()
        self._listed: dict[str, float] = {}  # shard -> when its chunks were last listed
        self.hits = self.stored = 0

    @classmethod
    def for_handle(cls, handle, spec: RegionSpec) -> RegionStore:
        info = handle.infos.get("embedder", {"model": handle.model})
        return cls(storage.join(handle.layout.root, "region_store", model_dir_name(handle.model),
                                store_tag(spec, info)))

    def _scan(self, shard: str) -> dict[int, tuple[str, int]]:
        """(Re)list a shard's committed chunks."""
        fs, path = storage.filesystem(storage.join(self.url, shard))
        self._listed[shard] = time.monotonic()
        known = self._rows.setdefault(shard, {})
        seen = {chunk for chunk, _ in known.values()}
        for rows_path in sorted(fs.glob(f"{path}/*{ROWS_SUFFIX}")):
            chunk = rows_path[:-len(ROWS_SUFFIX)] + ".npy"
            if chunk in seen or storage.TMP_MARKER in rows_path:
                continue
            with fs.open(rows_path, "rb") as f:
                rows = np.load(io.BytesIO(f.read()), allow_pickle=False)
            for i, row in enumerate(rows.tolist()):
                known.setdefault(int(row), (chunk, i))
        return known

    def _chunk(self, path: str) -> np.ndarray:
        if path in self._maps:
            self._maps.move_to_end(path)
            return self._maps[path]
        fs, _ = storage.filesystem(self.url)
        if storage.is_local(fs):
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with fs.open(path, "rb") as f:
                arr = np.load(io.BytesIO(f.read()), allow_pickle=False)
        self._maps[path] = arr
        while len(self._maps) > MAX_OPEN:
            self._maps.popitem(last=False)
        return arr

    def get(self, shard: str, rows: np.ndarray) -> dict[int, np.ndarray]:
        """The stored descriptors among `rows` of embedding shard `shard`, float32."""
        known = self._rows.get(shard)
        stale = time.monotonic() - self._listed.get(shard, -RESCAN_S) >= RESCAN_S
        if known is None or (stale and any(int(r) not in known for r in rows)):
            known = self._scan(shard)  # other workers may have stored them since
        out = {}
        for row in rows.tolist():
            if (where := known.get(int(row))) is not None:
                out[int(row)] = np.asarray(self._chunk(where[0])[where[1]], np.float32)
        self.hits += len(out)
        return out

    def put(self, shard: str, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Store `vectors` (n, R, dim) of `rows` (n,) of shard `shard` as one new chunk."""
        if not len(rows):
            return
        name = f"{uuid.uuid4().hex}-{os.getpid()}"
        base = storage.join(self.url, shard, name)
        storage.write_npy(base + ".npy", np.asarray(vectors, np.float16))
        storage.write_npy(base + ROWS_SUFFIX, np.asarray(rows, np.int64))  # the commit
        _, path = storage.filesystem(base + ".npy")
        known = self._rows.setdefault(shard, {})
        for i, row in enumerate(np.asarray(rows).tolist()):
            known.setdefault(int(row), (path, i))
        self.stored += len(rows)
