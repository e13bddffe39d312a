"""The embedder interface.

An embedder turns RGB PIL images into L2-normalised float32 descriptors. Its
preprocessing is split in two so that the expensive, GIL-free part runs in decode
threads beside the model:

- `prepare(image) -> np.ndarray`: PIL resize/crop only, returning uint8 HWC. Runs on CPU
  decode threads; arrays of equal shape are stacked into a batch.
- `embed_prepared(batch) -> np.ndarray`: uint8 NHWC in, (N, dim) float32 out. Scaling to
  [0, 1], mean/std normalisation and the model run on the embedder's device.

`embed_images` chains both and is what "computing an embedding directly" means.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image


class Embedder(ABC):
    """Base class of every registered embedder."""

    name: str = ""
    dim: int = 0
    #: True when the weights are a random initialisation (outputs must say so).
    random_init: bool = False
    #: True when `embed_prepared_tokens` gives per-patch features (split-product).
    has_tokens: bool = False
    device: str = "cpu"

    @abstractmethod
    def prepare(self, image: Image.Image) -> np.ndarray:
        """Resize/crop an RGB image for this model; returns uint8 HWC."""

    @abstractmethod
    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Embed a uint8 NHWC batch; returns (N, dim) float32, L2-normalised rows."""

    def embed_prepared_tokens(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pooled (N, dim), tokens (N, T, dim_t)), each row L2-normalised."""
        raise NotImplementedError(f"{self.name} has no token features")

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Embed RGB PIL images; returns (N, dim) float32 in input order."""
        prepared = [self.prepare(img) for img in images]
        chunks = [call_by_shape(self.embed_prepared, prepared[i : i + batch_size])
                  for i in range(0, len(prepared), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "random_init": self.random_init,
                "device": self.device, "has_tokens": self.has_tokens}


def call_by_shape(fn: Callable[[np.ndarray], Any], arrays: Sequence[np.ndarray]) -> Any:
    """Call `fn` on `arrays` stacked by shape (aspect-preserving resizes give several
    shapes) and reassemble its output, or each output of a tuple, in input order."""
    groups: dict[tuple, list[int]] = {}
    for i, arr in enumerate(arrays):
        groups.setdefault(arr.shape, []).append(i)
    if len(groups) == 1:
        return fn(np.stack(arrays))
    parts = [(idx, fn(np.stack([arrays[i] for i in idx]))) for idx in groups.values()]
    if isinstance(parts[0][1], tuple):
        return tuple(_scatter([(idx, out[k]) for idx, out in parts], len(arrays))
                     for k in range(len(parts[0][1])))
    return _scatter(parts, len(arrays))


def _scatter(parts: list[tuple[list[int], np.ndarray]], n: int) -> np.ndarray:
    first = parts[0][1]
    out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
    for idx, arr in parts:
        out[idx] = arr
    return out


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def resize_short_side(image: Image.Image, size: int, resample: int) -> Image.Image:
    """Resize so the short side is `size` px, rounding like torchvision's Resize(int)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return image.resize((new_w, new_h), resample)


def to_uint8_hwc(image: Image.Image) -> np.ndarray:
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)
