"""Where the embed job writes (clip-retrieval's layout, one folder per model):

  <root>/embeddings/<model>/img_emb/<shard>.npy      (N, dim) float16|float32, L2-normalised
  <root>/embeddings/<model>/img_tokens/<shard>.npy   (N, T, d) float16 patch tokens (optional)
  <root>/embeddings/<model>/metadata/<shard>.parquet key, url, caption, shard, row, width,
                                                     height, sha256, image_offset, image_size;
                                                     row i <-> npy row i
  <root>/embeddings/<model>/stats/<shard>.json       written LAST: the completion marker
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from diffrep import storage
from diffrep.models import model_dir_name

METADATA_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("url", pa.string()),
    ("caption", pa.string()),
    ("shard", pa.string()),
    ("row", pa.int64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("sha256", pa.string()),   # of the image member's bytes
    # the image member's data in the input tar: byte offset and size (-1: unknown, e.g. a
    # compressed tar), for reading one image back with one ranged read
    ("image_offset", pa.int64()),
    ("image_size", pa.int64()),
])
SUBDIRS = ("img_emb", "img_tokens", "metadata", "stats")


@dataclass(frozen=True)
class ModelOutput:
    """The output paths of one model under an output root."""

    root: str
    model: str

    @property
    def base(self) -> str:
        return storage.join(self.root, "embeddings", model_dir_name(self.model))

    def embeddings(self, shard: str) -> str:
        return storage.join(self.base, "img_emb", f"{shard}.npy")

    def tokens(self, shard: str) -> str:
        return storage.join(self.base, "img_tokens", f"{shard}.npy")

    def metadata(self, shard: str) -> str:
        return storage.join(self.base, "metadata", f"{shard}.parquet")

    def stats(self, shard: str) -> str:
        return storage.join(self.base, "stats", f"{shard}.json")

    def is_complete(self, shard: str) -> bool:
        return storage.exists(self.stats(shard))

    def completed_shards(self) -> set[str]:
        """Shard ids whose stats file (the completion marker) exists."""
        fs, path = storage.filesystem(storage.join(self.base, "stats"))
        if not fs.exists(path):
            return set()
        names = (p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
        return {n[: -len(".json")] for n in names if n.endswith(".json") and storage.TMP_MARKER not in n}
