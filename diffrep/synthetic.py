"""Synthetic embedding corpora in the embed job's layout, for tests, benchmarks and the
rehearsal: vectors clustered like real descriptors, written as embed-job shards."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from diffrep import storage
from diffrep.embed.layout import METADATA_SCHEMA, ModelOutput


def clustered_vectors(n: int, dim: int, clusters: int, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """L2-normalised vectors around `clusters` random centres (like real descriptors: not
    uniform on the sphere)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim) * 4
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_embeddings(root: str, model: str, vectors: np.ndarray, rows_per_shard: int,
                     first_shard: int = 0, dtype: str = "float32") -> list[str]:
    """Write vectors as embed-job shards <first_shard>.. with keys k<shard>_<row>; returns
    the shard names."""
    out = ModelOutput(root, model)
    names = []
    for i, start in enumerate(range(0, len(vectors), rows_per_shard)):
        name = f"{first_shard + i:05d}"
        block = vectors[start:start + rows_per_shard]
        n = len(block)
        storage.write_npy(out.embeddings(name), block.astype(dtype))
        storage.write_parquet(out.metadata(name), pa.table({
            "key": [f"k{name}_{r}" for r in range(n)],
            "url": [f"http://example.com/{name}/{r}.jpg" for r in range(n)],
            "caption": [f"caption {name} {r}" for r in range(n)],
            "shard": [name] * n, "row": list(range(n)), "width": [64] * n, "height": [64] * n,
            "sha256": ["0" * 64] * n, "image_offset": [-1] * n, "image_size": [-1] * n},
            schema=METADATA_SCHEMA))
        storage.write_json(out.stats(name), {"shard": name, "embedded": n})
        names.append(name)
    return names


def flat_drawing(seed: int, side: int = 256):
    """A flat graphic, icon-like: four filled rectangles or ellipses in flat colours on
    white (few local features; what fools a global or region descriptor on icons)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(0, side * 5 // 8, 2)
        w, h = rng.integers(side // 6, side * 3 // 8, 2)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x0 + w, y0 + h], fill=colour)
    return img
