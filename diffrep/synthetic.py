"""Synthetic data for tests, benchmarks and the rehearsal: embedding corpora in the embed
job's layout (vectors clustered like real descriptors), and drawn images that copy nothing
(flat drawings, drawn scenes) or a known part of another image (paste_object)."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

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
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(0, side * 5 // 8, 2)
        w, h = rng.integers(side // 6, side * 3 // 8, 2)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x0 + w, y0 + h], fill=colour)
    return img


def drawn_scene(seed: int, size: int = 256):
    """A procedurally drawn scene (gradient sky, ground, shapes) that resembles no photo."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    arr = (top * (1 - t) + bottom * t).repeat(size, axis=1).astype(np.uint8)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    horizon = int(rng.integers(size // 3, 2 * size // 3))
    draw.rectangle((0, horizon, size, size), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    for _ in range(int(rng.integers(3, 8))):
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(size // 16, size // 4))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x) - r, int(y) - r, int(x) + r, int(y) + r),
              fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def paste_object(source: Image.Image, scene: Image.Image, rng: random.Random
                 ) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """Paste an elliptical part of `source` (half to two thirds of its sides, at random)
    into `scene` at 45-60% of the scene's side; returns the image and the normalised box."""
    fw, fh = rng.uniform(0.5, 0.67), rng.uniform(0.5, 0.67)
    w, h = int(source.width * fw), int(source.height * fh)
    x, y = rng.randint(0, source.width - w), rng.randint(0, source.height - h)
    side = int(scene.width * rng.uniform(0.45, 0.6))
    obj = source.crop((x, y, x + w, y + h)).resize((side, int(side * h / w)), Image.Resampling.BICUBIC)
    obj_h = min(obj.height, scene.height)
    obj = obj.crop((0, 0, side, obj_h))
    mask = Image.new("L", obj.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, obj.width - 1, obj.height - 1), fill=255)
    px, py = rng.randint(0, scene.width - obj.width), rng.randint(0, scene.height - obj.height)
    out = scene.copy()
    out.paste(obj, (px, py), mask)
    box = (px / scene.width, py / scene.height, (px + obj.width) / scene.width,
           (py + obj.height) / scene.height)
    return out, tuple(round(v, 4) for v in box)


def paste_region(source: Image.Image, scene: Image.Image, rng: random.Random, area: float,
                 irregular: bool) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """Paste a part of `source` (a random crop of 50-80% of its sides) into `scene`, its
    bounding box covering `area` of the scene (aspect 0.6-1.6), masked by an ellipse or,
    `irregular`, by a random star-shaped blob (12 vertices at 45-100% of the half-sides);
    returns the image and the normalised box."""
    aspect = rng.uniform(0.6, 1.6)
    bw = max(8, min(scene.width, round(scene.width * (area * aspect) ** 0.5)))
    bh = max(8, min(scene.height, round(scene.height * (area / aspect) ** 0.5)))
    f = rng.uniform(0.5, 0.8)
    cw = min(source.width, round(source.width * f))
    ch = min(source.height, max(1, round(cw * bh / bw)))
    x, y = rng.randint(0, source.width - cw), rng.randint(0, source.height - ch)
    obj = source.convert("RGB").crop((x, y, x + cw, y + ch)).resize((bw, bh), Image.Resampling.BICUBIC)
    mask = Image.new("L", (bw, bh), 0)
    if irregular:
        angles = np.sort(np.array([rng.uniform(0, 2 * np.pi) for _ in range(12)]))
        radii = np.array([rng.uniform(0.45, 1.0) for _ in range(12)])
        points = [(bw / 2 + r * bw / 2 * np.cos(a), bh / 2 + r * bh / 2 * np.sin(a))
                  for a, r in zip(angles, radii, strict=True)]
        ImageDraw.Draw(mask).polygon(points, fill=255)
    else:
        ImageDraw.Draw(mask).ellipse((0, 0, bw - 1, bh - 1), fill=255)
    px, py = rng.randint(0, scene.width - bw), rng.randint(0, scene.height - bh)
    out = scene.convert("RGB").copy()
    out.paste(obj, (px, py), mask)
    box = (px / scene.width, py / scene.height, (px + bw) / scene.width, (py + bh) / scene.height)
    return out, tuple(round(v, 4) for v in box)
